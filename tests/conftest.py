"""Shared fixtures: seeded example models on disk and a runner for the real `kiln` command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

KILN = str(Path(sys.executable).parent / "kiln")


def run_kiln(*args: str, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run the installed `kiln` console script; returns the completed process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([KILN, *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def onnx_reference(model_path: Path, inputs: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return sess.run(None, inputs)


def run_on_host(model: onnx.ModelProto, feeds: dict, tmp_path: Path, name: str = "m"):
    """``model`` saved under ``tmp_path``, compiled with the defaults for ``LINUX/X86_64``, run
    on ``feeds``: (Kiln's outputs, the artifact's manifest, onnxruntime's outputs)."""
    import kiln

    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    res = kiln.compile(path, platform="LINUX/X86_64", output=tmp_path / f"{name}.tar.gz")
    m = kiln.load(res.artifact)
    try:
        return m.run(feeds), m.manifest, onnx_reference(path, feeds)
    finally:
        m.close()


def have_aarch64_emulation() -> bool:
    return shutil.which("qemu-aarch64") is not None and Path("/usr/aarch64-linux-gnu/lib").is_dir()


requires_qemu = pytest.mark.skipif(
    not have_aarch64_emulation() and not os.environ.get("CI"),
    reason="needs qemu-user and libc6-arm64-cross (apt); CI installs them")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """Every example model as <name>.onnx, with a seeded input <name>.x.npy."""
    from kiln.examples.models import MODELS

    root = tmp_path_factory.mktemp("models")
    for name, build in MODELS.items():
        model = build()
        onnx.save(model, root / f"{name}.onnx")
        dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        np.save(root / f"{name}.x.npy", np.random.default_rng(7).standard_normal(dims).astype(np.float32))
    return root
