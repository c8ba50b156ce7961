"""The C API (kiln_runtime.h) as a device program uses it: built with the same zig toolchain
against the artifact's own libkiln_runtime.so, then run against onnxruntime."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np

import kiln
from conftest import onnx_reference

HERE = Path(__file__).parent


def test_c_program_against_artifact(model_dir, tmp_path):
    res = kiln.compile(model_dir / "mlp.onnx", platform="LINUX/X86_64", output=tmp_path / "m.tar.gz")
    folder = tmp_path / "m"
    with tarfile.open(res.artifact) as tar:
        tar.extractall(folder, filter="data")
    exe = tmp_path / "c_api_check"
    build = subprocess.run(
        [sys.executable, "-m", "ziglang", "cc", "-target", "x86_64-linux-gnu.2.27", "-std=gnu11",
         "-Wall", "-Werror", f"-I{folder}", str(HERE / "c_api_check.c"), "-o", str(exe),
         f"-L{folder}", "-lkiln_runtime", f"-Wl,-rpath,{folder}"], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    x = np.load(model_dir / "mlp.x.npy")
    x.tofile(tmp_path / "in.bin")
    run = subprocess.run([str(exe), str(folder), str(tmp_path / "in.bin"), str(tmp_path / "out.bin")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "abi 1 library model.so"
    assert lines[1] == "inputs 1 outputs 2"
    assert lines[2] == "input x float32 1 64"
    assert lines[3] == "output logits float32 1 8 nbytes 32"
    assert lines[4] == "output probs float32 1 8 nbytes 32"
    got = np.fromfile(tmp_path / "out.bin", dtype=np.float32).reshape(1, 8)
    np.testing.assert_allclose(got, onnx_reference(model_dir / "mlp.onnx", {"x": x})[0], atol=1e-5)
