"""Run an unpacked artifact through its own runner: natively, or under qemu-user."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kiln.artifact.compat import host_arch, missing_cpu_flags, native_problem
from kiln.errors import KilnError
from kiln.signature import ModelSignature

_QEMU_PACKAGES = {"aarch64": "libc6-arm64-cross libstdc++6-arm64-cross",
                  "armv7": "libc6-armhf-cross libstdc++6-armhf-cross",
                  "riscv64": "libc6-riscv64-cross libstdc++6-riscv64-cross"}
_SYSROOTS = {"aarch64": "aarch64-linux-gnu", "armv7": "arm-linux-gnueabihf",
             "riscv64": "riscv64-linux-gnu"}
_QEMU = {"aarch64": "qemu-aarch64", "armv7": "qemu-arm", "riscv64": "qemu-riscv64",
         "x86_64": "qemu-x86_64"}


@dataclass(frozen=True)
class RunResult:
    outputs: list[np.ndarray]
    mode: str          # "native" or "qemu-aarch64 ..."
    run_ms: float | None


def install_hint(arch: str) -> str:
    return (f"install it with: sudo apt-get install qemu-user {_QEMU_PACKAGES.get(arch, '')}"
            .strip())


def emulator_for(spec: dict, *, fallback: bool = False) -> list[str] | None:
    """The command prefix that runs ``spec``'s binaries here; [] = natively; None = cannot."""
    if native_problem(spec, fallback=fallback) is None:
        return []
    arch = spec.get("arch", "")
    qemu = shutil.which(_QEMU.get(arch, f"qemu-{arch}"))
    sysroot = Path(os.environ.get("QEMU_LD_PREFIX") or f"/usr/{_SYSROOTS.get(arch, arch)}")
    if spec.get("os") != "linux" or qemu is None or not (sysroot / "lib").is_dir():
        return None
    return [qemu, "-L", str(sysroot)]


def has_fallback(folder: Path) -> bool:
    """Does the unpacked artifact carry a portable fallback library? (see signature.txt)"""
    sig = folder / "signature.txt"
    return sig.exists() and any(ln.startswith("fallback ") for ln in sig.read_text().splitlines())


def why_not_runnable(spec: dict) -> str:
    arch = spec.get("arch", "")
    problem = native_problem(spec) if arch == host_arch() else None
    if problem:
        return problem
    if spec.get("os") != "linux":
        return f"no emulator for {spec.get('os')} binaries"
    if shutil.which(_QEMU.get(arch, f"qemu-{arch}")) is None:
        return f"{_QEMU.get(arch, 'qemu-' + arch)} is not installed ({install_hint(arch)})"
    return f"the {arch} C library for qemu is missing ({install_hint(arch)})"


def run_folder(folder: Path, spec: dict, signature: ModelSignature,
               inputs: dict[str, np.ndarray], *, repeat: int = 1) -> RunResult:
    """Run ``folder/kiln_run`` on ``inputs`` and read its outputs back."""
    prefix = emulator_for(spec, fallback=has_fallback(folder))
    if prefix is None:
        raise KilnError("emulator_missing", f"cannot run a {spec.get('arch')} artifact here: "
                        f"{why_not_runnable(spec)}", hint=install_hint(spec.get("arch", "")))
    with tempfile.TemporaryDirectory(prefix="kiln-run-") as tmp:
        cmd = [*prefix, str(folder.resolve() / "kiln_run"), str(folder.resolve()),
               "--repeat", str(repeat), "--output-dir", tmp]
        for i, t in enumerate(signature.inputs):
            path = Path(tmp) / f"input_{i}.npy"
            np.save(path, np.ascontiguousarray(inputs[t.name], dtype=t.dtype))
            cmd += ["--input", f"{t.name}={path}"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        except subprocess.TimeoutExpired:
            raise KilnError("run_failed", "the artifact ran for more than 30 minutes",
                            hint="is the model very large for an emulator?") from None
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
            if "device_unavailable: " in last:  # a GPU artifact on a host without that GPU
                raise KilnError("device_unavailable", last.split("device_unavailable: ", 1)[1],
                                hint="run it on a machine with the NVIDIA GPU it was built for "
                                     "and driver >= 580", details=proc.stderr)
            raise KilnError("run_failed", f"the artifact failed to run "
                            f"({'natively' if not prefix else ' '.join(prefix[:1])}): {last[:500]}",
                            hint="a signal usually means the CPU lacks an instruction the "
                                 "target assumed; check --target / mcpu", details=proc.stderr)
        outputs = [np.load(Path(tmp) / f"output_{i}.npy", allow_pickle=False)
                   for i in range(len(signature.outputs))]
    match = re.search(r"run median ([0-9.]+) ms", proc.stderr)
    mode = "native" if not prefix else f"{Path(prefix[0]).name} -L {prefix[2]}"
    used = re.search(r"using (\S+)", proc.stderr)
    if used:
        mode += f", portable {used.group(1)} (this CPU lacks {', '.join(missing_cpu_flags(spec))})"
    return RunResult(outputs, mode, float(match.group(1)) if match else None)
