"""A real artifact: it loads and agrees with onnxruntime, and any tampering is caught on load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest

import kiln
from kiln.artifact import MANIFEST_NAME, unpack
from kiln.artifact.compat import host_arch
from kiln.errors import ERROR_CODES, KilnError
from kiln.examples.models import cnn

KILN = Path(sys.executable).parent / "kiln"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("integrity")
    model = root / "cnn.onnx"
    onnx.save(cnn(seed=0), model)
    result = kiln.compile(model, platform="LINUX/X86_64", output=root / "a.tar.gz")
    assert result.artifact == root / "a.tar.gz" and result.artifact.is_file()
    assert result.verified, result.manifest.verification
    return model, result


@pytest.fixture
def folder(built, tmp_path) -> Path:
    """A fresh unpacked copy of the artifact for each test to tamper with."""
    return unpack(built[1].artifact, tmp_path / "art")


def _load_error(path: Path, code: str) -> KilnError:
    with pytest.raises(KilnError) as info:
        kiln.load(path)
    assert info.value.code == code, info.value
    assert info.value.hint
    return info.value


def _edit_manifest(folder: Path, edit) -> None:
    path = folder / MANIFEST_NAME
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=2))


# ---- (a) the intact artifact --------------------------------------------------------------------
def test_loads_and_agrees_with_onnxruntime(built):
    import onnxruntime as ort

    model_path, result = built
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    (expected,) = sess.run(None, {"x": x})

    model = kiln.load(result.artifact)
    try:
        assert model.get_input_names() == ["x"] and model.get_output_names() == ["y"]
        assert model.get_input_shapes() == [(1, 3, 32, 32)]
        (got,) = model.run(x)
        assert got.shape == expected.shape == (1, 10) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
        (again,) = model.run({"x": x})
        np.testing.assert_array_equal(again, got)
    finally:
        model.close()


def test_unpacked_folder_loads_too(built, folder):
    manifest = built[1].manifest
    assert set(manifest.files) == {p.relative_to(folder).as_posix()
                                   for p in folder.rglob("*") if p.is_file()} - {MANIFEST_NAME}
    model = kiln.load(folder)
    try:
        (y,) = model.run(np.zeros((1, 3, 32, 32), np.float32))
        np.testing.assert_allclose(y.sum(), 1.0, atol=1e-5)  # softmax output
    finally:
        model.close()


# ---- (b)-(d) integrity: files must match the manifest's digests ---------------------------------
def test_flipped_byte_in_model_so(folder):
    path = folder / "model.so"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    err = _load_error(folder, "artifact_corrupt")
    assert "model.so does not match its sha256" in err.message


def test_extra_file(folder):
    (folder / "payload.so").write_bytes(b"\x7fELF not really")
    err = _load_error(folder, "artifact_corrupt")
    assert "payload.so is not listed in the manifest" in err.message


def test_extra_file_in_a_subfolder(folder):
    (folder / "lib").mkdir()
    (folder / "lib" / "x.so").write_bytes(b"x")
    assert "lib/x.so" in _load_error(folder, "artifact_corrupt").message


def test_deleted_signature(folder):
    (folder / "signature.txt").unlink()
    err = _load_error(folder, "artifact_corrupt")
    assert "signature.txt is missing" in err.message


# ---- (e)-(g) the manifest -----------------------------------------------------------------------
def test_other_arch_is_a_target_mismatch(folder):
    other = "x86_64" if host_arch() == "aarch64" else "aarch64"
    _edit_manifest(folder, lambda d: d["target"]["spec"].__setitem__("arch", other))
    err = _load_error(folder, "target_mismatch")
    assert other in err.message
    assert "kiln run" in err.hint


def test_unknown_schema_version(folder):
    _edit_manifest(folder, lambda d: d.__setitem__("schema_version", 99))
    err = _load_error(folder, "invalid_artifact")
    assert "99" in err.message


def test_manifest_deleted(folder):
    (folder / MANIFEST_NAME).unlink()
    err = _load_error(folder, "invalid_artifact")
    assert MANIFEST_NAME in err.message


def test_manifest_not_json(folder):
    (folder / MANIFEST_NAME).write_text("{not json")
    assert "JSON" in _load_error(folder, "invalid_artifact").message


def test_missing_artifact(tmp_path):
    _load_error(tmp_path / "nope.tar.gz", "file_not_found")


def test_manifest_target_without_spec(folder):
    _edit_manifest(folder, lambda d: d.__setitem__("target", {}))
    _load_error(folder, "invalid_artifact")


# ---- kiln.load of a .tar.gz unpacks into a temporary folder: it must not be left behind ---------
@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def test_temp_folder_removed_on_close(built, private_tmp):
    model = kiln.load(built[1].artifact)
    assert len(list(private_tmp.iterdir())) == 1
    model.close()
    assert list(private_tmp.iterdir()) == []


def test_temp_folder_removed_when_load_fails(folder, tmp_path, private_tmp):
    (folder / "extra.bin").write_bytes(b"x")
    _load_error(_repack(folder, tmp_path / "bad.tar.gz"), "artifact_corrupt")
    assert list(private_tmp.iterdir()) == []


# ---- (h) a tampered archive through the CLI -----------------------------------------------------
def _repack(folder: Path, output: Path) -> Path:
    with tarfile.open(output, "w:gz") as tar:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            tar.add(path, arcname=path.relative_to(folder).as_posix())
    return output


def test_cli_run_refuses_a_tampered_archive(folder, tmp_path):
    assert KILN.is_file(), f"the kiln console script is not installed at {KILN}"
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 32, 32), np.float32))
    env = {k: v for k, v in os.environ.items() if k != "KILN_DEBUG"}

    def run(artifact: Path) -> subprocess.CompletedProcess:
        return subprocess.run([str(KILN), "run", str(artifact), "-i", "x=x.npy", "-o",
                               str(tmp_path / "o.npz")], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)

    intact = run(_repack(folder, tmp_path / "intact.tar.gz"))  # repacking alone changes nothing
    assert intact.returncode == 0, intact.stderr
    (tmp_path / "o.npz").unlink()

    lib = folder / "libkiln_runtime.so"
    data = bytearray(lib.read_bytes())
    data[-1] ^= 0xFF
    lib.write_bytes(bytes(data))
    res = run(_repack(folder, tmp_path / "tampered.tar.gz"))
    assert res.returncode == ERROR_CODES["artifact_corrupt"].exit_status, res.stderr
    err = res.stderr.strip()
    assert err.startswith("error[artifact_corrupt]: ") and err.count("error[") == 1, err
    assert "libkiln_runtime.so does not match its sha256" in err
    assert "Traceback" not in res.stdout + res.stderr
    assert not (tmp_path / "o.npz").exists()
