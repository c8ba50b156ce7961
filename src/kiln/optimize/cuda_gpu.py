"""Is there a GPU here to tune an NVIDIA target on? (No TVM import: ``kiln tune`` asks first.)"""

from __future__ import annotations

import os

from kiln.errors import KilnError
from kiln.targets import TargetSpec

_HINT = ("tune on a machine with the target's GPU (nvidia-smi --query-gpu=name,compute_cap "
         "shows it; 8.6 = sm_86), then carry the database to the build host with `kiln tune-db "
         "export` / `kiln tune-db import`; compiles without one use DLight's schedules")


def _driver_gpus() -> list[dict]:
    """The GPUs the CUDA driver reports (Jetson boards have no nvidia-smi), through
    cuda-bindings; [] when it is not installed or the driver fails."""
    try:
        from cuda.bindings import driver as cu

        if cu.cuInit(0)[0] != cu.CUresult.CUDA_SUCCESS:
            return []
        gpus = []
        for i in range(cu.cuDeviceGetCount()[1]):
            dev = cu.cuDeviceGet(i)[1]
            attr = cu.CUdevice_attribute
            major = cu.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                                            dev)[1]
            minor = cu.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                                            dev)[1]
            name = cu.cuDeviceGetName(128, dev)[1].split(b"\0")[0].decode()
            gpus.append({"name": name, "arch": f"sm_{major}{minor}", "driver": "unknown"})
        return gpus
    except Exception:  # noqa: BLE001 - no cuda-bindings, no driver: no GPU known
        return []


def check_tuning_gpu(spec: TargetSpec, *, rpc: str | None = None) -> dict:
    """The GPU here that tunes ``spec`` (``{"name", "arch", "driver", "index"}``), else
    ``device_unavailable`` saying what is (or is not) here. Imports nothing heavy, writes
    nothing; when CUDA_VISIBLE_DEVICES is unset it is pointed at that GPU, so that the runner
    processes (which time on CUDA device 0) use it."""
    from kiln.artifact.gpu import driver_loadable, host_gpus

    if rpc is not None:
        raise KilnError("invalid_options", f"--rpc measures on a CPU device; {spec.name} is "
                        "tuned on the GPU of the machine that runs `kiln tune`", hint=_HINT)
    what = f"tuning for {spec.name} measures kernels on its GPU ({spec.gpu_arch})"
    if not driver_loadable():
        raise KilnError("device_unavailable", f"{what}, but this machine has no NVIDIA driver "
                        "(libcuda.so.1 cannot be loaded)", hint=_HINT)
    gpus = host_gpus() or _driver_gpus()
    if not gpus:
        raise KilnError("device_unavailable", f"{what}, but no NVIDIA GPU was found here",
                        hint=_HINT)
    found = [dict(g, index=i) for i, g in enumerate(gpus) if g["arch"] == spec.gpu_arch]
    if not found:
        have = ", ".join(f"{g['name']} ({g['arch']})" for g in gpus)
        raise KilnError("device_unavailable", f"{what}, but the GPU here is {have}: schedules "
                        f"measured there would not be the {spec.gpu_arch}'s", hint=_HINT +
                        "; or tune for this GPU: --platform LINUX/X86_64/NVIDIA "
                        f"--compiler-options '{{\"gpu-code\": \"{gpus[0]['arch']}\"}}'")
    if "CUDA_VISIBLE_DEVICES" not in os.environ:
        os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"      # nvidia-smi's order
        os.environ["CUDA_VISIBLE_DEVICES"] = str(found[0]["index"])
    return found[0]
