"""The accuracy gate for tree ensembles: the artifact against the source framework
(xgboost / lightgbm / scikit-learn running here), on seeded inputs that land on both sides of
the model's split thresholds.

Tolerance: float32 outputs, atol 1e-5 and rtol 1e-5 (allclose style), cosine 0.99999, unless
--atol/--rtol are given. The generated code sums in double; XGBoost sums in float32, so large
ensembles differ from it by float32 rounding, well inside 1e-5 for probabilities.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kiln.errors import KilnError
from kiln.importers.base import ImportedModel
from kiln.options import CompileOptions, Tolerance
from kiln.verify.compare import compare
from kiln.verify.emulate import emulator_for, run_folder, why_not_runnable

TREE_ATOL, TREE_RTOL, TREE_MIN_COSINE = 1e-5, 1e-5, 0.99999
#: rows the gate runs when the artifact takes any row count
GATE_ROWS = 64


def tree_inputs(ensemble, num_feature: int, rows: int, seed: int) -> np.ndarray:
    """Seeded rows: per feature, split thresholds plus noise of their spread (so both sides of
    most splits are taken); standard normal for features no split uses."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, num_feature))
    thresholds, categories = _split_values(ensemble.model, num_feature)
    for f, values in enumerate(thresholds):
        if values:
            v = np.asarray(values)
            spread = max(float(v.std()), 1e-3 * max(1.0, float(np.abs(v).max())))
            x[:, f] = rng.choice(v, size=rows) + rng.normal(0.0, spread, size=rows)
    for f, cats in enumerate(categories):
        if cats:  # the categories the splits name, and one no split names
            x[:, f] = rng.choice(sorted(cats) + [max(cats) + 1], size=rows)
    return x.astype(np.float32)


def _split_values(model, num_feature: int) -> tuple[list[list[float]], list[set[int]]]:
    """Per feature: numerical split thresholds, and categories of categorical splits."""
    thresholds: list[list[float]] = [[] for _ in range(num_feature)]
    categories: list[set[int]] = [set() for _ in range(num_feature)]
    for i in range(min(int(model.num_tree), 200)):
        acc = model.get_tree_accessor(i)
        fields = {k: np.asarray(acc.get_field(k)) for k in (
            "node_type", "split_index", "threshold", "category_list", "category_list_begin",
            "category_list_end")}
        for n, (t, f) in enumerate(zip(fields["node_type"], fields["split_index"])):
            v = float(fields["threshold"][n])
            if t == 1 and np.isfinite(v):
                thresholds[int(f)].append(v)
            elif t == 2:
                b, e = int(fields["category_list_begin"][n]), int(fields["category_list_end"][n])
                categories[int(f)].update(int(c) for c in fields["category_list"][b:e])
    return thresholds, categories


def run_tree_reference(ensemble, x: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, str]:
    """The framework's own prediction for ``x``, shaped like the artifact's output."""
    est, method = ensemble.estimator, ensemble.method
    try:
        if est is None:
            import treelite.gtil

            y = treelite.gtil.predict(ensemble.model, x).reshape(len(x), -1)
            y = -y if ensemble.negate else y
            if ensemble.expand_binary:
                y = np.concatenate([1.0 - y, y], axis=1)
            name = "treelite GTIL"
        elif ensemble.kind == "xgboost.Booster":
            y, name = _xgboost_predict(est, x)
        else:
            y = getattr(est, method)(x)
            module = ensemble.kind.split(".")[0]
            name = f"{module} {_version_of(module)} {type(est).__name__}.{method}"
    except Exception as exc:
        raise KilnError("verification_failed", f"the reference ({ensemble.kind}.{method}) "
                        f"failed: {str(exc).strip()[:300]}",
                        hint="compile with --no-verify to skip the accuracy gate") from None
    y = np.asarray(y, dtype=np.float32)
    if y.size != int(np.prod((len(x), *shape[1:]))):
        raise KilnError("verification_failed", f"{name} returned shape {list(y.shape)}, the "
                        f"artifact returns {[len(x), *shape[1:]]}",
                        hint="compile with --no-verify to skip the accuracy gate, and report "
                             "the model")
    return y.reshape(len(x), *shape[1:]), name


def _xgboost_predict(booster, x: np.ndarray) -> tuple[np.ndarray, str]:
    """``Booster.predict``; for ``multi:softmax`` (which predicts labels) the class
    probabilities, as the artifact returns them: softmax of the margins."""
    import json

    import xgboost

    dm = xgboost.DMatrix(x, missing=np.nan)
    name = f"xgboost {xgboost.__version__} Booster.predict"
    objective = json.loads(booster.save_config())["learner"]["objective"]["name"]
    if objective != "multi:softmax":
        return booster.predict(dm), name
    margin = booster.predict(dm, output_margin=True).astype(np.float64)
    e = np.exp(margin - margin.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True), name + " (softmax of output_margin)"


def _version_of(module: str) -> str:
    import importlib

    return getattr(importlib.import_module(module), "__version__", "?")


def tree_accuracy_gate(folder: Path, spec: dict, imported: ImportedModel,
                       options: CompileOptions,
                       sample_inputs: dict[str, np.ndarray] | None = None) -> dict:
    """Return the verification report; raise ``accuracy_regression`` when it fails."""
    if not options.verify:
        return {"verified": False, "reason": "verification was turned off (--no-verify)"}
    if emulator_for(spec) is None:
        return {"verified": False, "reason": why_not_runnable(spec)}
    tin, tout = imported.signature.inputs[0], imported.signature.outputs[0]
    if sample_inputs is not None:
        x = np.ascontiguousarray(sample_inputs[tin.name], dtype=np.float32)
    else:
        rows = tin.shape[0] if tin.shape[0] > 0 else GATE_ROWS
        x = tree_inputs(imported.mod, tin.shape[1], rows, options.seed)
    ref, ref_name = run_tree_reference(imported.mod, x, (len(x), *tout.shape[1:]))
    result = run_folder(folder, spec, imported.signature, {tin.name: x})
    tol = options.tolerance
    tol = Tolerance(atol=TREE_ATOL if tol.atol is None else tol.atol,
                    rtol=TREE_RTOL if tol.rtol is None else tol.rtol,
                    min_cosine=TREE_MIN_COSINE if tol.min_cosine is None else tol.min_cosine)
    row = compare(tout.name, result.outputs[0], ref, tol)
    report = {"verified": True, "passed": row["passed"], "mode": result.mode,
              "reference": ref_name, "rows": int(len(x)),
              "inputs": "--sample-inputs" if sample_inputs is not None
              else f"seeded around split thresholds (seed {options.seed})", "outputs": [row]}
    if not row["passed"]:
        raise KilnError("accuracy_regression", f"the compiled tree model disagrees with "
                        f"{ref_name}: max abs {row.get('max_abs_error', float('nan')):.3g} "
                        f"(atol {row['atol']:g}){', ' + row['problem'] if 'problem' in row else ''}",
                        hint="loosen with --atol/--rtol if this is expected, or report the model")
    return report
