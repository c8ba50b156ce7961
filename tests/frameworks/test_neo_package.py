"""Neo's input packaging (model.tar.gz): each layout, each error class, with exact codes."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import onnx_reference, run_kiln
from kiln.errors import KilnError
from kiln.importers import import_model
from kiln.importers.neo_package import find_model


def _tar(path: Path, files: dict[str, bytes | None], *, links: dict[str, str] | None = None) -> Path:
    """A .tar.gz of ``files`` (None = a folder) and symlinks ``links`` (name -> target)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


@pytest.fixture(scope="module")
def onnx_bytes() -> bytes:
    from kiln.examples.models import mlp

    return mlp(seed=4).SerializeToString()


def _code(fn) -> str:
    with pytest.raises(KilnError) as exc:
        fn()
    return exc.value.code


def test_onnx_package_compiles_runs_and_records_the_package(tmp_path, onnx_bytes):
    pkg = _tar(tmp_path / "model.tar.gz", {"model.onnx": onnx_bytes, "code/": None,
                                          "code/inference.py": b"print('hi')\n",
                                          "requirements.txt": b"numpy\n"})
    artifact, out = tmp_path / "a.tar.gz", tmp_path / "y.npz"
    res = run_kiln("compile", pkg, "--framework", "ONNX", "--framework-version", "1.17",
                   "--platform", "LINUX/X86_64", "-o", artifact)
    assert res.returncode == 0, res.stderr
    assert "framework: onnx, model.onnx from model.tar.gz" in res.stderr
    with tarfile.open(artifact) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
    src = manifest["source"]
    assert src["package"] == "model.tar.gz" and src["member"] == "model.onnx"
    assert src["requested_framework_version"] == "1.17" and src["framework_detected"] is False
    x = np.random.default_rng(5).standard_normal((1, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert run_kiln("run", artifact, "--input", f"x={tmp_path / 'x.npy'}", "--output",
                    out).returncode == 0
    (tmp_path / "m.onnx").write_bytes(onnx_bytes)
    with np.load(out) as y:
        for name, ref in zip(("logits", "probs"), onnx_reference(tmp_path / "m.onnx", {"x": x})):
            np.testing.assert_allclose(y[name], ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize("files,framework,expected,member", [
    ({"model.onnx": "onnx"}, None, "onnx", "model.onnx"),
    ({"sub/model.tflite": "tflite", "labels.txt": b"cat\ndog\n"}, None, "tflite", "sub/model.tflite"),
    ({"model.h5": "h5"}, "KERAS", "keras", "model.h5"),
    ({"export/1/saved_model.pb": b"\x08\x01", "export/1/variables/variables.index": b"x"},
     "TENSORFLOW", "tensorflow", "export/1"),
    ({"model.pt2": "pt2", "code/inference.py": b"", "code/requirements.txt": b"torch\n"},
     "pytorch", "pytorch", "model.pt2"),
    ({"xgboost-model.json": b'{"learner": {"gradient_booster": {}}, "version": [2, 1, 0]}'},
     "XGBOOST", "xgboost", "xgboost-model.json"),
    ({"model.model": b"binf\x00\x00\x00\x00"}, None, "xgboost", "model.model"),
])
def test_layouts_find_the_one_model(tmp_path, files, framework, expected, member):
    from kiln.importers.detect import normalize_framework

    magic = {"onnx": b"\x08\x08\x12\x04kiln", "tflite": b"\x1c\x00\x00\x00TFL3" + bytes(24),
             "h5": b"\x89HDF\r\n\x1a\n" + bytes(24), "pt2": _zip({"m/archive_format": b"pt2"})}
    root = tmp_path / "x"
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(magic.get(data, data) if isinstance(data, str) else data)
    path, fw = find_model(root, normalize_framework(framework), "model.tar.gz")
    assert fw == expected and path.relative_to(root).as_posix() == member


def _zip(files: dict[str, bytes]) -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for k, v in files.items():
            z.writestr(k, v)
    return buf.getvalue()


def test_two_model_files_are_refused(tmp_path, onnx_bytes):
    pkg = _tar(tmp_path / "model.tar.gz", {"a.onnx": onnx_bytes, "b/b.onnx": onnx_bytes})
    res = run_kiln("compile", pkg, "--platform", "LINUX/X86_64")
    assert res.returncode == 16, res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("error[invalid_model_package]: InputConfiguration: exactly one")
    assert "found 2: a.onnx, b/b.onnx" in line


def test_no_model_file_is_refused(tmp_path):
    pkg = _tar(tmp_path / "model.tar.gz", {"README.txt": b"hello\n", "code/": None})
    assert _code(lambda: import_model(pkg, workdir=tmp_path)) == "invalid_model_package"


def test_model_of_another_framework_is_not_picked(tmp_path, onnx_bytes):
    pkg = _tar(tmp_path / "model.tar.gz", {"model.onnx": onnx_bytes})
    with pytest.raises(KilnError) as exc:
        import_model(pkg, framework="TFLITE", workdir=tmp_path)
    assert exc.value.code == "invalid_model_package" and "no TFLITE model" in exc.value.message


@pytest.mark.parametrize("files,links,why", [
    ({"../evil.onnx": b"x"}, None, "climbs out"),
    ({"/etc/evil.onnx": b"x"}, None, "absolute path"),
    ({}, {"model.onnx": "/etc/passwd"}, "is a link"),
])
def test_unsafe_archives_are_refused_and_nothing_is_written(tmp_path, files, links, why):
    pkg = _tar(tmp_path / "model.tar.gz", files, links=links)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(KilnError) as exc:
        import_model(pkg, workdir=work)
    assert exc.value.code == "unsafe_archive" and why in exc.value.message
    assert not any(p.is_file() for p in work.rglob("*"))


def test_archive_past_the_size_limit_is_refused(tmp_path, onnx_bytes, monkeypatch):
    import kiln.artifact.archive as archive

    monkeypatch.setattr(archive, "MAX_EXPANDED_BYTES", 1000)
    pkg = _tar(tmp_path / "model.tar.gz", {"model.onnx": onnx_bytes})
    with pytest.raises(KilnError) as exc:
        import_model(pkg, workdir=tmp_path)
    assert exc.value.code == "unsafe_archive" and "past the limit" in exc.value.message


def test_a_gzip_that_is_not_a_tar_is_refused(tmp_path):
    import gzip

    pkg = tmp_path / "model.tar.gz"
    pkg.write_bytes(gzip.compress(b"not a tar at all" * 10))
    with pytest.raises(KilnError) as exc:
        import_model(pkg, workdir=tmp_path)
    assert exc.value.code == "invalid_model_package" and "Unable to untar" in exc.value.message


@pytest.mark.parametrize("name,code,status", [("PYTOCH", "invalid_options", 23),
                                              ("MXNET", "unsupported_framework", 15),
                                              ("darknet", "unsupported_framework", 15)])
def test_framework_names(tmp_path, onnx_bytes, name, code, status):
    pkg = _tar(tmp_path / "model.tar.gz", {"model.onnx": onnx_bytes})
    res = run_kiln("compile", pkg, "--framework", name, "--platform", "LINUX/X86_64")
    assert res.returncode == status, res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith(f"error[{code}]")


def test_framework_names_any_case():
    from kiln.importers.detect import normalize_framework

    assert [normalize_framework(n) for n in ("PYTORCH", "pytorch", "TFLite", "KERAS")] == \
        ["pytorch", "pytorch", "tflite", "keras"]


def test_torchscript_package_without_input_shape(tmp_path):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    pt = tmp_path / "model.pt"
    torch.jit.trace(torch.nn.Linear(4, 2).eval(), (torch.zeros(1, 4),)).save(str(pt))
    pkg = _tar(tmp_path / "model.tar.gz", {"model.pt": pt.read_bytes()})
    assert _code(lambda: import_model(pkg, framework="PYTORCH", workdir=tmp_path)) == \
        "invalid_input_shape"
    imported = import_model(pkg, framework="PYTORCH", input_shapes={"input0": [3, 4]},
                            workdir=tmp_path)
    assert [t.shape for t in imported.signature.inputs] == [(3, 4)]
    assert [t.shape for t in imported.signature.outputs] == [(3, 2)]
    assert imported.source_info["member"] == "model.pt"


@pytest.mark.parametrize("framework", ["XGBOOST", None])
def test_tree_model_package_compiles_to_c_and_matches_xgboost(tmp_path, framework):
    """A Neo tarball holding an XGBoost model goes to the tree compiler (no TVM), with the
    framework named or detected, and the artifact agrees with xgboost's predict_proba."""
    xgb = pytest.importorskip("xgboost")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 6)).astype(np.float32)
    clf = xgb.XGBClassifier(n_estimators=8, max_depth=3).fit(x, rng.integers(0, 3, 64))
    clf.save_model(tmp_path / "xgboost-model.json")
    pkg = _tar(tmp_path / "model.tar.gz",
               {"xgboost-model.json": (tmp_path / "xgboost-model.json").read_bytes()})
    np.save(tmp_path / "x.npy", x[:9])
    artifact, out = tmp_path / "a.tar.gz", tmp_path / "y.npz"
    args = ["--framework", framework] if framework else []
    res = run_kiln("compile", pkg, *args, "--platform", "LINUX/X86_64", "-o", artifact)
    assert res.returncode == 0, res.stderr
    assert "against xgboost" in res.stderr
    res = run_kiln("run", artifact, "--input", f"data={tmp_path / 'x.npy'}", "--output", out)
    assert res.returncode == 0, res.stderr
    y = np.load(out)["output"]
    np.testing.assert_allclose(y, clf.predict_proba(x[:9]), atol=1e-5, rtol=0)
