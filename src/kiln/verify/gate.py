"""The accuracy gate: run the artifact on sample inputs and compare with the reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kiln.errors import KilnError
from kiln.importers.base import ImportedModel
from kiln.options import CompileOptions
from kiln.verify.compare import compare
from kiln.verify.emulate import emulator_for, has_fallback, run_folder, why_not_runnable
from kiln.verify.inputs import seeded_inputs
from kiln.verify.reference import reference_name, run_reference


def accuracy_gate(folder: Path, spec: dict, imported: ImportedModel, options: CompileOptions,
                  sample_inputs: dict[str, np.ndarray] | None = None, *,
                  int8: bool = False) -> dict:
    """Return the verification report; raise ``accuracy_regression`` when it fails.

    When the artifact cannot run here (no emulator), the report says so and why, and the
    compile goes on: the artifact is marked as not verified. ``int8``: the artifact is a
    quantized model, judged by the int8 thresholds (kiln.quantize.accuracy).
    """
    if not options.verify:
        return {"verified": False, "reason": "verification was turned off (--no-verify)"}
    if emulator_for(spec, fallback=has_fallback(folder)) is None:
        return {"verified": False, "reason": why_not_runnable(spec)}
    inputs = sample_inputs if sample_inputs is not None else seeded_inputs(imported.signature,
                                                                           options.seed)
    reference = run_reference(imported.framework, imported.source, inputs)
    result = run_folder(folder, spec, imported.signature, inputs)
    rows = [_compare(t.name, got, ref, options, int8)
            for t, got, ref in zip(imported.signature.outputs, result.outputs, reference)]
    report = {"verified": True, "passed": all(r["passed"] for r in rows), "mode": result.mode,
              "reference": reference_name(imported.framework),
              "inputs": "--sample-inputs" if sample_inputs is not None
              else f"seeded (seed {options.seed})", "outputs": rows}
    if not report["passed"]:
        bad = [r for r in rows if not r["passed"]]
        figures = "; ".join(
            f"{r['name']}: max abs {r.get('max_abs_error', float('nan')):.3g} (atol {r['atol']:g}), "
            f"max rel {r.get('max_rel_error', float('nan')):.3g} (rtol {r['rtol']:g}), "
            f"cosine {r.get('cosine', float('nan')):.6f} (min {r['min_cosine']})"
            + (f", {r['problem']}" if "problem" in r else "") for r in bad)
        raise KilnError("accuracy_regression", f"the compiled model disagrees with "
                        f"{report['reference']}: {figures}",
                        hint="loosen with --atol/--rtol if this is expected, or report the model")
    return report



def _compare(name: str, got: np.ndarray, ref: np.ndarray, options: CompileOptions,
             int8: bool) -> dict:
    if not int8:
        return compare(name, got, ref, options.tolerance)
    from kiln.quantize.accuracy import int8_tolerance, top1_agreement

    row = compare(name, got, ref, int8_tolerance(options.tolerance, ref))
    top1 = top1_agreement(got, ref)
    return {**row, "metric": "int8", **({"top1_agreement": top1} if top1 is not None else {})}
