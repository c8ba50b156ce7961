"""The issue's acceptance commands: compile for a device, run the artifact (natively or under
qemu-aarch64), and agree with onnxruntime within 1e-4 (absolute, float32)."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest

from conftest import onnx_reference, requires_qemu, run_kiln

ATOL = 1e-4
TARGETS = [
    pytest.param(["--target", "rasp4b"], "qemu-aarch64", marks=requires_qemu, id="rasp4b"),
    pytest.param(["--target", "ml_c6g"], "qemu-aarch64", marks=requires_qemu, id="ml_c6g"),
    pytest.param(["--target", "imx8qm"], "qemu-aarch64", marks=requires_qemu, id="imx8qm"),
    pytest.param(["--target", "ml_c5"], "native", id="ml_c5"),
    pytest.param(["--platform", "LINUX/X86_64"], "native", id="linux_x86_64"),
]
MODELS = ["cnn", "depthwise_separable", "transformer_block"]


def _manifest(artifact):
    with tarfile.open(artifact) as tar:
        return json.load(tar.extractfile("manifest.json"))


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("target_args,mode", TARGETS)
def test_compile_then_run_matches_onnxruntime(model_dir, tmp_path, model, target_args, mode):
    onnx_path, x_path = model_dir / f"{model}.onnx", model_dir / f"{model}.x.npy"
    artifact, out = tmp_path / "a.tar.gz", tmp_path / "y.npz"

    res = run_kiln("compile", onnx_path, *target_args, "-o", artifact)
    assert res.returncode == 0, res.stderr
    assert "verified" in res.stderr and "NOT VERIFIED" not in res.stderr
    res = run_kiln("run", artifact, "--input", f"x={x_path}", "--output", out)
    assert res.returncode == 0, res.stderr
    assert mode in res.stderr

    ref = onnx_reference(onnx_path, {"x": np.load(x_path)})
    manifest = _manifest(artifact)
    with np.load(out) as y:
        names = [o["name"] for o in manifest["outputs"]]
        assert sorted(y.files) == sorted(names)
        for name, r in zip(names, ref):
            assert y[name].shape == r.shape and y[name].dtype == r.dtype
            np.testing.assert_allclose(y[name], r, rtol=0, atol=ATOL)
    ver = manifest["verification"]
    assert ver["verified"] is True and ver["passed"] is True and mode in ver["mode"]
    for row in ver["outputs"]:
        assert 0 <= row["max_abs_error"] <= ATOL and row["cosine"] > 0.9999


@requires_qemu
def test_aarch64_artifact_holds_aarch64_code_and_old_glibc(model_dir, tmp_path):
    """The TVM-runtime bundle (libtvm_runtime from the wheel) for aarch64; the default
    standalone artifact is checked in tests/standalone/test_default_runtime.py."""
    artifact = tmp_path / "a.tar.gz"
    assert run_kiln("compile", model_dir / "cnn.onnx", "--target", "rasp4b", "--compiler-options",
                    '{"runtime": "tvm"}', "-o", artifact).returncode == 0
    folder = tmp_path / "a"
    with tarfile.open(artifact) as tar:
        tar.extractall(folder, filter="data")
    for name in ("model.so", "libkiln_runtime.so", "kiln_run", "libtvm_runtime.so",
                 "libtvm_ffi.so"):
        head = (folder / name).read_bytes()[:20]
        assert head[:4] == b"\x7fELF" and head[4] == 2, name           # 64-bit ELF
        assert int.from_bytes(head[18:20], "little") == 183, name      # EM_AARCH64
    manifest = json.loads((folder / "manifest.json").read_text())
    major, minor = map(int, manifest["runtime"]["min_glibc"].split("."))
    assert (major, minor) <= (2, 28)   # the wheels' own floor; Kiln's binaries need 2.27
    import re

    for name in ("model.so", "libkiln_runtime.so", "kiln_run"):
        found = [int(m) for m in re.findall(rb"GLIBC_2\.(\d+)", (folder / name).read_bytes())]
        assert max(found, default=0) <= 27, name


def test_ml_c5_artifact_has_avx512_code_and_portable_fallback(model_dir, tmp_path):
    artifact = tmp_path / "c5.tar.gz"
    assert run_kiln("compile", model_dir / "mlp.onnx", "--target", "ml_c5", "-o",
                    artifact).returncode == 0
    manifest = _manifest(artifact)
    assert manifest["target"]["tvm_target"]["mcpu"] == "skylake-avx512"
    assert "avx512f" in manifest["runtime"]["requires_cpu_flags"]
    assert manifest["runtime"]["fallback_library"] == "model.fallback.so"
    assert "model.fallback.so" in manifest["files"]
    with tarfile.open(artifact) as tar:
        primary = tar.extractfile("model.so").read()
        portable = tar.extractfile("model.fallback.so").read()
        sig = tar.extractfile("signature.txt").read().decode()
    assert "requires " in sig and "avx512f" in sig and "fallback model.fallback.so" in sig
    # EVEX-encoded (AVX-512) instructions start with 0x62; the portable twin differs.
    assert primary != portable


@requires_qemu
@pytest.mark.parametrize("mcpu", ["cortex-a53", "cortex-a57", "cortex-a76", "neoverse-n1",
                                  "neoverse-v1"])
def test_named_aarch64_cpus(model_dir, tmp_path, mcpu):
    artifact = tmp_path / "a.tar.gz"
    res = run_kiln("compile", model_dir / "mlp.onnx", "--platform", "LINUX/ARM64",
                   "--compiler-options", json.dumps({"mcpu": mcpu}), "-o", artifact)
    assert res.returncode == 0, res.stderr
    manifest = _manifest(artifact)
    assert manifest["target"]["tvm_target"]["mcpu"] == mcpu
    assert manifest["compiler_options"] == {"mcpu": mcpu}
    ver = manifest["verification"]
    assert ver["verified"] and ver["passed"] and "qemu-aarch64" in ver["mode"]


def test_named_x86_cpu_via_compiler_options(model_dir, tmp_path):
    artifact = tmp_path / "a.tar.gz"
    res = run_kiln("compile", model_dir / "mlp.onnx", "--platform", "LINUX/X86_64",
                   "--compiler-options", '{"mcpu": "skylake-avx512"}', "-o", artifact)
    assert res.returncode == 0, res.stderr
    manifest = _manifest(artifact)
    assert manifest["target"]["tvm_target"]["mcpu"] == "skylake-avx512"
    assert manifest["verification"]["passed"]
