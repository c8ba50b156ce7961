"""Kiln's standalone executor (no TVM runtime on the device): real compiles of seeded models,
run natively (x86_64) and under qemu-arm / qemu-riscv64, compared with ONNX Runtime."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

import kiln
from kiln.compiler import compile_model
from kiln.errors import ERROR_CODES, KilnError
from kiln.examples.models import _Builder, mlp
from conftest import onnx_reference, run_kiln

ATOL = 1e-4
STANDALONE = {"runtime": "standalone"}
#: x86_64 with AVX2 (what CI machines have); its x86-64-v2 twin: test_default_runtime.py
X86 = "ml_m4"
_QEMU = {"rasp3b": ("qemu-arm", "/usr/arm-linux-gnueabihf"),
         "sitara_am57x": ("qemu-arm", "/usr/arm-linux-gnueabihf"),
         "riscv64": ("qemu-riscv64", "/usr/riscv64-linux-gnu")}


def small_cnn(seed: int = 3):
    """conv-BN-ReLU-maxpool, depthwise 3x3 + ReLU6, pointwise 1x1, residual add, global
    average pool, Gemm, softmax. Input ``x`` [1, 3, 16, 16]."""
    b = _Builder(seed)
    t = b.op("Conv", ["x", b.weight((8, 3, 3, 3)), b.weight((8,), 0.1)], pads=[1, 1, 1, 1])
    t = b.op("MaxPool", [b.op("Relu", [b.bn(t, 8)])], kernel_shape=[2, 2], strides=[2, 2])
    d = b.op("Conv", [t, b.weight((8, 1, 3, 3)), b.weight((8,), 0.1)], pads=[1, 1, 1, 1],
             group=8)
    d = b.op("Clip", [d, b.const(np.float32(0)), b.const(np.float32(6))])
    t = b.op("Add", [t, b.op("Conv", [d, b.weight((8, 8, 1, 1)), b.weight((8,), 0.1)])])
    t = b.op("Flatten", [b.op("GlobalAveragePool", [t])])
    t = b.op("Gemm", [t, b.weight((10, 8)), b.weight((10,), 0.1)], transB=1)
    b.nodes.append(b.h.make_node("Softmax", [t], ["y"], axis=-1, name="softmax"))
    return b.model([b.io("x", [1, 3, 16, 16])], [b.io("y", [1, 10])])


def nonzero_model():
    """A data-dependent intermediate shape: sum(nonzero(x > 0)) over an [8] input."""
    from onnx import TensorProto as T
    from onnx import helper as h

    nodes = [h.make_node("Greater", ["x", "zero"], ["g"]), h.make_node("NonZero", ["g"], ["nz"]),
             h.make_node("Cast", ["nz"], ["f"], to=T.FLOAT),
             h.make_node("ReduceSum", ["f"], ["y"], keepdims=0)]
    graph = h.make_graph(nodes, "nz", [h.make_tensor_value_info("x", T.FLOAT, [8])],
                         [h.make_tensor_value_info("y", T.FLOAT, [])],
                         [onnx.numpy_helper.from_array(np.zeros((), np.float32), "zero")])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _needs_qemu(target: str) -> None:
    qemu, root = _QEMU[target]
    if shutil.which(qemu) is None or not Path(root, "lib").is_dir():
        pytest.skip(f"needs {qemu} and {root} (scripts/setup-system.sh installs them)")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("standalone")
    for name, model in (("mlp", mlp(seed=5)), ("cnn", small_cnn())):
        onnx.save(model, root / f"{name}.onnx")
    return root


@pytest.fixture(scope="module")
def x86(models) -> dict[str, object]:
    return {name: compile_model(models / f"{name}.onnx", target=X86,
                                     compiler_options=STANDALONE,
                                     output=models / f"{name}-x86.tar.gz")
            for name in ("mlp", "cnn")}


def _inputs(seed: int, shape) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_x86_standalone_artifact_is_verified_and_has_no_tvm_runtime(x86, name):
    result = x86[name]
    runtime = result.manifest.runtime
    assert result.verified and result.manifest.verification["mode"] == "native"
    assert all(r["max_abs_error"] < ATOL for r in result.manifest.verification["outputs"])
    assert runtime["kind"] == "standalone" and runtime["tvm_libraries"] == []
    assert not any(n.startswith("libtvm") for n in result.manifest.files)
    assert {"model.so", "plan.txt", "params.bin", "libkiln_runtime.so"} <= set(
        result.manifest.files)
    assert runtime["kernel_calls"] >= 3 and runtime["arena_bytes"] > 0
    assert result.manifest.files["params.bin"]["size"] == runtime["weights_bytes"] > 0


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_kiln_load_runs_the_standalone_artifact_like_onnxruntime(x86, models, name):
    model = kiln.load(x86[name].artifact)
    shape = model.get_input_shapes()[0]
    for seed in (11, 12):  # twice: the arena is reused between runs
        x = _inputs(seed, shape)
        got = model.run({"x": x})
        ref = onnx_reference(models / f"{name}.onnx", {"x": x})
        assert len(got) == len(ref)
        for g, r in zip(got, ref):
            assert g.shape == r.shape
            assert np.abs(g - r).max() < ATOL


def test_kiln_run_cli_on_the_standalone_artifact(x86, models, tmp_path):
    x = _inputs(21, (1, 3, 16, 16))
    np.save(tmp_path / "x.npy", x)
    res = run_kiln("run", x86["cnn"].artifact, "-i", f"x={tmp_path / 'x.npy'}",
                   "-o", tmp_path / "y.npz")
    assert res.returncode == 0, res.stderr
    got = np.load(tmp_path / "y.npz")["y"]
    assert np.abs(got - onnx_reference(models / "cnn.onnx", {"x": x})[0]).max() < ATOL


def test_inspect_reports_the_standalone_footprint(x86):
    res = run_kiln("inspect", "--json", x86["cnn"].artifact)
    assert res.returncode == 0, res.stderr
    foot = json.loads(res.stdout)["footprint"]
    assert foot["runtime_kind"] == "standalone"
    assert 0 < foot["runtime_bytes"] < 1_000_000
    assert foot["weights_bytes"] > 0 and foot["arena_bytes"] > 0 and foot["model_bytes"] > 0


@pytest.mark.parametrize("target", ["rasp3b", "sitara_am57x", "riscv64"])
def test_cross_targets_default_to_standalone_and_match_onnxruntime(models, tmp_path, target):
    _needs_qemu(target)
    result = compile_model(models / "cnn.onnx", target=target,
                                output=tmp_path / f"cnn-{target}.tar.gz")
    manifest = result.manifest
    assert manifest.runtime["kind"] == "standalone" and manifest.compiler_options["runtime"] \
        == "standalone"
    assert result.verified and manifest.verification["mode"].startswith(_QEMU[target][0])
    assert all(r["max_abs_error"] < ATOL for r in manifest.verification["outputs"])
    assert manifest.runtime["min_glibc"] <= "2.27"
    assert manifest.runtime["footprint_bytes"] < 1_000_000
    # a fresh input, through `kiln run` under qemu
    x = _inputs(31, (1, 3, 16, 16))
    np.save(tmp_path / "x.npy", x)
    res = run_kiln("run", result.artifact, "-i", f"x={tmp_path / 'x.npy'}",
                   "-o", tmp_path / "y.npz")
    assert res.returncode == 0, res.stderr
    got = np.load(tmp_path / "y.npz")["y"]
    assert np.abs(got - onnx_reference(models / "cnn.onnx", {"x": x})[0]).max() < ATOL


def test_data_dependent_shape_is_standalone_unsupported(tmp_path):
    onnx.save(nonzero_model(), tmp_path / "nz.onnx")
    with pytest.raises(KilnError) as info:
        compile_model(tmp_path / "nz.onnx", target=X86, compiler_options=STANDALONE,
                           output=tmp_path / "nz.tar.gz")
    assert info.value.code == "standalone_unsupported"
    assert "dynamic shape" in info.value.message and "nonzero" in info.value.message
    assert not (tmp_path / "nz.tar.gz").exists()
    res = run_kiln("compile", tmp_path / "nz.onnx", "--target", "rasp3b",
                   "-o", tmp_path / "nz.tar.gz")
    assert res.returncode == ERROR_CODES["standalone_unsupported"].exit_status == 37
    assert "error[standalone_unsupported]" in res.stderr + res.stdout


def test_runtime_option_is_checked():
    with pytest.raises(KilnError) as info:
        compile_model("nowhere.onnx", target=X86, compiler_options={"runtime": "dlr"})
    assert info.value.code == "invalid_compiler_options" and "standalone" in info.value.hint


def test_tvm_runtime_on_armv7_points_to_the_standalone_executor(models):
    with pytest.raises(KilnError) as info:
        compile_model(models / "mlp.onnx", target="rasp3b",
                           compiler_options={"runtime": "tvm"})
    assert info.value.code == "target_not_yet_supported"
    assert "no packaged TVM runtime" in info.value.message and "standalone" in info.value.hint


def test_soft_float_arm_stays_unsupported(models):
    with pytest.raises(KilnError) as info:
        compile_model(models / "mlp.onnx", platform="LINUX/ARM_EABI",
                           compiler_options=STANDALONE)
    assert info.value.code == "target_not_yet_supported" and "soft-float" in info.value.message


def test_c_program_against_the_standalone_runtime(x86, models, tmp_path):
    """tests/native/c_api_check.c, unchanged, linked against the standalone libkiln_runtime.so."""
    import subprocess
    import sys
    import tarfile

    folder = tmp_path / "m"
    with tarfile.open(x86["mlp"].artifact) as tar:
        tar.extractall(folder, filter="data")
    exe = tmp_path / "c_api_check"
    check = Path(__file__).resolve().parent.parent / "native" / "c_api_check.c"
    build = subprocess.run(
        [sys.executable, "-m", "ziglang", "cc", "-target", "x86_64-linux-gnu.2.27", "-std=gnu11",
         "-Wall", "-Werror", f"-I{folder}", str(check), "-o", str(exe), f"-L{folder}",
         "-lkiln_runtime", f"-Wl,-rpath,{folder}"], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    x = _inputs(41, (1, 64))
    x.tofile(tmp_path / "in.bin")
    run = subprocess.run([str(exe), str(folder), str(tmp_path / "in.bin"),
                          str(tmp_path / "out.bin")], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines()[:5] == [
        "abi 1 library model.so", "inputs 1 outputs 2", "input x float32 1 64",
        "output logits float32 1 8 nbytes 32", "output probs float32 1 8 nbytes 32"]
    got = np.fromfile(tmp_path / "out.bin", dtype=np.float32).reshape(1, 8)
    assert np.abs(got - onnx_reference(models / "mlp.onnx", {"x": x})[0]).max() < ATOL


def test_plan_keeps_every_constant_once_and_plans_one_arena(models, tmp_path):
    """The plan's weight tensors are exactly the distinct constants of the lowered program, each
    with its own bytes, and the arena is smaller than the activations it holds (reuse)."""
    import tvm
    from tvm import ir

    from kiln.importers import import_model
    from kiln.standalone.lower import _lower
    from kiln.standalone.plan import make_plan
    from kiln.targets import get_target

    imported = import_model(models / "cnn.onnx", input_shapes=None, framework=None,
                            workdir=tmp_path)
    spec = get_target(X86)
    mod, _ = _lower(imported.mod, tvm.target.Target(spec.tvm_target()), spec, 2, use_db=False,
                    dtype="float32")
    plan = make_plan(mod, 1)
    consts = {a: a.value.numpy() for b in mod["main"].body.blocks for b in b.bindings
              if hasattr(b.value, "args") for a in b.value.args
              if isinstance(a, ir.GenericConst) and hasattr(a.value, "numpy")}
    weights = [t for t in plan.tensors if t.kind == "w"]
    assert len(weights) == len(consts) > 5
    blob = bytes(plan.weights)
    stored = sorted(blob[t.where:t.where + int(np.prod(t.shape)) * 4] for t in weights)
    assert stored == sorted(np.ascontiguousarray(v, np.float32).tobytes() for v in consts.values())
    assert all(t.where % 64 == 0 for t in plan.tensors if t.kind in "aw")
    activations = sum(int(np.prod(t.shape)) * 4 for t in plan.tensors if t.kind == "a")
    assert 0 < plan.arena_bytes < activations
    text = plan.to_text()
    assert text.startswith("kiln-plan 1\n") and f"calls {len(plan.calls)}\n" in text
