"""Read a calibration set (``--calibration FILE.npz``) and check it against the model's inputs.

The file holds one array per model input, named like the input, with a leading sample axis:
``[N, *input_shape]``. When the input's first dimension is 1 (a batch of one), ``[N, *rest]``
is accepted too (N samples stacked along the batch axis). Loaded without unpickling.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kiln.errors import KilnError
from kiln.signature import ModelSignature, TensorInfo

_HINT = ("write it with numpy.savez('calib.npz', **{input_name: array}), each array shaped "
         "[samples, *input_shape] in the input's dtype")


def load_calibration(path: Path, signature: ModelSignature) -> list[dict[str, np.ndarray]]:
    """The calibration samples, one ``{input name: array}`` per sample (batch of one input)."""
    data = _read(Path(path))
    names = [t.name for t in signature.inputs]
    missing = [n for n in names if n not in data]
    extra = sorted(k for k in data if k not in names)
    if missing or extra:
        raise KilnError("invalid_calibration", f"{Path(path).name} does not match the model's "
                        f"inputs: missing {missing}, unknown {extra}",
                        hint=f"the model's inputs are {names}; {_HINT}")
    stacks = {t.name: _samples(data[t.name], t) for t in signature.inputs}
    counts = {n: len(a) for n, a in stacks.items()}
    if len(set(counts.values())) > 1:
        raise KilnError("invalid_calibration", f"inputs have different sample counts: {counts}",
                        hint="give every input the same number of samples")
    n = next(iter(counts.values()), 0)
    if n == 0:
        raise KilnError("empty_calibration", f"{Path(path).name} holds no samples",
                        hint="give at least one (better 32-500) representative inputs")
    for name, arr in stacks.items():
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            bad = int(np.count_nonzero(~np.isfinite(arr)))
            raise KilnError("calibration_not_finite", f"calibration input {name!r} holds {bad} "
                            "NaN or Inf value(s)", hint="remove or fix those samples")
    return [{k: a[i] for k, a in stacks.items()} for i in range(n)]


def _read(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise KilnError("file_not_found", f"calibration file {str(path)!r} does not exist",
                        hint=_HINT)
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not hasattr(npz, "files"):
                raise ValueError("a single .npy array, not an .npz archive")
            return {k: npz[k] for k in npz.files}
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise KilnError("invalid_calibration", f"{path.name} is not a readable .npz of arrays: "
                        f"{first}", hint=_HINT) from None


def _samples(arr: np.ndarray, t: TensorInfo) -> np.ndarray:
    """``arr`` as ``[N, *t.shape]``, or the problem as ``invalid_calibration``."""
    shape = tuple(t.shape)
    if arr.dtype != np.dtype(t.dtype):
        raise KilnError("invalid_calibration", f"calibration input {t.name!r} has dtype "
                        f"{arr.dtype}, the model expects {t.dtype}", hint=_HINT)
    if arr.shape[1:] == shape:
        return arr
    if shape and shape[0] == 1 and arr.shape[1:] == shape[1:]:
        return arr.reshape((arr.shape[0], *shape))
    raise KilnError("invalid_calibration", f"calibration input {t.name!r} has shape "
                    f"{list(arr.shape)}; expected [N, {', '.join(map(str, shape))}]"
                    + (f" or [N, {', '.join(map(str, shape[1:]))}]" if shape and shape[0] == 1
                       else ""), hint=_HINT)
