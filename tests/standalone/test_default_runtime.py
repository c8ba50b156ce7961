"""The default runtime: Kiln's standalone executor on CPU Linux targets, the TVM runtime when
the standalone route cannot plan the model (recorded in the manifest), and the portable
x86-64-v2 twin of standalone artifacts for AVX2 / AVX-512 targets."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import kiln
from kiln.artifact.compat import missing_cpu_flags
from kiln.compiler import compile_model
from kiln.errors import ERROR_CODES, KilnError
from conftest import onnx_reference, requires_qemu, run_kiln
from test_standalone import small_cnn

ATOL = 1e-4
DEFAULT_WHY = "default: the standalone executor (static shapes, straight-line program)"


def range_model():
    """A data-dependent length: y = sum(range(0, floor(|sum(x)|))). Relax needs
    ``vm.builtin.tensor_to_shape`` (a packed call) for it: standalone_unsupported."""
    nodes = [h.make_node("ReduceSum", ["x"], ["s"], keepdims=0), h.make_node("Abs", ["s"], ["a"]),
             h.make_node("Floor", ["a"], ["f"]), h.make_node("Range", ["zero", "f", "one"], ["r"]),
             h.make_node("ReduceSum", ["r"], ["y"], keepdims=0)]
    graph = h.make_graph(nodes, "range", [h.make_tensor_value_info("x", T.FLOAT, [4])],
                         [h.make_tensor_value_info("y", T.FLOAT, [])],
                         [onnx.numpy_helper.from_array(np.float32(0), "zero"),
                          onnx.numpy_helper.from_array(np.float32(1), "one")])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _x(seed: int, shape) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _matches_onnxruntime(artifact, onnx_path, x) -> kiln.Model:
    model = kiln.load(artifact)
    got = model.run({"x": x})
    ref = onnx_reference(onnx_path, {"x": x})
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert g.shape == r.shape and np.abs(g - r).max() < ATOL
    return model


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("default-runtime")
    onnx.save(small_cnn(), root / "cnn.onnx")
    onnx.save(range_model(), root / "range.onnx")
    return {"root": root,
            "x86": compile_model(root / "cnn.onnx", platform="LINUX/X86_64",
                                 output=root / "cnn-x86.tar.gz"),
            "c5": compile_model(root / "cnn.onnx", target="ml_c5", output=root / "cnn-c5.tar.gz"),
            "range": compile_model(root / "range.onnx", target="ml_m4",
                                   output=root / "range.tar.gz")}


def test_default_x86_64_compile_is_standalone_and_matches_onnxruntime(built):
    result = built["x86"]
    runtime = result.manifest.runtime
    assert runtime["kind"] == "standalone" and runtime["chosen_because"] == DEFAULT_WHY
    assert "runtime" not in result.manifest.compiler_options   # the user gave none
    assert not any(n.startswith("libtvm") for n in result.manifest.files)
    assert result.verified and result.manifest.verification["mode"] == "native"
    _matches_onnxruntime(result.artifact, built["root"] / "cnn.onnx", _x(5, (1, 3, 16, 16)))


def test_standalone_twin_is_carried_for_avx2_and_avx512_targets(built):
    for key, flag in (("x86", "avx2"), ("c5", "avx512f")):
        manifest = built[key].manifest
        runtime = manifest.runtime
        assert flag in runtime["requires_cpu_flags"]
        assert runtime["fallback_library"] == "model.fallback.so"
        with tarfile.open(built[key].artifact) as tar:
            sig = tar.extractfile("signature.txt").read().decode()
            primary = tar.extractfile("model.so").read()
            portable = tar.extractfile("model.fallback.so").read()
        assert f"\nfallback model.fallback.so\n" in sig and f" {flag}" in sig
        assert primary != portable
        # the x86-64-v2 schedules block the layouts differently from AVX2 / AVX-512 ones, so
        # the small CNN's twin carries its own plan and weights, named in signature.txt
        assert runtime["fallback_plan"] == ["plan.fallback.txt", "params.fallback.bin"]
        assert "\nfallback_plan plan.fallback.txt params.fallback.bin\n" in sig
        assert {"plan.fallback.txt", "params.fallback.bin"} <= set(manifest.files)


def test_the_twin_is_loaded_where_the_cpu_lacks_the_flags_or_when_forced(built, monkeypatch):
    x = _x(6, (1, 3, 16, 16))
    onnx_path = built["root"] / "cnn.onnx"
    for key in ("x86", "c5"):
        spec = built[key].manifest.target["spec"]
        model = _matches_onnxruntime(built[key].artifact, onnx_path, x)
        expected = "model.fallback.so" if missing_cpu_flags(spec) else "model.so"
        assert model.library == expected, key
    monkeypatch.setenv("KILN_FORCE_FALLBACK", "1")
    for key in ("x86", "c5"):
        assert _matches_onnxruntime(built[key].artifact, onnx_path, x).library \
            == "model.fallback.so"
    # kiln run (the kiln_run process) honours it too
    np.save(built["root"] / "x.npy", x)
    res = run_kiln("run", built["x86"].artifact, "-i", f"x={built['root'] / 'x.npy'}",
                   "-o", built["root"] / "y.npz", env={"KILN_FORCE_FALLBACK": "1"})
    assert res.returncode == 0, res.stderr
    got = np.load(built["root"] / "y.npz")["y"]
    assert np.abs(got - onnx_reference(onnx_path, {"x": x})[0]).max() < ATOL


def test_unplannable_model_falls_back_to_the_tvm_runtime_and_says_why(built):
    result = built["range"]
    runtime = result.manifest.runtime
    assert runtime["kind"] == "tvm" and "libtvm_runtime.so" in result.manifest.files
    assert runtime["chosen_because"].startswith("standalone_unsupported: the standalone executor")
    assert "vm.builtin.tensor_to_shape" in runtime["chosen_because"]
    assert result.verified
    for x in (np.array([1.5, 2.0, 0.25, 0.5], np.float32), np.array([-9, 1, 0, 0], np.float32)):
        _matches_onnxruntime(result.artifact, built["root"] / "range.onnx", x)
    res = run_kiln("inspect", result.artifact)
    assert res.returncode == 0, res.stderr
    assert "runtime  tvm (standalone_unsupported: " in res.stdout.replace("\n", " ")
    foot = json.loads(run_kiln("inspect", "--json", result.artifact).stdout)["footprint"]
    assert foot["runtime_kind"] == "tvm" and foot["chosen_because"] == runtime["chosen_because"]


def test_explicit_standalone_still_refuses_what_it_cannot_plan(built, tmp_path):
    with pytest.raises(KilnError) as info:
        compile_model(built["root"] / "range.onnx", target="ml_m4",
                      compiler_options={"runtime": "standalone"}, output=tmp_path / "r.tar.gz")
    assert info.value.code == "standalone_unsupported" and "tensor_to_shape" in info.value.message
    assert ERROR_CODES["standalone_unsupported"].exit_status == 37
    assert not (tmp_path / "r.tar.gz").exists()


def test_explicit_tvm_gets_the_tvm_runtime(built, tmp_path):
    res = run_kiln("compile", built["root"] / "cnn.onnx", "--target", "ml_m4",
                   "--compiler-options", '{"runtime": "tvm"}', "-o", tmp_path / "t.tar.gz")
    assert res.returncode == 0, res.stderr
    manifest = kiln.load(tmp_path / "t.tar.gz").manifest
    assert manifest.runtime["kind"] == "tvm"
    assert manifest.runtime["chosen_because"] == "compiler option: runtime = tvm"
    assert manifest.runtime["fallback_library"] == "model.fallback.so"
    assert {"libtvm_runtime.so", "model.so"} <= set(manifest.files)
    assert "plan.txt" not in manifest.files
    _matches_onnxruntime(tmp_path / "t.tar.gz", built["root"] / "cnn.onnx", _x(7, (1, 3, 16, 16)))


@requires_qemu
def test_default_aarch64_compile_is_standalone_and_runs_under_qemu(built, tmp_path):
    result = compile_model(built["root"] / "cnn.onnx", target="rasp4b",
                           output=tmp_path / "a.tar.gz")
    runtime = result.manifest.runtime
    assert runtime["kind"] == "standalone" and runtime["chosen_because"] == DEFAULT_WHY
    assert runtime["fallback_library"] is None and runtime["requires_cpu_flags"] == []
    assert result.verified and result.manifest.verification["mode"].startswith("qemu-aarch64")
    assert all(r["max_abs_error"] < ATOL for r in result.manifest.verification["outputs"])
    x = _x(8, (1, 3, 16, 16))
    np.save(tmp_path / "x.npy", x)
    res = run_kiln("run", result.artifact, "-i", f"x={tmp_path / 'x.npy'}",
                   "-o", tmp_path / "y.npz")
    assert res.returncode == 0 and "qemu-aarch64" in res.stderr, res.stderr
    got = np.load(tmp_path / "y.npz")["y"]
    assert np.abs(got - onnx_reference(built["root"] / "cnn.onnx", {"x": x})[0]).max() < ATOL
    with tarfile.open(result.artifact) as tar:
        for name in ("model.so", "libkiln_runtime.so", "kiln_run"):
            head = tar.extractfile(name).read()[:20]
            assert int.from_bytes(head[18:20], "little") == 183, name   # EM_AARCH64
