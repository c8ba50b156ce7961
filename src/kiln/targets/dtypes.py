"""Which compute dtypes a target runs natively (the ``dtype`` compiler option).

``float16`` needs half-precision *arithmetic* in the CPU's vector unit: Armv8.2-A FEAT_FP16
(Cortex-A55/A75/A76/A78, Neoverse N1/V1/N2/V2 ...) or x86 AVX512-FP16 (Sapphire Rapids and
later). Elsewhere LLVM would convert every value to float32 and back, slower than float32.

``bfloat16`` is refused on every CPU for now: TVM 0.27 legalizes bf16 arithmetic to float32 in
its TIR pipeline (``BF16ComputeLegalize``), so even a CPU with BF16 instructions would get
float32 arithmetic plus conversions.
"""

from __future__ import annotations

from kiln.errors import KilnError
from kiln.targets.spec import TargetSpec

FLOAT16_MCPUS = frozenset({
    "cortex-a55", "cortex-a65", "cortex-a75", "cortex-a76", "cortex-a76ae", "cortex-a77",
    "cortex-a78", "cortex-a78ae", "cortex-a78c", "cortex-a510", "cortex-a710", "cortex-a715",
    "cortex-x1", "cortex-x2", "cortex-x3", "neoverse-n1", "neoverse-n2", "neoverse-v1",
    "neoverse-v2", "neoverse-e1", "carmel", "apple-m1", "apple-m2",
    "sapphirerapids", "graniterapids", "emeraldrapids",
})
FLOAT16_MATTRS = frozenset({"+fullfp16", "+avx512fp16"})


def native_dtypes(spec: TargetSpec) -> tuple[str, ...]:
    """The compute dtypes ``spec``'s CPU has arithmetic for."""
    out = ["float32"]
    if spec.accelerator == "nvidia":  # every GPU CUDA 13 builds for (sm_75+) has fp16 tensor cores
        return ("float32", "float16")
    if spec.accelerator is None and (spec.mcpu in FLOAT16_MCPUS or FLOAT16_MATTRS & set(spec.mattr)):
        out.append("float16")
    return tuple(out)


def check_dtype(spec: TargetSpec, dtype: str | None, examples: list[str]) -> None:
    """Refuse a compute ``dtype`` the target cannot run natively; ``examples`` name targets
    with float16 arithmetic (for the hint)."""
    if dtype in (None, "float32"):
        return
    if dtype == "bfloat16":
        raise KilnError("dtype_not_supported", "bfloat16 compute is not supported on CPU targets: "
                        "TVM 0.27 lowers bf16 arithmetic to float32 (BF16ComputeLegalize), so "
                        "it would only add conversions",
                        hint="use float32, or float16 on a CPU with FP16 arithmetic "
                             f"(e.g. {', '.join(examples[:4])})")
    if dtype == "float16" and "float16" not in native_dtypes(spec):
        raise KilnError("dtype_not_supported", f"target {spec.name!r} (mcpu "
                        f"{spec.mcpu or 'generic'}) has no float16 arithmetic, so float16 "
                        "would run slower than float32",
                        hint=f"use float32 here; float16 works on {', '.join(examples[:6])}, "
                             "or pass an mcpu/mattr with FP16 (e.g. +fullfp16)")
    if dtype not in ("float16",):
        raise KilnError("dtype_not_supported", f"compute dtype {dtype!r} is not supported on "
                        "CPU targets", hint="use float32 or float16")
