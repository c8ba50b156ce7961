"""Neo ``TargetPlatform`` (Os / Arch / Accelerator) -> a generic :class:`TargetSpec`.

The valid combinations are the ones Neo documents (SageMaker DG, "supported edge devices").
The specs built here are synthetic (``neo`` is False): named ``linux_arm64``, ``linux_arm64_nvidia``...
with generic CPUs, to be refined with CompilerOptions (``mcpu``, ``mattr``, ``gpu-code``).
"""

from __future__ import annotations

from kiln.errors import KilnError
from kiln.targets.spec import TargetSpec

OS_VALUES = ("LINUX", "ANDROID")
ARCH_VALUES = ("X86_64", "X86", "ARM64", "ARM_EABIHF", "ARM_EABI")
ACCELERATOR_VALUES = ("NVIDIA", "MALI", "INTEL_GRAPHICS", "NNA")
#: (Os, Accelerator or None) -> the Arch values Neo documents for it. NNA has none (undocumented).
VALID_COMBOS = {
    ("LINUX", None): ("X86_64", "ARM64", "ARM_EABIHF", "ARM_EABI"),
    ("LINUX", "NVIDIA"): ("X86_64", "ARM64"),
    ("LINUX", "INTEL_GRAPHICS"): ("X86_64",),
    ("LINUX", "MALI"): ("ARM64", "ARM_EABIHF", "ARM_EABI"),
    ("ANDROID", None): ("X86_64", "X86", "ARM64", "ARM_EABI"),
    ("ANDROID", "INTEL_GRAPHICS"): ("X86_64", "X86"),
    ("ANDROID", "MALI"): ("ARM64", "ARM_EABI"),
}
FORMS = "OS/ARCH or OS/ARCH/ACCELERATOR, e.g. LINUX/ARM64, LINUX/X86_64/NVIDIA, ANDROID/ARM_EABI"

# Arch -> (arch, mcpu, mattr, simd): generic CPUs every device of that Arch has.
_CPU = {
    # x86-64-v3 (AVX2 + FMA: Haswell and Zen onwards); artifacts also carry an x86-64-v2 build
    # that older CPUs load instead (see kiln.artifact.compat.needs_fallback)
    "X86_64": ("x86_64", "x86-64-v3", (), "avx2"),
    "X86": ("x86", None, (), None),
    "ARM64": ("aarch64", "generic", ("+neon",), "neon"),
    "ARM_EABIHF": ("armv7", "generic", ("+neon",), "neon"),
    "ARM_EABI": ("armv7", "generic", (), None),
}
_TRIPLE = {
    ("LINUX", "X86_64"): "x86_64-linux-gnu",
    ("LINUX", "ARM64"): "aarch64-linux-gnu",
    ("LINUX", "ARM_EABIHF"): "armv7a-linux-gnueabihf",
    ("LINUX", "ARM_EABI"): "armv7a-linux-gnueabi",
    ("ANDROID", "X86_64"): "x86_64-linux-android",
    ("ANDROID", "X86"): "i686-linux-android",
    ("ANDROID", "ARM64"): "aarch64-linux-android",
    ("ANDROID", "ARM_EABI"): "armv7a-linux-androideabi",
}
_ACCELERATOR = {"NVIDIA": "nvidia", "MALI": "mali", "INTEL_GRAPHICS": "intel_graphics"}
_ACCELERATOR_REASON = {
    "NVIDIA": "NVIDIA GPU code",
    "MALI": "the Mali GPU needs OpenCL code generation, which Kiln does not drive yet",
    "INTEL_GRAPHICS": "Intel graphics needs OpenCL code generation, which Kiln does not drive yet",
}


def resolve_platform(os: str, arch: str, accelerator: str | None = None) -> TargetSpec:
    """Return the generic spec for a Neo TargetPlatform; the enum values are case-insensitive.

    Raises ``KilnError("unknown_target")`` for a value outside Neo's enums and for a combination
    Neo does not document (e.g. LINUX/X86, or NVIDIA on ARM_EABIHF).
    """
    os_value = _enum("Os", os, OS_VALUES)
    arch_value = _enum("Arch", arch, ARCH_VALUES)
    accel = None if accelerator in (None, "") else _enum("Accelerator", accelerator, ACCELERATOR_VALUES)
    text = "/".join(part for part in (os_value, arch_value, accel) if part)
    if accel == "NNA":
        raise KilnError("unknown_target", f"platform {text}: Neo's NNA accelerator is undocumented, so Kiln does not support it",
                        hint=f"leave the accelerator out to compile for the CPU: {os_value}/{arch_value}")
    if arch_value not in VALID_COMBOS.get((os_value, accel), ()):
        raise KilnError("unknown_target", f"platform {text} is not a combination Neo supports",
                        hint="valid platforms: " + ", ".join(_valid_platforms()))
    return _build(os_value, arch_value, accel)


def parse_platform(text: str) -> TargetSpec:
    """Parse ``"OS/ARCH"`` or ``"OS/ARCH/ACCELERATOR"`` (case-insensitive) and resolve it."""
    parts = [part.strip() for part in str(text).split("/")]
    if len(parts) not in (2, 3) or not all(parts):
        raise KilnError("unknown_target", f"malformed platform {text!r}", hint=f"write {FORMS}")
    return resolve_platform(*parts)


def _enum(field: str, value: str, allowed: tuple[str, ...]) -> str:
    upper = str(value).strip().upper()
    if upper not in allowed:
        hint = f"valid {field} values: {', '.join(allowed)}"
        if field == "Os" and upper == "WINDOWS":
            hint += "; for Windows PCs use --target x86_win64 or x86_win32"
        raise KilnError("unknown_target", f"unknown platform {field} {value!r}", hint=hint)
    return upper


def _valid_platforms() -> list[str]:
    return [
        "/".join(part for part in (os_value, arch, accel) if part)
        for (os_value, accel), arches in VALID_COMBOS.items()
        for arch in arches
    ]


def _build(os_value: str, arch_value: str, accel: str | None) -> TargetSpec:
    arch, mcpu, mattr, simd = _CPU[arch_value]
    if os_value == "ANDROID" and arch_value == "ARM_EABI":
        mattr, simd = ("+neon",), "neon"  # NEON is mandatory for armeabi-v7a since NDK r21
    float_abi = {"ARM_EABIHF": "hard", "ARM_EABI": "soft"}.get(arch_value)
    parts = [os_value, arch_value] + ([accel] if accel else [])
    status, reason = _status(os_value, arch_value, accel)
    standalone = (os_value, arch_value, accel) == ("LINUX", "ARM_EABIHF", None)
    return TargetSpec(
        name="_".join(parts).lower(),
        description=f"Neo TargetPlatform {'/'.join(parts)}: generic {arch} CPU ({mcpu or 'LLVM default'})",
        os=os_value.lower(), arch=arch, triple=_TRIPLE[os_value, arch_value],
        mcpu=mcpu, mattr=mattr, float_abi=float_abi, mabi=None, num_cores=0,
        accelerator=_ACCELERATOR.get(accel), gpu_arch=None, simd=simd,
        default_options=(("runtime", '"standalone"'),) if standalone else (),
        status=status, reason=reason, neo=False, **_trees(os_value, arch_value, accel),
    )


def _trees(os_value: str, arch_value: str, accel: str | None) -> dict:
    """Tree ensembles (plain C, no TVM runtime) also build for 32-bit hard-float ARM Linux;
    never for a GPU."""
    if accel == "NVIDIA":
        return {"trees_status": "unsupported", "trees_reason": "tree ensembles compile to CPU C "
                "code, which Kiln does not put on NVIDIA GPUs; leave the accelerator out"}
    if (os_value, arch_value, accel) != ("LINUX", "ARM_EABIHF", None):
        return {}
    return {"trees_status": "verified", "trees_reason": "tree ensembles compile to plain C with "
            "no TVM runtime; Kiln builds them for Cortex-A7 (ARMv7-A, VFPv4, NEON) and verifies "
            "them under qemu-arm"}


def _status(os_value: str, arch_value: str, accel: str | None) -> tuple[str, str]:
    reasons = []
    if os_value == "ANDROID":
        reasons.append("Android needs the NDK and an Android TVM runtime, which Kiln does not package yet")
    elif arch_value == "ARM_EABI":
        reasons.append("no packaged TVM runtime for armv7, and Kiln's standalone executor builds "
                       "only hard-float armv7 (no soft-float glibc sysroot to verify it under qemu)")
    if accel:
        reasons.append(_ACCELERATOR_REASON[accel])
    if reasons == [_ACCELERATOR_REASON["NVIDIA"]]:
        return "codegen", (f"needs --compiler-options gpu-code (sm_75 or newer); Kiln builds a "
                           f"real cubin for it with a generic {_CPU[arch_value][0]} host side, "
                           "but cannot run it without an NVIDIA GPU")
    if reasons:
        return "unsupported", "; ".join(reasons)
    if arch_value == "X86_64":
        return "verified", ("generic x86-64-v3 (AVX2) CPU code with an x86-64-v2 twin for older "
                            "CPUs; Kiln compiles it and runs it natively on x86_64")
    if arch_value == "ARM_EABIHF":
        return "verified", ("generic ARMv7-A hard-float CPU code (Cortex-A7 baseline, NEON) run by "
                            "Kiln's standalone C executor (no packaged TVM runtime for armv7), "
                            "verified under qemu-arm")
    return "verified", "generic ARMv8-A CPU code; Kiln compiles it and runs it under qemu-aarch64"
