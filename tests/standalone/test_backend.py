"""The standalone executor's backend (kiln_standalone_backend.c) inside a Python process that
has imported TVM, as every process that compiles and then loads a model has: the kernels must
still run on Kiln's own thread pool, and repeated inferences must not allocate workspaces."""

from __future__ import annotations

import ctypes

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import kiln
from conftest import onnx_reference


def _attention_scores(path):
    """q @ k^T / 4 then softmax over 37 tokens: the padded matmul needs workspaces."""
    rng = np.random.default_rng(2)
    k = numpy_helper.from_array(rng.standard_normal((1, 2, 16, 37)).astype(np.float32), "k")
    d = numpy_helper.from_array(np.array(4.0, np.float32), "d")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "k"], ["s"]), helper.make_node("Div", ["s", "d"], ["t"]),
         helper.make_node("Softmax", ["t"], ["y"], axis=-1)], "att",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 37, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 37, 37])], [k, d])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)


def _stats(model):
    launches, threads, mallocs = ctypes.c_long(), ctypes.c_int(), ctypes.c_long()
    model._lib.kiln_standalone_stats(ctypes.byref(launches), ctypes.byref(threads),
                                     ctypes.byref(mallocs))
    return launches.value, threads.value, mallocs.value


def test_kernels_use_kilns_pool_and_cached_workspaces_after_import_tvm(tmp_path):
    import tvm  # noqa: F401 - the point: libtvm's TVMBackend* symbols are now global

    path = tmp_path / "att.onnx"
    _attention_scores(path)
    res = kiln.compile(path, platform="LINUX/X86_64", output=tmp_path / "a.tar.gz")
    assert res.manifest.runtime["kind"] == "standalone"
    model = kiln.load(res.artifact)
    x = np.random.default_rng(3).standard_normal((1, 2, 37, 16)).astype(np.float32)
    before = _stats(model)[0]
    out = model.run(x)[0]
    np.testing.assert_allclose(out, onnx_reference(path, {"x": x})[0], rtol=1e-5, atol=1e-6)
    launches, threads, mallocs = _stats(model)
    # with the backend symbols bound to libtvm (before -Bsymbolic) no launch reached this pool
    # and TVM's pool (one thread on a 2-core machine by default) ran every kernel
    assert launches > before and threads >= 1, (before, launches, threads)
    for _ in range(5):
        model.run(x)
    # every workspace after the first inference comes from the cache (a fresh malloc was an
    # mmap whose pages faulted in on each run: 2,400 faults and 9 ms a run on a CNN)
    assert _stats(model)[2] == mallocs, (mallocs, _stats(model))
    assert mallocs > 0  # this model does use workspaces: the check above is not vacuous


def _matmul(path, rows=256, depth=512, cols=512):
    """One (rows x depth) @ (depth x cols) product: a parallel region of 1-2 ms on 2 cores."""
    w = numpy_helper.from_array(
        np.random.default_rng(4).standard_normal((depth, cols)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, depth])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, cols])], [w])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)


def test_long_regions_split_into_claimed_tasks_and_give_the_same_outputs(tmp_path):
    """A region that ran for 200 us or more is launched as 8 tasks per thread from its second
    run on (so that a descheduled worker holds up one small task, not half the kernel); short
    regions keep one task per thread. Every run's output matches ONNX Runtime and the
    workspaces still come from the cache."""
    path = tmp_path / "mm.onnx"
    _matmul(path)
    res = kiln.compile(path, platform="LINUX/X86_64", output=tmp_path / "m.tar.gz")
    model = kiln.load(res.artifact)
    split = model._lib.kiln_standalone_split_launches
    split.restype = ctypes.c_long
    x = np.random.default_rng(5).standard_normal((256, 512)).astype(np.float32)
    want = onnx_reference(path, {"x": x})[0]
    np.testing.assert_allclose(model.run(x)[0], want, rtol=1e-5, atol=1e-4)
    first, mallocs = split(), _stats(model)[2]
    for _ in range(4):
        np.testing.assert_allclose(model.run(x)[0], want, rtol=1e-5, atol=1e-4)
    if _stats(model)[1] > 1:  # one thread runs every region inline: nothing to split
        assert split() >= first + 3, (first, split())
    assert _stats(model)[2] == mallocs

    small = tmp_path / "att.onnx"
    _attention_scores(small)
    res = kiln.compile(small, platform="LINUX/X86_64", output=tmp_path / "a.tar.gz")
    tiny = kiln.load(res.artifact)
    split = tiny._lib.kiln_standalone_split_launches  # the shared library: counts both models
    split.restype = ctypes.c_long
    xs = np.random.default_rng(3).standard_normal((1, 2, 37, 16)).astype(np.float32)
    tiny.run(xs)
    before = split()
    for _ in range(5):
        tiny.run(xs)
    assert split() == before  # microsecond regions: one task per thread


_IDLE_CPU = """
import sys, time
import numpy as np
import kiln
model = kiln.load(sys.argv[1])
x = np.random.default_rng(5).standard_normal((256, 512)).astype(np.float32)
for _ in range(3):
    model.run(x)
t0 = time.process_time()
time.sleep(0.4)
print(round((time.process_time() - t0) * 1e3, 1))
"""


def _idle_cpu_ms(artifact, spin_ms):
    import os
    import subprocess
    import sys

    env = {**os.environ, "KILN_NUM_THREADS": "2"}
    env.pop("KILN_SPIN_MS", None)
    if spin_ms is not None:
        env["KILN_SPIN_MS"] = spin_ms
    out = subprocess.run([sys.executable, "-c", _IDLE_CPU, str(artifact)], env=env,
                         capture_output=True, text=True, timeout=120, check=True)
    return float(out.stdout.split()[-1])


def test_idle_workers_spin_for_the_block_time_then_sleep(tmp_path):
    """After a run the pool's worker spins for KILN_SPIN_MS (default 100 ms, as ONNX Runtime's
    and Intel OpenMP's pools do), then sleeps: the process's CPU time over the 400 ms after the
    last run is about the block time, and near zero with KILN_SPIN_MS=0 (0.2 ms)."""
    path = tmp_path / "mm.onnx"
    _matmul(path)
    res = kiln.compile(path, platform="LINUX/X86_64", output=tmp_path / "m.tar.gz")
    quiet = _idle_cpu_ms(res.artifact, "0")
    default = _idle_cpu_ms(res.artifact, None)
    longer = _idle_cpu_ms(res.artifact, "250")
    assert quiet < 25, quiet  # the worker slept: no spinning core after the run
    assert 50 < default < 250, default  # about 100 ms of one core, then asleep
    assert longer > default + 50, (default, longer)


def test_models_with_the_same_runtime_share_one_library_and_pool(tmp_path):
    """Two artifacts whose libkiln_runtime.so have the same bytes load one copy of it in a
    process (one thread pool, so one model's idle spinning never slows the other's runs);
    alternating runs of both still match ONNX Runtime."""
    mm, att = tmp_path / "mm.onnx", tmp_path / "att.onnx"
    _matmul(mm)
    _attention_scores(att)
    a = kiln.load(kiln.compile(mm, platform="LINUX/X86_64", output=tmp_path / "m.tar.gz").artifact)
    b = kiln.load(kiln.compile(att, platform="LINUX/X86_64",
                               output=tmp_path / "a.tar.gz").artifact)
    assert a._dir != b._dir and a._lib is b._lib
    xa = np.random.default_rng(5).standard_normal((256, 512)).astype(np.float32)
    xb = np.random.default_rng(3).standard_normal((1, 2, 37, 16)).astype(np.float32)
    want_a, want_b = onnx_reference(mm, {"x": xa})[0], onnx_reference(att, {"x": xb})[0]
    for _ in range(3):
        np.testing.assert_allclose(a.run(xa)[0], want_a, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(b.run(xb)[0], want_b, rtol=1e-5, atol=1e-6)
    a.close()  # closing one model leaves the other's (shared) library working
    np.testing.assert_allclose(b.run(xb)[0], want_b, rtol=1e-5, atol=1e-6)
