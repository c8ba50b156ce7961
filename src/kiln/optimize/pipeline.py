"""Relax pipelines per opt level for CPU targets."""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu

from kiln.optimize.channel_pad import conv_channel_pad
from kiln.optimize.const_fold import numpy_constant_fold
from kiln.optimize.conv_transpose import conv_transpose_as_conv
from kiln.optimize.fast_math import fast_math
from kiln.optimize.winograd import winograd_conv
from kiln.optimize.cpu_schedule import CPUScheduleConfig, lanes_for, schedule_cpu

#: opt_level -> pipeline name recorded in the manifest
PIPELINES = {0: "default", 1: "fused", 2: "fused+schedules"}


def cpu_pipeline(target: tvm.target.Target, *, opt_level: int, simd: str | None,
                 tuned: tvm.transform.Pass | None = None, dtype: str = "float32",
                 winograd: bool = True):
    """The Relax pipeline for ``opt_level``; a pipeline *name* for level 0 (TVM's own).

    Level 1 is TVM's fused CPU pipeline; level 2 (the default) adds Kiln's default CPU
    schedules between operator fusion and lowering. ``tuned`` (a pass applying a tuning
    database) runs right before them, so kernels the database knows keep its schedule.
    """
    if opt_level == 0:
        return "default"
    passes = _optimize_passes(target, opt_level=opt_level, simd=simd, tuned=tuned, dtype=dtype,
                              winograd=winograd)

    @tvm.transform.module_pass(opt_level=0, name="KilnCPUPipeline")
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        seq = tvm.transform.Sequential([
            *passes, *cpu.dataflow_lower_passes(target), *cpu.finalize_passes(target)])
        return seq(mod)

    return _pipeline


def _optional(inner: tvm.transform.Pass) -> tvm.transform.Pass:
    """Run ``inner``; if it fails on this model, go on without it (it only helps speed).

    TVM 0.27's ConvertLayout throws std::bad_alloc on some exported transformer graphs."""

    @tvm.transform.module_pass(opt_level=0, name=f"Optional{inner.info.name}")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        try:
            return inner(mod)
        except Exception:  # noqa: BLE001 - the model stays in its original layout
            return mod

    return _pass


def _float_lanes(target: tvm.target.Target) -> int:
    """float32 lanes the target's vectors hold, from its triple / CPU name (8 on x86-64,
    where AVX2 is the common floor of the host targets; 4 on ARM NEON and the rest)."""
    triple, mcpu = str(target.attrs.get("mtriple", "")), str(target.attrs.get("mcpu", ""))
    return 8 if "x86_64" in triple or mcpu.startswith(("x86-64", "haswell", "skylake", "znver",
                                                       "icelake", "cascadelake", "broadwell",
                                                       "sapphirerapids", "alderlake")) else 4


def pre_schedule_passes(target: tvm.target.Target, *, opt_level: int,
                        dtype: str = "float32", winograd: bool = True) -> list:
    """Precision, layout, legalization and fusion: the module whose kernels get scheduled
    (or tuned). ``dtype`` float16 computes convolutions and matmuls (and what fuses with them)
    in half precision, accumulating in half precision too; inputs and outputs stay float32.
    ``winograd`` (``CompileOptions.winograd``, on by default) computes float32 stride-1 3x3
    convs as Winograd transforms around a matmul."""
    precision = [relax.transform.ToMixedPrecision(out_dtype="float16")] \
        if dtype == "float16" else []
    lower = [*cpu.library_dispatch_passes(target), *cpu.legalize_passes(target)]
    if opt_level < 2:
        return [*precision, *lower]
    return [
        # transposed convs as convs (TVM's lowering of them gets no schedule), before the
        # layout change, which then gives them NHWC too
        conv_transpose_as_conv,
        # output channels that fill no register tile padded with zero filters (116 -> 120)
        conv_channel_pad(_float_lanes(target)),
        # NHWC activations with HWIO weights: the output channels become the contiguous axis
        # that both the weights and the output are vectorized along (ORT's NCHWc, simplified)
        _optional(relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "HWIO"]})),
        # inference-mode batch norm as elementwise ops, so that it fuses into the conv epilogue
        relax.transform.DecomposeOpsForInference(),
        # the weight transposes and bias reshapes that brings, and batch norm's arithmetic on
        # constants, computed with numpy (FoldConstant compiles a kernel for each)
        numpy_constant_fold,
        # stride-1 3x3 convs as Winograd F(4x4 or 2x2, 3x3): a third to a half of the multiplies
        *([winograd_conv] if winograd and dtype == "float32" else []),
        *precision,
        # exp / tanh / erf / sigmoid as polynomials that vectorize (LLVM calls libm per lane);
        # after ToMixedPrecision, which cannot read the PrimFuncs this pass adds
        fast_math,
        *lower]


def _optimize_passes(target: tvm.target.Target, *, opt_level: int, simd: str | None,
                     tuned: tvm.transform.Pass | None = None, dtype: str = "float32",
                     winograd: bool = True) -> list:
    """Everything before lowering: precision, layout, legalization, fusion and schedules."""
    passes = pre_schedule_passes(target, opt_level=opt_level, dtype=dtype, winograd=winograd)
    if opt_level < 2:
        return passes
    return [
        *passes,
        *([tuned] if tuned is not None else []),
        schedule_cpu(CPUScheduleConfig(vector_lanes=lanes_for(simd, dtype))),
        # weight repacking blocks become separate functions on constants, folded now
        relax.transform.SplitLayoutRewritePreproc(), relax.transform.FoldConstant(),
        relax.transform.DeadCodeElimination()]
