"""Build a Relax module for a CPU target with TVM and link it with zig (NVIDIA GPU targets:
:mod:`kiln.codegen.cuda_build`).

Every call into TVM's build API lives here, so a TVM upgrade touches one module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kiln.codegen.runtime_bundle import tvm_runtime_libs
from kiln.codegen.toolchain import ZigSharedLinker
from kiln.errors import KilnError
from kiln.importers.base import ImportedModel
from kiln.options import CompileOptions
from kiln.targets import TargetSpec

#: Arches whose artifacts run on TVM's packaged runtime today.
TVM_RUNTIME_ARCHES = ("x86_64", "aarch64")


@dataclass(frozen=True)
class CompiledModel:
    library: Path          # model.so
    tvm_target: dict       # the TVM target dict used
    pipeline: str          # name of the Relax pipeline
    device: dict | None = None  # GPU targets: arch, CUDA version, driver, embedded device code


def check_buildable(spec: TargetSpec) -> None:
    """Refuse targets this release cannot build, with the reason from the catalog."""
    if spec.arch not in TVM_RUNTIME_ARCHES and spec.os == "linux" and spec.float_abi != "soft":
        raise KilnError("target_not_yet_supported",
                        f"target {spec.name!r} ({spec.arch}) has no packaged TVM runtime",
                        hint='compile with --compiler-options \'{"runtime": "standalone"}\' '
                             "(Kiln's standalone executor, no TVM on the device)")
    if spec.status == "unsupported" or spec.arch not in TVM_RUNTIME_ARCHES or spec.os != "linux":
        raise KilnError("target_not_yet_supported",
                        f"target {spec.name!r} ({spec.arch}, {spec.os}"
                        f"{', ' + spec.accelerator if spec.accelerator else ''}) cannot be built "
                        f"yet: {spec.reason}",
                        hint="`kiln targets` lists the verified targets; Linux x86_64 and "
                             "aarch64 CPUs work today")


def build_library(imported: ImportedModel, spec: TargetSpec, options: CompileOptions,
                  out_dir: Path, *, name: str = "model.so", dtype: str = "float32") -> CompiledModel:
    """Compile ``imported`` for ``spec`` into ``out_dir/name``, computing in ``dtype``."""
    check_buildable(spec)
    if spec.accelerator == "nvidia":
        from kiln.codegen.cuda_build import build_cuda_library

        return build_cuda_library(imported, spec, options, out_dir, name=name, dtype=dtype)
    import tvm

    target_dict = spec.tvm_target()
    try:
        target = tvm.target.Target(target_dict)
    except Exception as exc:
        raise KilnError("invalid_compiler_options", f"TVM rejects the target {target_dict}: "
                        f"{str(exc).strip().splitlines()[-1]}",
                        hint="check mcpu/mattr in --compiler-options") from None
    use_db = options.use_tuning_db and options.opt_level >= 2
    try:
        executable, pipeline_name = _compile(imported.mod, target, spec, options.opt_level,
                                             use_db=use_db, dtype=dtype,
                                             winograd=options.winograd)
    except KilnError:
        raise
    except Exception as exc:
        if options.opt_level < 2:
            raise _compile_failed(spec, exc) from None
        # Kiln's schedules are an optimization: a model they break still compiles, unscheduled
        try:
            executable, pipeline_name = _compile(imported.mod, target, spec, 1, dtype=dtype)
        except Exception as exc2:
            raise _compile_failed(spec, exc2) from None
        pipeline_name += f" (opt_level 2 failed: {_last_line(exc)[:200]})"
    library = export_library(executable, out_dir / name,
                             ZigSharedLinker(spec.arch, spec.triple, tvm_runtime_libs(spec.arch)))
    return CompiledModel(library=library, tvm_target=target_dict, pipeline=pipeline_name)


def export_library(module, library: Path, linker, what: str = "the model library") -> Path:
    """``module.export_library`` linked by ``linker`` (zig); its failure is toolchain_failed."""
    try:
        module.export_library(str(library), fcompile=linker)
    except KilnError:
        raise
    except Exception as exc:
        raise KilnError("toolchain_failed", f"exporting {what} failed: {_last_line(exc)}",
                        hint="run with KILN_DEBUG=1") from None
    return library


def _compile(mod, target, spec: TargetSpec, opt_level: int, *, use_db: bool = False,
             dtype: str = "float32", winograd: bool = True):
    import tvm

    from kiln.optimize.pipeline import PIPELINES, cpu_pipeline

    applied: list[str] = []
    tuned = None
    from kiln.optimize.tune_db import database_dir

    if use_db and database_dir(spec) is not None:
        from kiln.optimize.tuning import apply_database

        tuned = apply_database(spec, applied)
    pipeline = cpu_pipeline(target, opt_level=opt_level, simd=spec.simd, tuned=tuned,
                            dtype=dtype, winograd=winograd)
    with target:
        executable = tvm.compile(mod, target, relax_pipeline=pipeline)
    name = PIPELINES[min(opt_level, 2)] + ("+float16" if dtype == "float16" else "")
    if tuned is not None:
        name += f"+tuned ({len(applied)} kernels from the tuning database)"
    return executable, name


def _compile_failed(spec: TargetSpec, exc: Exception) -> KilnError:
    return KilnError("compile_failed", f"TVM failed to compile the model for {spec.name}: "
                     f"{_last_line(exc)}", hint="run with KILN_DEBUG=1 for the full trace",
                     details=str(exc))


def _last_line(exc: Exception) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:500]
