"""The Python API, the accuracy gate and the unverified path, with real compiles."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import kiln
from kiln.errors import ERROR_CODES, KilnError
from kiln.options import CompileOptions, Tolerance
from conftest import onnx_reference, requires_qemu, run_kiln


def test_load_run_multi_output_with_dlr_surface(model_dir, tmp_path):
    res = kiln.compile(model_dir / "mlp.onnx", platform="LINUX/X86_64", output=tmp_path / "m.tar.gz")
    assert res.verified and res.artifact.exists()
    model = kiln.load(res.artifact)
    x = np.load(model_dir / "mlp.x.npy")
    ref = onnx_reference(model_dir / "mlp.onnx", {"x": x})
    for got in (model.run(x), model.run({"x": x}), model.run(x.astype(np.float64))):
        assert len(got) == 2
        for g, r in zip(got, ref):
            np.testing.assert_allclose(g, r, rtol=0, atol=1e-5)
    assert model.get_input_names() == ["x"] and model.get_input_name(0) == "x"
    assert model.get_input_dtypes() == ["float32"] and model.get_input_shapes() == [(1, 64)]
    assert model.get_output_names() == ["logits", "probs"]
    assert model.get_output_dtypes() == ["float32", "float32"]
    assert model.get_output_shapes() == [(1, 8), (1, 8)]
    assert model.has_metadata() and model.get_version() == kiln.__version__
    with pytest.raises(KilnError) as err:
        model.run(np.zeros((2, 64), np.float32))
    assert err.value.code == "invalid_input" and "[1, 64]" in err.value.message
    with pytest.raises(KilnError) as err:
        model.run({"y": x})
    assert err.value.code == "invalid_input"


def _embedding_model(path):
    """int64 token ids -> Gather from a table -> ReduceMean: checks integer inputs."""
    table = np.random.default_rng(3).standard_normal((16, 8)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], axis=0),
             helper.make_node("ReduceMean", ["e"], ["y"], axes=[1], keepdims=0)]
    graph = helper.make_graph(nodes, "emb", [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
                              [numpy_helper.from_array(table, "table")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def test_integer_inputs(tmp_path):
    _embedding_model(tmp_path / "emb.onnx")
    res = kiln.compile(tmp_path / "emb.onnx", platform="LINUX/X86_64", output=tmp_path / "e.tar.gz")
    ids = np.array([[1, 2, 3, 4, 5], [15, 0, 7, 7, 9]], np.int64)
    got = kiln.load(res.artifact).run({"ids": ids})[0]
    np.testing.assert_allclose(got, onnx_reference(tmp_path / "emb.onnx", {"ids": ids})[0], atol=1e-6)
    assert res.manifest.signature.inputs[0].dtype == "int64"


def test_dynamic_batch_needs_and_takes_input_shape(model_dir, tmp_path):
    model = onnx.load(model_dir / "cnn.onnx")
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.save(model, tmp_path / "dyn.onnx")
    with pytest.raises(KilnError) as err:
        kiln.compile(tmp_path / "dyn.onnx", platform="LINUX/X86_64", output=tmp_path / "d.tar.gz")
    assert err.value.code == "invalid_input_shape" and '"x": [1, 3, 32, 32]' in err.value.hint
    res = run_kiln("compile", tmp_path / "dyn.onnx", "--platform", "LINUX/X86_64",
                   "--input-shape", '{"x": [2, 3, 32, 32]}', "-o", tmp_path / "d.tar.gz")
    assert res.returncode == 0, res.stderr
    m = kiln.load(tmp_path / "d.tar.gz")
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    assert m.get_output_shapes() == [(2, 10)]
    np.testing.assert_allclose(m.run(x)[0], onnx_reference(tmp_path / "dyn.onnx", {"x": x})[0],
                               atol=1e-5)
    assert m.manifest.compile_options["input_shapes"] == {"x": [2, 3, 32, 32]}
    assert m.manifest.compile_options["derived_input_shapes"] is False


def test_accuracy_gate_fails_the_compile_and_shows_numbers(model_dir, tmp_path):
    out = tmp_path / "strict.tar.gz"
    res = run_kiln("compile", model_dir / "transformer_block.onnx", "--platform", "LINUX/X86_64",
                   "--atol", "0", "--rtol", "0", "-o", out)
    assert res.returncode == ERROR_CODES["accuracy_regression"].exit_status, res.stderr
    assert res.stderr.count("error[accuracy_regression]") == 1
    assert "max abs" in res.stderr and "cosine" in res.stderr and "Traceback" not in res.stderr
    assert not out.exists()


def test_sample_inputs_file_is_used(model_dir, tmp_path):
    x = np.full((1, 64), 0.5, np.float32)
    np.savez(tmp_path / "s.npz", x=x)
    res = kiln.compile(model_dir / "mlp.onnx", platform="LINUX/X86_64",
                       output=tmp_path / "m.tar.gz", sample_inputs=tmp_path / "s.npz")
    assert res.manifest.verification["inputs"] == "--sample-inputs"


@requires_qemu
def test_unverified_when_emulator_is_missing(model_dir, tmp_path):
    env = {"QEMU_LD_PREFIX": str(tmp_path / "no-sysroot")}
    art = tmp_path / "a.tar.gz"
    res = run_kiln("compile", model_dir / "cnn.onnx", "--target", "rasp4b", "-o", art, env=env)
    assert res.returncode == 0, res.stderr
    assert "NOT VERIFIED" in res.stderr and "libc6-arm64-cross" in res.stderr
    with tarfile.open(art) as tar:
        ver = json.load(tar.extractfile("manifest.json"))["verification"]
    assert ver["verified"] is False and "libc6-arm64-cross" in ver["reason"]
    x = model_dir / "cnn.x.npy"
    res = run_kiln("run", art, "--input", f"x={x}", "--output", tmp_path / "y.npz", env=env)
    assert res.returncode == ERROR_CODES["emulator_missing"].exit_status
    assert "error[emulator_missing]" in res.stderr and "apt-get install qemu-user" in res.stderr


def test_runtime_imports_and_runs_without_the_compiler(model_dir, tmp_path):
    res = kiln.compile(model_dir / "cnn.onnx", platform="LINUX/X86_64", output=tmp_path / "c.tar.gz")
    code = (
        "import sys\n"
        "for m in ('tvm', 'tvm_ffi', 'onnx', 'onnxruntime'): sys.modules[m] = None\n"
        "import numpy as np, kiln.runtime\n"
        f"m = kiln.runtime.load({str(res.artifact)!r})\n"
        f"y = m.run(np.load({str(model_dir / 'cnn.x.npy')!r}))[0]\n"
        "np.save(sys.argv[1], y)\n"
        "assert not any(k.startswith('tvm') for k in sys.modules if sys.modules[k] is not None)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "y.npy")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    ref = onnx_reference(model_dir / "cnn.onnx", {"x": np.load(model_dir / "cnn.x.npy")})[0]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), ref, atol=1e-5)


def test_opt_level_zero_uses_the_plain_pipeline(model_dir, tmp_path):
    res = kiln.compile(model_dir / "cnn.onnx", platform="LINUX/X86_64", output=tmp_path / "o.tar.gz",
                       options=CompileOptions(opt_level=0, tolerance=Tolerance(atol=1e-5)))
    assert res.manifest.compile_options["pipeline"] == "default" and res.verified
