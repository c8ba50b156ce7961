"""PyTorch: .pt2 (torch.export, static and dynamic batch), nn.Module through the Python API and
TorchScript .pt, compiled for the host and for rasp4b (qemu), compared with torch eager."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from conftest import requires_qemu, run_kiln

torch = pytest.importorskip("torch", reason="torch is not installed (scripts/test.sh installs "
                            "the CPU wheel from /opt/wheels when it exists)")
from torch_models import MODELS, build  # noqa: E402

ATOL = 1e-4  # float32, absolute, against torch eager


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    """Every example model exported with a dynamic batch (Dim 1..16) and saved as .pt2."""
    root = tmp_path_factory.mktemp("pt2")
    out = {}
    for name in MODELS:
        model, x = build(name)
        batch = torch.export.Dim("batch", min=1, max=16)
        ep = torch.export.export(model, (x,), dynamic_shapes={"x": {0: batch}})
        torch.export.save(ep, root / f"{name}.pt2")
        out[name] = (root / f"{name}.pt2", model, tuple(x.shape))
    return out


def _eager(model, x: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        y = model(torch.from_numpy(x))
    return [t.numpy() for t in (y if isinstance(y, tuple) else (y,))]


def _manifest(artifact):
    with tarfile.open(artifact) as tar:
        return json.load(tar.extractfile("manifest.json"))


def _compile_run_compare(tmp_path, model_file, model, shape, target_args, mode, shape_arg=None):
    artifact, out, x_path = tmp_path / "a.tar.gz", tmp_path / "y.npz", tmp_path / "x.npy"
    shape_arg = shape_arg or json.dumps({"x": list(shape)})
    res = run_kiln("compile", model_file, *target_args, "--input-shape", shape_arg, "-o", artifact)
    assert res.returncode == 0, res.stderr
    assert "framework: pytorch (detected)" in res.stderr and "NOT VERIFIED" not in res.stderr
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    np.save(x_path, x)
    manifest = _manifest(artifact)
    res = run_kiln("run", artifact, "--input", f"{manifest['inputs'][0]['name']}={x_path}",
                   "--output", out)
    assert res.returncode == 0, res.stderr
    assert mode in res.stderr
    names = [o["name"] for o in manifest["outputs"]]
    with np.load(out) as y:
        for name, ref in zip(names, _eager(model, x)):
            assert y[name].shape == ref.shape
            np.testing.assert_allclose(y[name], ref, rtol=0, atol=ATOL)
    return manifest


@pytest.mark.parametrize("name", ["block"])  # cnn: TorchScript test; depthwise: rasp4b test
def test_pt2_dynamic_batch_bound_on_the_host(programs, tmp_path, name):
    path, model, shape = programs[name]
    batch3 = (3, *shape[1:])
    manifest = _compile_run_compare(tmp_path, path, model, batch3, ["--platform", "LINUX/X86_64"],
                                    "native")
    assert manifest["framework"] == "pytorch"
    assert manifest["inputs"][0]["shape"] == list(batch3)
    assert manifest["source"]["framework_version"] == torch.__version__
    ver = manifest["verification"]
    assert ver["passed"] and ver["reference"].startswith("torch ")
    assert all(r["max_abs_error"] <= ATOL for r in ver["outputs"])


@requires_qemu
def test_neo_package_of_a_pt2_for_rasp4b_under_qemu(programs, tmp_path):
    """Neo's layout: model.tar.gz with the model and code/, --framework PYTORCH, list shapes."""
    path, model, shape = programs["depthwise"]
    pkg = tmp_path / "model.tar.gz"
    (tmp_path / "inference.py").write_text("# Neo's serving script; ignored\n")
    with tarfile.open(pkg, "w:gz") as tar:
        tar.add(path, arcname="model.pt2")
        tar.add(tmp_path / "inference.py", arcname="code/inference.py")
    artifact, out, x_path = tmp_path / "a.tar.gz", tmp_path / "y.npz", tmp_path / "x.npy"
    res = run_kiln("compile", pkg, "--framework", "PYTORCH", "--framework-version", "2.13",
                   "--input-shape", json.dumps([list(shape)]), "--target", "rasp4b", "-o", artifact)
    assert res.returncode == 0, res.stderr
    assert "framework: pytorch, model.pt2 from model.tar.gz" in res.stderr
    x = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
    np.save(x_path, x)
    res = run_kiln("run", artifact, "--input", f"x={x_path}", "--output", out)
    assert res.returncode == 0 and "qemu-aarch64" in res.stderr, res.stderr
    with np.load(out) as y:
        np.testing.assert_allclose(y["output0"], _eager(model, x)[0], rtol=0, atol=ATOL)
    manifest = _manifest(artifact)
    assert manifest["source"]["member"] == "model.pt2"
    assert manifest["source"]["requested_framework_version"] == "2.13"
    assert manifest["target"]["name"] == "rasp4b" and manifest["verification"]["passed"]


def test_dynamic_batch_needs_an_input_shape(programs):
    res = run_kiln("compile", programs["mlp"][0], "--platform", "LINUX/X86_64")
    assert res.returncode == 13, res.stderr
    assert "error[invalid_input_shape]" in res.stderr and "x ['" in res.stderr
    assert '--input-shape \'{"x": [1, 64]}\'' in res.stderr


def test_batch_outside_the_exported_range_is_refused(programs):
    res = run_kiln("compile", programs["mlp"][0], "--platform", "LINUX/X86_64",
                   "--input-shape", '{"x": [32, 64]}')
    assert res.returncode == 14, res.stderr
    assert "error[shape_mismatch]" in res.stderr and "outside the range [1, 16]" in res.stderr


def test_nn_module_through_the_python_api(tmp_path):
    import kiln

    model, x = build("mlp", seed=1)
    x1 = x[:1].contiguous()
    result = kiln.compile(model, example_inputs=(x1,), platform="LINUX/X86_64",
                          output=tmp_path / "mlp.tar.gz")
    assert result.verified and result.manifest.verification["passed"]
    assert result.manifest.framework == "pytorch"
    got = kiln.load(result.artifact).run({"x": x1.numpy()})
    for g, r in zip(got, _eager(model, x1.numpy())):
        np.testing.assert_allclose(g, r, rtol=0, atol=ATOL)
    # the runtime side stays light: loading and running import neither torch nor TVM
    code = ("import sys, numpy as np, kiln; m = kiln.load(sys.argv[1]); "
            "m.run({'x': np.zeros((1, 64), np.float32)}); "
            "print(sorted(k for k in ('torch', 'tvm', 'tvm_ffi') if k in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code, str(result.artifact)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr


def test_torchscript_pt_with_neo_list_shapes(tmp_path):
    model, x = build("cnn", seed=2)
    x1 = x[:1].contiguous()
    path = tmp_path / "model.pt"
    torch.jit.trace(model, (x1,)).save(str(path))
    res = run_kiln("compile", path, "--platform", "LINUX/X86_64")
    assert res.returncode == 13 and "TorchScript" in res.stderr, res.stderr
    manifest = _compile_run_compare(tmp_path, path, model, tuple(x1.shape),
                                    ["--platform", "LINUX/X86_64"], "native",
                                    shape_arg=json.dumps([list(x1.shape)]))
    assert manifest["source"]["format"] == "torchscript"


def test_torch_save_pickles_are_never_loaded(tmp_path):
    model, _ = build("mlp")
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    res = run_kiln("compile", path, "--platform", "LINUX/X86_64", "--framework", "pytorch")
    assert res.returncode == 11, res.stderr
    assert "error[invalid_model]" in res.stderr and "never unpickles" in res.stderr
    assert "torch.export.save" in res.stderr
