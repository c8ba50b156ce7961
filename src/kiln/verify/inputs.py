"""Seeded sample inputs for the accuracy gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kiln.errors import KilnError
from kiln.signature import ModelSignature, conform_inputs


def seeded_inputs(signature: ModelSignature, seed: int = 0) -> dict[str, np.ndarray]:
    """Standard-normal floats, small non-negative integers (valid as indices), random bools."""
    rng = np.random.default_rng(seed)
    out = {}
    for t in signature.inputs:
        dt = np.dtype(t.dtype)
        if dt.kind == "f":
            out[t.name] = rng.standard_normal(t.shape).astype(dt)
        elif dt.kind in "iu":
            out[t.name] = rng.integers(0, 4, size=t.shape).astype(dt)
        elif dt.kind == "b":
            out[t.name] = rng.integers(0, 2, size=t.shape).astype(bool)
        else:
            raise KilnError("invalid_input", f"cannot generate inputs of dtype {t.dtype}",
                            hint="pass --sample-inputs FILE.npz")
    return out


def load_sample_inputs(path: Path, signature: ModelSignature) -> dict[str, np.ndarray]:
    """Read ``--sample-inputs FILE.npz`` (one array per input name) without unpickling."""
    if not path.exists():
        raise KilnError("file_not_found", f"sample inputs {str(path)!r} do not exist",
                        hint="give an .npz with one array per model input")
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except Exception as exc:
        raise KilnError("invalid_input", f"{path} is not a readable .npz: {exc}",
                        hint="write it with numpy.savez") from None
    return conform_inputs(data, signature)
