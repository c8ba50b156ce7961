"""The Relax pipeline of NVIDIA targets: TVM's CUDA pipeline (DLight GPU schedules), with a
tuning database applied right before DLight when the target has one.

The passes are TVM's own (``tvm.relax.backend.cuda.pipeline``), split at DLight's
``ApplyDefaultSchedule``: everything before it is the module whose kernels MetaSchedule tunes
(:func:`pre_schedule_passes`), so the kernels the database knows are found by structural hash at
compile time, and DLight schedules only the kernels left unscheduled. Every pass runs inside
``with target:`` (DLight finds the GPU from the current target and silently schedules nothing
without one; that is how a pipeline passed as an object used to lose its GPU schedules).
"""

from __future__ import annotations

import tvm

#: The CUDA limits MetaSchedule's GPU rules and its GPU-code check need, the same for every
#: arch Kiln builds (sm_75 .. sm_121): 48 KiB is the static shared memory of one block.
GPU_LIMITS = {"max_threads_per_block": 1024, "max_shared_memory_per_block": 49152,
              "registers_per_block": 65536, "thread_warp_size": 32, "max_num_threads": 1024}


def cuda_tuning_target(spec) -> tvm.target.Target:
    """The TVM target of ``spec``'s GPU (host included) with the limits MetaSchedule reads."""
    from kiln.codegen.cuda_build import cuda_target

    return tvm.target.Target({**cuda_target(spec), **GPU_LIMITS})


def _split(target: tvm.target.Target):
    """TVM's CUDA legalization passes without DLight, and the DLight pass."""
    from tvm.relax.backend.cuda import pipeline as cuda

    *before, dlight = cuda.legalize_passes(target)
    if dlight.info.name != "ApplyDefaultSchedule":  # a TVM upgrade moved DLight
        raise RuntimeError(f"TVM's CUDA pipeline ends its legalization with {dlight.info.name}, "
                           "not DLight's ApplyDefaultSchedule")
    return [*cuda.library_dispatch_passes(target), *before], dlight


def pre_schedule_passes(target: tvm.target.Target) -> list:
    """Dispatch, legalization and fusion: the module whose kernels get scheduled or tuned."""
    return _split(target)[0]


def dlight_rules(target: tvm.target.Target) -> list:
    """DLight's GPU rules in the order TVM's CUDA pipeline tries them."""
    return list(_split(target)[1].rules)


def cuda_pipeline(target: tvm.target.Target, tuned: tvm.transform.Pass | None = None):
    """TVM's CUDA pipeline with ``tuned`` (a pass applying a tuning database) before DLight."""
    from tvm.relax.backend.cuda import pipeline as cuda

    @tvm.transform.module_pass(opt_level=0, name="KilnCUDAPipeline")
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        with target:
            before, dlight = _split(target)
            seq = tvm.transform.Sequential([
                *before, *([tuned] if tuned is not None else []), dlight,
                *cuda.dataflow_lower_passes(target), *cuda.finalize_passes(target)])
            return seq(mod)

    return _pipeline


def dlight_schedule(func: tvm.tirx.PrimFunc, target: tvm.target.Target):
    """DLight's schedule of one kernel (a traced ``Schedule``), or None if no rule applies."""
    from tvm.s_tir import Schedule

    for rule in dlight_rules(target):
        space = rule.apply(func, target, False)
        if space is None:
            continue
        return space if isinstance(space, Schedule) else space[0]
    return None
