"""Relax pipelines per opt level for CPU targets."""

from __future__ import annotations

import tvm
from tvm.relax.backend.cpu_generic import pipeline as cpu

from kiln.optimize.cpu_schedule import CPUScheduleConfig, lanes_for, schedule_cpu

#: opt_level -> pipeline name recorded in the manifest
PIPELINES = {0: "default", 1: "fused", 2: "fused+schedules"}


def cpu_pipeline(target: tvm.target.Target, *, opt_level: int, simd: str | None):
    """The Relax pipeline for ``opt_level``; a pipeline *name* for level 0 (TVM's own).

    Level 1 is TVM's fused CPU pipeline; level 2 (the default) adds Kiln's default CPU
    schedules between operator fusion and lowering.
    """
    if opt_level == 0:
        return "default"
    passes_after_fusion = []
    if opt_level >= 2:
        passes_after_fusion.append(schedule_cpu(CPUScheduleConfig(vector_lanes=lanes_for(simd))))

    @tvm.transform.module_pass(opt_level=0, name="KilnCPUPipeline")
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        seq = tvm.transform.Sequential([
            *cpu.library_dispatch_passes(target), *cpu.legalize_passes(target),
            *passes_after_fusion,
            *cpu.dataflow_lower_passes(target), *cpu.finalize_passes(target)])
        return seq(mod)

    return _pipeline
