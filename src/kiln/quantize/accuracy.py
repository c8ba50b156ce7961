"""The int8 accuracy figures: how far a quantized model may be from its float32 original.

Kiln's float gate bounds every element absolutely; int8 rounds every activation to one of 256
steps, so the int8 gate asks for a cosine similarity of at least 0.99 per output and bounds
every element by a fraction (default 10%) of that output's range (max |reference|); it also
reports the top-1 agreement when an output looks like class scores ([N, C], C > 1).
"""

from __future__ import annotations

import numpy as np

from kiln.options import DEFAULT_TOLERANCES, Tolerance

RANGE_FRACTION, _, MIN_COSINE = DEFAULT_TOLERANCES["int8"]


def int8_tolerance(given: Tolerance, reference: np.ndarray) -> Tolerance:
    """Absolute thresholds for one output: ``--atol``/``--rtol`` as given, else the int8
    defaults, with the absolute bound scaled to the output's range."""
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    atol = given.atol if given.atol is not None else RANGE_FRACTION * max(scale, 1e-12)
    return Tolerance(atol=atol, rtol=given.rtol if given.rtol is not None else 0.0,
                     min_cosine=given.min_cosine if given.min_cosine is not None else MIN_COSINE)


def top1_agreement(got: np.ndarray, ref: np.ndarray) -> float | None:
    """Share of rows whose argmax agrees, for outputs shaped like class scores."""
    if ref.ndim != 2 or ref.shape[1] < 2 or got.shape != ref.shape:
        return None
    return float(np.mean(np.argmax(got, axis=1) == np.argmax(ref, axis=1)))


def ort_int8_vs_fp32(fp32_model, int8_model, samples: list[dict], limit: int = 8) -> dict:
    """ONNX Runtime (CPU) running the QDQ model against the float model on up to ``limit``
    calibration samples: the int8 error to expect from any int8 engine, per output."""
    import onnxruntime as ort

    def run(path):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        runs = [sess.run(None, s) for s in samples[:limit]]
        return names, [np.stack([r[i] for r in runs]) for i in range(len(names))]

    names, ref = run(fp32_model)
    _, got = run(int8_model)
    return {"runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider",
            "samples": min(limit, len(samples)),
            "outputs": [figures(n, g, r) for n, g, r in zip(names, got, ref)]}


def figures(name: str, got: np.ndarray, ref: np.ndarray) -> dict:
    g, r = got.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
    diff = np.abs(g - r)
    denom = float(np.linalg.norm(g) * np.linalg.norm(r))
    scores = ref.reshape(ref.shape[0], -1) if ref.ndim >= 2 else None
    top1 = (float(np.mean(np.argmax(got.reshape(scores.shape), 1) == np.argmax(scores, 1)))
            if scores is not None and scores.shape[1] > 1 else None)
    return {"name": name, "cosine": float(np.dot(g, r) / denom) if denom > 0 else 1.0,
            "max_abs_error": float(diff.max()) if diff.size else 0.0,
            "max_abs_reference": float(np.abs(r).max()) if r.size else 0.0,
            **({"top1_agreement": top1} if top1 is not None else {})}
