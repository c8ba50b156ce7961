"""Build a standalone deployment: the compiled kernels (``model.so``), the plan (``plan.txt``)
and the weights (``params.bin``). Every TVM call of the standalone route lives here.

Kiln's CPU pipeline runs as for the TVM runtime (layout, fusion, schedules, tuning database),
then only the memory-planning part of TVM's VM lowering (``StaticPlanBlockMemory``,
``LowerAllocTensor``): :func:`kiln.standalone.plan.make_plan` turns the result into the plan,
and the PrimFuncs alone are built with ``tvm.tirx.build`` and linked by zig against the
standalone runtime library (which provides the one tvm-ffi symbol they import).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from kiln.codegen.toolchain import ZigSharedLinker, zig_cc
from kiln.errors import KilnError
from kiln.importers.base import ImportedModel
from kiln.options import CompileOptions
from kiln.standalone.plan import Plan, make_plan
from kiln.standalone.runtime import check_standalone_buildable, standalone_runtime
from kiln.targets import TargetSpec


#: The standalone files of a build: kernels, plan, weights.
FILES = ("model.so", "plan.txt", "params.bin")
#: The portable x86-64-v2 twin's files (its plan and weights only where they differ).
FALLBACK_FILES = ("model.fallback.so", "plan.fallback.txt", "params.fallback.bin")


@dataclass(frozen=True)
class StandaloneModel:
    library: Path
    plan: Plan
    pipeline: str
    #: the plan and weights files this build uses (a twin whose plan equals the primary's
    #: shares ``plan.txt`` / ``params.bin``)
    plan_files: tuple[str, str] = FILES[1:]


class _StandaloneLinker(ZigSharedLinker):
    """Links the kernels against the standalone runtime instead of libtvm_ffi."""

    def __call__(self, output: str, objects: list[str], options=None, **_kwargs) -> None:
        zig_cc(self.arch, ["-shared", "-fPIC", "-O2", "-o", output, *objects,
                           *list(options or []), f"-L{self.lib_dir}", "-lkiln_runtime", "-lm", "-Wl,-s",
                           # references to the kernels' own symbols (the __TVMBackend*
                           # context pointers) stay inside this library even where same-named
                           # globals are loaded first; RTLD_DEEPBIND does the same where the
                           # libc has it (the runtime's _LINK comment says why it matters)
                           "-Wl,-Bsymbolic", "-Wl,-rpath,$ORIGIN"],
               what="linking the standalone kernels")


def codegen_spec(spec: TargetSpec) -> TargetSpec:
    """The spec the kernels are generated for: a generic 32-bit ARM target (Neo's
    LINUX/ARM_EABIHF) gets Cortex-A7 (ARMv7-A, VFPv4, NEON, hardware divide), as the tree
    route does; plain "generic" ARMv7-A would call libgcc's division helpers."""
    if spec.arch == "armv7" and spec.mcpu in (None, "generic"):
        return dataclasses.replace(spec, mcpu="cortex-a7")
    return spec


def _lower(mod, target, spec: TargetSpec, opt_level: int, *, use_db: bool, dtype: str,
           winograd: bool = True):
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    from kiln.optimize.pipeline import PIPELINES, _optimize_passes
    from kiln.optimize.tune_db import database_dir

    applied: list[str] = []
    tuned = None
    if use_db and database_dir(spec) is not None:
        from kiln.optimize.tuning import apply_database

        tuned = apply_database(spec, applied)
    passes = _optimize_passes(target, opt_level=max(opt_level, 1), simd=spec.simd, tuned=tuned,
                              dtype=dtype, winograd=winograd)
    seq = tvm.transform.Sequential([
        *passes, *cpu.dataflow_lower_passes(target), relax.transform.StaticPlanBlockMemory(),
        relax.transform.LowerAllocTensor(), relax.transform.AttachGlobalSymbol()])
    with target:
        lowered = seq(mod)
    name = PIPELINES[min(max(opt_level, 1), 2)] + ("+float16" if dtype == "float16" else "")
    if tuned is not None:
        name += f"+tuned ({len(applied)} kernels from the tuning database)"
    return lowered, name + " -> standalone plan"


def _lower_with_fallback(imported: ImportedModel, target, spec: TargetSpec,
                         options: CompileOptions, dtype: str):
    from kiln.codegen.tvm_build import _compile_failed, _last_line

    use_db = options.use_tuning_db and options.opt_level >= 2
    try:
        return _lower(imported.mod, target, spec, options.opt_level, use_db=use_db, dtype=dtype,
                      winograd=options.winograd)
    except KilnError:
        raise
    except Exception as exc:
        if options.opt_level < 2:
            raise _compile_failed(spec, exc) from None
        try:  # Kiln's schedules are an optimization: a model they break still compiles
            mod, name = _lower(imported.mod, target, spec, 1, use_db=False, dtype=dtype)
        except Exception as exc2:
            raise _compile_failed(spec, exc2) from None
        return mod, name + f" (opt_level 2 failed: {_last_line(exc)[:200]})"


def build_standalone(imported: ImportedModel, spec: TargetSpec, options: CompileOptions,
                     out_dir: Path, *, dtype: str = "float32", files: tuple = FILES,
                     primary: StandaloneModel | None = None) -> StandaloneModel:
    """Write the kernels, plan and weights (``files``: ``model.so``, ``plan.txt``,
    ``params.bin``) for ``spec`` into ``out_dir``. A twin (``primary`` given) writes its plan
    and weights only when they differ from the primary's, and else shares them."""
    check_standalone_buildable(spec)
    import tvm
    from tvm import tirx

    from kiln.codegen.tvm_build import _compile_failed, export_library

    target = tvm.target.Target(codegen_spec(spec).tvm_target())
    mod, pipeline = _lower_with_fallback(imported, target, spec, options, dtype)
    plan = make_plan(mod, len(imported.signature.outputs))
    kernels = tvm.IRModule({gv: f for gv, f in mod.functions.items()
                            if isinstance(f, tirx.PrimFunc)})
    try:
        with target:
            lib = tvm.tirx.build(kernels, target=target)
    except Exception as exc:
        raise _compile_failed(spec, exc) from None
    library = export_library(lib, out_dir / files[0],
                             _StandaloneLinker(spec.arch, spec.triple, standalone_runtime(spec)),
                             what="the standalone kernels")
    if primary is not None and plan.to_text() == primary.plan.to_text() \
            and plan.weights == primary.plan.weights:
        return StandaloneModel(library=library, plan=plan, pipeline=pipeline,
                               plan_files=primary.plan_files)
    (out_dir / files[1]).write_text(plan.to_text())
    (out_dir / files[2]).write_bytes(bytes(plan.weights))
    return StandaloneModel(library=library, plan=plan, pipeline=pipeline,
                           plan_files=(files[1], files[2]))
