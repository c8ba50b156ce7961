"""Can this machine run an artifact natively? (arch, OS and x86 CPU features)"""

from __future__ import annotations

import platform
from pathlib import Path

from kiln.errors import KilnError

_HOST_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64",
              "armv7l": "armv7", "riscv64": "riscv64"}

#: x86 LLVM cpu names -> /proc/cpuinfo flags the generated code may use.
_X86_FLAGS = {
    "x86-64-v2": {"sse4_2", "popcnt"}, "x86-64-v3": {"avx2", "fma", "bmi2"},
    "x86-64-v4": {"avx512f", "avx512bw", "avx512dq", "avx512vl"},
    "ivybridge": {"avx"}, "haswell": {"avx2", "fma"}, "broadwell": {"avx2", "fma"},
    "core-avx2": {"avx2", "fma"}, "skylake": {"avx2", "fma"},
    "skylake-avx512": {"avx512f", "avx512bw", "avx512dq", "avx512vl"},
    "cascadelake": {"avx512f", "avx512bw", "avx512dq", "avx512vl"},
    "icelake-server": {"avx512f", "avx512bw", "avx512vl", "avx512vnni"},
    "sapphirerapids": {"avx512f", "avx512bw", "amx_tile"},
    "znver2": {"avx2", "fma"}, "znver3": {"avx2", "fma"}, "znver4": {"avx512f", "avx512bw"},
    "goldmont": {"sse4_2"},
}


def host_arch() -> str:
    return _HOST_ARCH.get(platform.machine().lower(), platform.machine().lower())


def _host_cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


#: The x86_64 baseline of the portable fallback library built beside code for newer CPUs.
FALLBACK_MCPU = "x86-64-v2"


def required_cpu_flags(spec: dict) -> list[str]:
    """/proc/cpuinfo flags that code built for ``spec`` may use (x86_64 only)."""
    if spec.get("arch") != "x86_64":
        return []
    flags = set(_X86_FLAGS.get(spec.get("mcpu") or "", set()))
    flags |= {a[1:].lower().replace(".", "_") for a in spec.get("mattr") or () if a.startswith("+")}
    return sorted(flags)


def needs_fallback(spec: dict) -> bool:
    """True when the target's x86 code needs more than the portable baseline."""
    return bool(set(required_cpu_flags(spec)) - _X86_FLAGS[FALLBACK_MCPU])


def missing_cpu_flags(spec: dict) -> list[str]:
    return sorted(set(required_cpu_flags(spec)) - _host_cpu_flags())


def native_problem(spec: dict, *, fallback: bool = False) -> str | None:
    """Why this host cannot run an artifact for ``spec`` natively, or None if it can.

    With ``fallback`` (the artifact carries a portable library), missing CPU features are
    not a problem: the runtime loads the fallback instead.
    """
    if spec.get("os") != "linux" or platform.system() != "Linux":
        return f"built for {spec.get('os')}, this host runs {platform.system()}"
    if spec.get("arch") != host_arch():
        return f"built for {spec.get('arch')}, this host is {host_arch()}"
    missing = missing_cpu_flags(spec)
    if missing and not fallback:
        return f"built for {spec.get('mcpu')}, this CPU lacks {', '.join(missing)}"
    return None


def check_has_cpu_code(manifest) -> None:
    """Raise ``target_mismatch`` for a host-less NPU artifact (an Ethos-U55 beside a Cortex-M
    without an OS): it holds Vela's model for the user's firmware, nothing that runs here."""
    if manifest.runtime.get("kind") != "none":
        return
    spec = manifest.target["spec"]
    raise KilnError("target_mismatch", f"the artifact was built for {manifest.target['name']} "
                    f"({spec.get('description')}): an MCU NPU target with no CPU library, "
                    "nothing Kiln can run or load",
                    hint="build accelerator/model_vela.tflite into TensorFlow Lite Micro with the "
                         "Ethos-U core driver on the device (accelerator/README.md in the "
                         "artifact); `kiln inspect` shows Vela's estimate; compile for a Linux "
                         "target to run the model here")


def check_native(spec: dict, *, device: str = "cpu", accelerator: str | None = None,
                 fallback: bool = False) -> None:
    """Raise ``target_mismatch`` unless this host can run the artifact on ``device``."""
    problem = native_problem(spec, fallback=fallback)
    if problem is None and device == "gpu" and accelerator != "nvidia":
        problem = "the artifact has no GPU code"
    if problem is None and device == "cpu" and accelerator == "nvidia":
        problem = "the artifact needs an NVIDIA GPU"
    if problem:
        raise KilnError("target_mismatch", f"cannot load here: {problem}",
                        hint="run it on the device it was built for, or use `kiln run`, which "
                             "emulates other arches with qemu-user")
