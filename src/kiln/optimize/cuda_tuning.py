"""MetaSchedule tuning on the NVIDIA GPU of this machine, into the target's tuning database.

The same scheme as CPU tuning (:mod:`kiln.optimize.tuning`): the kernels are the ones the CUDA
build schedules (:func:`kiln.optimize.cuda_pipeline.pre_schedule_passes`); each first gets
DLight's schedule (what an untuned compile uses) measured on the GPU and committed as a record,
then MetaSchedule's evolutionary search runs on the hot kernels with the CUDA target's rules.
Candidates are compiled with NVRTC and linked by zig in builder processes and timed on the GPU
in runner processes (both load the CUDA runtime through :func:`enable_cuda_codegen`). The
records go to the per-target database (:func:`kiln.optimize.tune_db.database_dir`), which every
later compile for the target applies before DLight. The GPU must be the target's arch: a
schedule measured on another GPU says nothing about the target's.
"""

from __future__ import annotations

import os
import time
from functools import partial

import tvm
from tvm.s_tir import meta_schedule as ms

from kiln.errors import KilnError
from kiln.optimize.cuda_gpu import check_tuning_gpu
from kiln.optimize.cuda_pipeline import cuda_tuning_target, dlight_schedule, pre_schedule_passes
from kiln.optimize.tune_db import database_dir, write_info
from kiln.optimize.tuning import (Progress, TuneReport, _check_extras, _export_shared,
                                  _fast_build, record_schedules, search_tasks)
from kiln.options import TuneOptions
from kiln.targets import TargetSpec

def cuda_tasks(mod: tvm.IRModule, spec: TargetSpec, *, dtype: str = "float32"):
    """The CUDA tuning target, the fused module the CUDA build schedules, its MetaSchedule
    tasks and DLight's schedule of each (None where no DLight rule applies). Needs
    :func:`kiln.codegen.cuda_env.enable_cuda_codegen` first."""
    target = cuda_tuning_target(spec)
    if dtype == "float16":  # as the CUDA build: float16 operands, float32 accumulation
        mod = tvm.relax.transform.ToMixedPrecision(out_dtype="float32")(mod)
    with target:
        fused = tvm.transform.Sequential(pre_schedule_passes(target))(mod)
        tasks = ms.relax_integration.extract_tasks(fused, target)
        scheds = [dlight_schedule(t.dispatched[0]["main"], target) for t in tasks]
    return target, fused, tasks, scheds


def _cuda_worker() -> None:
    """Builder / runner process start: TVM's CUDA runtime loaded and NVRTC mode on."""
    from kiln.codegen.cuda_env import enable_cuda_codegen

    env = enable_cuda_codegen(intrinsics=False)
    os.environ["TVM_CUDA_COMPILE_MODE"] = "nvrtc"
    os.environ.setdefault("CUDA_PATH", env["cuda_path"])


def _cuda_build(mod, target, params):
    """MetaSchedule's build inside ``with target:``: NVRTC takes the GPU arch from the current
    target (without it, it asks the GPU, and a build host has none)."""
    with target:
        return _fast_build(mod, target, params)


def _builder_runner(spec: TargetSpec, options: TuneOptions):
    workers = max(1, min(options.build_workers, os.cpu_count() or 1))
    builder = ms.builder.LocalBuilder(max_workers=workers, timeout_sec=120.0,
                                      f_build=_cuda_build, initializer=_cuda_worker,
                                      f_export=partial(_export_shared, spec.arch, spec.triple))
    evaluator = ms.runner.EvaluatorConfig(number=10, repeat=3, min_repeat_ms=50,
                                          enable_cpu_cache_flush=False)
    runner = ms.runner.LocalRunner(timeout_sec=60.0, evaluator_config=evaluator,
                                   initializer=_cuda_worker)
    return builder, runner


def tune_cuda(mod: tvm.IRModule, spec: TargetSpec, options: TuneOptions, *,
              dtype: str = "float32", progress: Progress | None = None) -> TuneReport:
    """Tune the GPU kernels of ``mod`` (an imported Relax module) for ``spec`` on this
    machine's GPU into the target's database; the GPU is checked before anything else."""
    from kiln.codegen.cuda_build import check_cuda_options
    from kiln.codegen.cuda_env import cuda_compile_env, enable_cuda_codegen

    say = progress or (lambda _msg: None)
    start = time.perf_counter()
    check_cuda_options(spec, None)
    check_tuning_gpu(spec, rpc=options.rpc)
    _check_extras()
    enable_cuda_codegen()
    with cuda_compile_env():
        target, _, tasks, scheds = cuda_tasks(mod, spec, dtype=dtype)
        if not tasks:
            raise KilnError("invalid_model", "the model has no kernels to tune")
        workdir = database_dir(spec, create=True)
        write_info(workdir, spec)
        database = ms.database.JSONDatabase(work_dir=str(workdir))
        builder, runner = _builder_runner(spec, options)
        report = TuneReport(database=workdir)
        say(f"measuring DLight's schedule of {len(tasks)} GPU kernels")
        defaults = record_schedules(tasks, scheds, target, database, builder, runner, "cuda")
        search_tasks(tasks, defaults, spec, options, workdir, database, builder, runner,
                     report, say)
    report.seconds = time.perf_counter() - start
    return report
