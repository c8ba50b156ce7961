"""The standalone runtime bundle: ``libkiln_runtime.so`` built from
``native/kiln_standalone_runtime.c`` (same ``kiln_runtime.h`` API, no libtvm_runtime or
libtvm_ffi) and ``kiln_run``, built with zig for the target and cached by source digest.
Never imports tvm.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from kiln.artifact.compat import required_cpu_flags
from kiln.artifact.digests import glibc_needed
from kiln.cache import cache_dir
from kiln.codegen.toolchain import _ZIG_TRIPLES
from kiln.errors import KilnError
from kiln.targets import TargetSpec

NATIVE_DIR = Path(__file__).resolve().parent.parent / "native"
_SOURCES = ("kiln_standalone_runtime.c", "kiln_standalone_backend.c", "kiln_run.c",
            "kiln_runtime.h", "kiln_cpu_flags.h")
_CFLAGS = ["-O2", "-std=gnu11", "-Wall", "-fvisibility=hidden", "-ffunction-sections", "-Wl,-s",
           "-fdata-sections"]
# -Bsymbolic: the backend functions the loader hands to the kernels must be these, not the ones
# of a libtvm that ``import tvm`` loaded into the same process (whose one-thread pool then ran
# every kernel: half speed on 2 cores)
_LINK = ["-ldl", "-lpthread", "-Wl,--gc-sections", "-Wl,-s", "-Wl,-Bsymbolic"]
#: The artifact files of a standalone deployment that are not the model's own (kernels,
#: plan, weights): what ``footprint_bytes`` counts.
RUNTIME_FILES = ("libkiln_runtime.so", "kiln_run")


def check_standalone_buildable(spec: TargetSpec) -> None:
    """CPU Linux targets zig can build for; accelerators' CPUs only (their reason says why)."""
    if spec.os != "linux" or spec.arch not in _ZIG_TRIPLES or spec.accelerator == "nvidia" \
            or (spec.float_abi == "soft"):
        raise KilnError("target_not_yet_supported",
                        f"target {spec.name!r} ({spec.arch}, {spec.os}"
                        f"{', soft-float' if spec.float_abi == 'soft' else ''}) cannot take the "
                        f"standalone executor: {spec.reason}",
                        hint="the standalone executor builds for Linux x86_64, aarch64, armv7 "
                             "hard-float and riscv64 CPUs")


def cpu_flags(spec: TargetSpec) -> list[str]:
    from kiln.codegen.tree_build import cpu_flags as tree_flags

    return tree_flags(spec)


def _digest(spec: TargetSpec) -> str:
    from kiln.codegen.runtime_bundle import ffi_include_dir

    h = hashlib.sha256(" ".join(cpu_flags(spec) + _CFLAGS + _LINK).encode())
    for name in _SOURCES:
        h.update(name.encode() + (NATIVE_DIR / name).read_bytes())
    h.update((ffi_include_dir() / "tvm" / "ffi" / "c_api.h").read_bytes())
    return h.hexdigest()[:16]


def standalone_runtime(spec: TargetSpec) -> Path:
    """A folder with the standalone C API library and runner for ``spec`` (cached)."""
    from kiln.codegen.runtime_bundle import build_native, ffi_include_dir

    folder = cache_dir() / "native-standalone" / f"{spec.arch}-{_digest(spec)}"
    if (folder / "kiln_run").exists():
        return folder
    common = [*_CFLAGS, *cpu_flags(spec), f"-I{ffi_include_dir()}", f"-I{NATIVE_DIR}"]
    backend = str(NATIVE_DIR / "kiln_standalone_backend.c")
    return build_native(folder, spec.arch, common, "kiln_standalone_runtime.c", [backend, *_LINK],
                        what="building the standalone libkiln_runtime.so")


def write_standalone_bundle(staging: Path, spec: TargetSpec, signature, built,
                            twin=None) -> dict:
    """Copy the runtime into ``staging``, write ``signature.txt``; the manifest's ``runtime``.

    ``twin``: the portable x86-64-v2 build of an AVX2 / AVX-512 target, named on the same
    ``requires`` / ``fallback`` lines of ``signature.txt`` as the TVM-runtime bundle's (the C
    runtime loads it on a CPU that lacks a required flag), plus ``fallback_plan`` when its plan
    differs from the primary's."""
    folder = standalone_runtime(spec)
    for name in (*RUNTIME_FILES, "kiln_runtime.h"):
        shutil.copy2(folder / name, staging / name)
    flags = required_cpu_flags(spec.to_dict())
    fallback = twin.library.name if twin is not None else None
    own_plan = twin is not None and twin.plan_files != built.plan_files
    text = signature.to_text()
    text += f"requires {' '.join(flags)}\n" if flags else ""
    text += f"fallback {fallback}\n" if fallback else ""
    text += f"fallback_plan {' '.join(twin.plan_files)}\n" if own_plan else ""
    (staging / "signature.txt").write_text(text)
    binaries = [staging / n for n in ("model.so", *RUNTIME_FILES)]
    plan = built.plan
    return {"kind": "standalone", "abi_version": 1, "library": "libkiln_runtime.so",
            "runner": "kiln_run", "header": "kiln_runtime.h", "model_library": "model.so",
            "plan": "plan.txt", "params": "params.bin", "fallback_library": fallback,
            "fallback_plan": list(twin.plan_files) if own_plan else None,
            "requires_cpu_flags": flags, "tvm_libraries": [],
            "cflags": [*_CFLAGS, *cpu_flags(spec)], "min_glibc": glibc_needed(binaries),
            "footprint_bytes": sum((staging / n).stat().st_size for n in RUNTIME_FILES),
            "kernels_bytes": (staging / "model.so").stat().st_size,
            "weights_bytes": len(plan.weights), "arena_bytes": plan.arena_bytes,
            "kernel_calls": len(plan.calls)}
