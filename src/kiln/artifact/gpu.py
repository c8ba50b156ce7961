"""Can this machine run a GPU artifact? (NVIDIA driver, GPUs and their compute capability)

Pure stdlib: ``nvidia-smi`` and ``libcuda.so.1`` are probed, nothing CUDA is imported.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess


def host_gpus() -> list[dict]:
    """The NVIDIA GPUs here: ``[{"name", "arch": "sm_86", "driver"}]``; [] when none or no driver."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        proc = subprocess.run([smi, "--query-gpu=name,compute_cap,driver_version",
                               "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    gpus = []
    for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[1].replace(".", "").isdigit():
            gpus.append({"name": parts[0], "arch": "sm_" + parts[1].replace(".", ""),
                         "driver": parts[2]})
    return gpus


def driver_loadable() -> bool:
    """Is the NVIDIA driver here? (Kiln's build-time stub libcuda, see kiln.codegen.cuda_env,
    has no ``cuInit``, so it does not count even when this process loaded it.)"""
    try:
        return hasattr(ctypes.CDLL("libcuda.so.1"), "cuInit")
    except OSError:
        return False


def _major_minor(arch: str) -> tuple[int, int]:
    digits = arch.removeprefix("sm_").rstrip("af")
    return int(digits[:-1] or 0), int(digits[-1:] or 0)


def cubin_runs_on(built: str, gpu: str) -> bool:
    """CUDA's binary compatibility: a cubin for sm_XY runs on sm_XZ with Z >= Y (same major)."""
    (bmaj, bmin), (gmaj, gmin) = _major_minor(built), _major_minor(gpu)
    return bmaj == gmaj and gmin >= bmin


def gpu_problem(gpu_arch: str | None, device_id: int = 0) -> str | None:
    """Why an artifact for ``gpu_arch`` cannot run on GPU ``device_id`` here, or None if it can."""
    if not driver_loadable():
        return "no NVIDIA driver on this machine (libcuda.so.1 cannot be loaded)"
    if shutil.which("nvidia-smi") is None:
        return None  # Jetson boards have a driver but no nvidia-smi: the C runtime asks CUDA
    gpus = host_gpus()
    if not gpus:
        return "no NVIDIA GPU found (nvidia-smi lists none)"
    if device_id >= len(gpus):
        return f"GPU {device_id} does not exist ({len(gpus)} GPU(s) here)"
    have = gpus[device_id]["arch"]
    if gpu_arch and not cubin_runs_on(gpu_arch, have):
        return (f"GPU {device_id} here is a {gpus[device_id]['name']} ({have}), the artifact "
                f"holds code for {gpu_arch}, which runs on {gpu_arch[:-1]}x GPUs from {gpu_arch} up")
    return None
