"""Compare outputs with the reference: max abs error, max rel error, cosine similarity."""

from __future__ import annotations

import numpy as np

from kiln.options import Tolerance


def compare(name: str, got: np.ndarray, ref: np.ndarray, tol: Tolerance) -> dict:
    """One output's figures and whether they pass ``tol`` (NaN positions must agree)."""
    atol, rtol, min_cos = tol.resolve(str(ref.dtype))
    row = {"name": name, "dtype": str(ref.dtype), "shape": list(ref.shape),
           "atol": atol, "rtol": rtol, "min_cosine": min_cos}
    if got.shape != ref.shape:
        return {**row, "passed": False, "problem": f"shape {list(got.shape)} != {list(ref.shape)}"}
    g, r = got.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
    nan_ok = bool(np.array_equal(np.isnan(g), np.isnan(r)))
    fin = ~(np.isnan(g) | np.isnan(r))
    g, r = g[fin], r[fin]
    diff = np.abs(g - r)
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float((diff / np.maximum(np.abs(r), 1e-6)).max()) if diff.size else 0.0
    denom = float(np.linalg.norm(g) * np.linalg.norm(r))
    cosine = float(np.dot(g, r) / denom) if denom > 0 else (1.0 if max_abs == 0 else 0.0)
    # an element passes when it is within atol OR within rtol (numpy.allclose style)
    within = bool(np.all(diff <= atol + rtol * np.abs(r))) if diff.size else True
    exact_kind = ref.dtype.kind in "iub"
    passed = nan_ok and (max_abs == 0.0 if exact_kind else (within and cosine >= min_cos))
    return {**row, "max_abs_error": max_abs, "max_rel_error": max_rel, "cosine": cosine,
            "passed": bool(passed), **({} if nan_ok else {"problem": "NaN positions differ"})}
