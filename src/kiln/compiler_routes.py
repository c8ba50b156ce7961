"""The runtime route of a CPU or GPU compile: Kiln's standalone executor (the default on CPU
Linux targets), the TVM runtime (GPUs, ``opt_level`` 0, models the standalone plan refuses), and
the build of the kernels plus the runtime bundle by that route, with the x86-64-v2 twin of the
kernels on AVX2 / AVX-512 targets."""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path

from kiln.artifact.compat import FALLBACK_MCPU, needs_fallback, required_cpu_flags
from kiln.artifact.digests import glibc_needed
from kiln.errors import KilnError
from kiln.targets import TargetSpec

FALLBACK_LIBRARY = "model.fallback.so"


@dataclass(frozen=True)
class Route:
    """The runtime an artifact gets: "standalone", "tvm", or "auto" (Kiln's standalone
    executor, the TVM runtime when the standalone route cannot plan the model); ``why`` goes
    into the manifest as ``runtime.chosen_because``."""

    kind: str
    why: str


def runtime_route(spec: TargetSpec, copts, compiler_options, opt_level: int) -> Route:
    """The runtime route from the ``runtime`` compiler option (the user's, else the device's
    ``default_options``); without one, standalone wherever it builds (CPU Linux targets), else
    the TVM runtime (GPUs, and ``opt_level`` 0: TVM's own pipeline, which the standalone
    route does not run). Checks the target can take the route."""
    from kiln.standalone.runtime import check_standalone_buildable
    from kiln.targets import parse_compiler_options

    given = parse_compiler_options(compiler_options).runtime
    source = "compiler option" if given else "the target's default_options"
    if copts.runtime == "standalone":
        check_standalone_buildable(spec)
        return Route("standalone", f"{source}: runtime = standalone")
    if copts.runtime is None and opt_level == 0:
        _check_tvm_route(spec, copts)
        return Route("tvm", "default: opt_level 0 asks for TVM's own pipeline, which only "
                             "the TVM runtime takes")
    if copts.runtime is None:
        try:
            check_standalone_buildable(spec)
        except KilnError:  # GPUs, Android, ...: the TVM route's own checks say what works
            pass
        else:
            return Route("auto", "default: the standalone executor (static shapes, "
                                  "straight-line program)")
    _check_tvm_route(spec, copts)
    return Route("tvm", f"{source}: runtime = tvm" if copts.runtime else
                  f"default: {spec.name} cannot take the standalone executor")


def _check_tvm_route(spec: TargetSpec, copts) -> None:
    from kiln.codegen.tvm_build import check_buildable

    check_buildable(spec)
    if spec.accelerator == "nvidia":
        from kiln.codegen.cuda_build import check_cuda_options

        check_cuda_options(spec, copts.cuda_ver)


def build_by_route(route: Route, imported, spec: TargetSpec, options, staging: Path, dtype: str,
           step) -> tuple[object, dict]:
    """Build the kernels and the runtime bundle into ``staging`` by ``route``; returns the
    build and the manifest's ``runtime``. "auto" falls back to the TVM runtime when the
    standalone executor cannot plan the model (``standalone_unsupported``: data-dependent
    shapes, control flow, packed calls), where the target has a TVM runtime."""
    why = route.why
    if route.kind != "tvm":
        try:
            compiled, runtime = _build_standalone(imported, spec, options, staging, dtype, step)
            return compiled, {**runtime, "chosen_because": why}
        except KilnError as exc:
            if route.kind == "standalone" or exc.code != "standalone_unsupported":
                raise
            from kiln.codegen.tvm_build import check_buildable

            try:
                check_buildable(spec)
            except KilnError:
                raise exc from None
            why = f"standalone_unsupported: {exc.message}"
            for leftover in staging.iterdir():
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    from kiln.codegen.tvm_build import build_library

    compiled = build_library(imported, spec, options, staging, dtype=dtype)
    if needs_fallback(spec.to_dict()) and compiled.device is None:
        # Code for a newer x86 CPU (AVX2, AVX-512) gets a portable twin, so the artifact
        # still runs (slower) on an older CPU instead of dying on an illegal instruction.
        build_library(imported, _portable(spec), options, staging, name=FALLBACK_LIBRARY,
                      dtype=dtype)
    step("bundle")
    runtime = _write_bundle(staging, spec, imported.signature, compiled.device)
    return compiled, {**runtime, "chosen_because": why}


def _build_standalone(imported, spec: TargetSpec, options, staging: Path, dtype: str, step):
    """Kiln's own executor (no TVM runtime on the device), with the portable twin of the
    kernels on AVX2 / AVX-512 targets, as the TVM route has."""
    from kiln.standalone.lower import FALLBACK_FILES, build_standalone
    from kiln.standalone.runtime import write_standalone_bundle

    compiled = build_standalone(imported, spec, options, staging, dtype=dtype)
    twin = None
    if needs_fallback(spec.to_dict()):
        twin = build_standalone(imported, _portable(spec), options, staging, dtype=dtype,
                                files=FALLBACK_FILES, primary=compiled)
    step("bundle")
    return compiled, write_standalone_bundle(staging, spec, imported.signature, compiled, twin)


def _portable(spec: TargetSpec) -> TargetSpec:
    """The x86-64-v2 twin of an AVX2 / AVX-512 x86_64 target (kiln.artifact.compat)."""
    return dataclasses.replace(spec, mcpu=FALLBACK_MCPU, mattr=(), simd="sse4.2")


def _write_bundle(staging: Path, spec: TargetSpec, signature, device: dict | None = None) -> dict:
    from kiln.codegen.runtime_bundle import TVM_LIBS, bundle_files

    files = bundle_files(spec.arch)
    if device is not None:
        from kiln.codegen.cuda_env import cuda_bundle_files

        files.update(cuda_bundle_files(spec.arch))
    for name, path in files.items():
        shutil.copy2(path, staging / name)
    # GPU artifacts: the host side is built for a baseline CPU (kiln.codegen.cuda_build)
    flags = required_cpu_flags(spec.to_dict()) if device is None else []
    fallback = FALLBACK_LIBRARY if (staging / FALLBACK_LIBRARY).exists() else None
    text = signature.to_text()
    text += f"requires {' '.join(flags)}\n" if flags else ""
    text += f"fallback {fallback}\n" if fallback else ""
    text += f"device cuda {device['gpu_arch']}\n" if device else ""
    (staging / "signature.txt").write_text(text)
    binaries = [p for p in staging.iterdir() if p.suffix == ".so" or p.name == "kiln_run"]
    return {"kind": "tvm", "abi_version": 1, "library": "libkiln_runtime.so",
            "runner": "kiln_run", "header": "kiln_runtime.h", "model_library": "model.so",
            "fallback_library": fallback, "requires_cpu_flags": flags,
            "tvm_libraries": list(TVM_LIBS), "min_glibc": glibc_needed(binaries),
            "footprint_bytes": sum((staging / n).stat().st_size for n in (
                "libkiln_runtime.so", "kiln_run", *TVM_LIBS)),
            **({"device": device, "cuda_libraries": sorted(set(files) - set(bundle_files(
                spec.arch)))} if device else {})}
