"""Names, shapes and dtypes of a model's inputs and outputs (no compiler imports)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kiln.errors import KilnError


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: dict) -> "TensorInfo":
        return cls(str(d["name"]), tuple(int(x) for x in d["shape"]), str(d["dtype"]))


@dataclass(frozen=True)
class ModelSignature:
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    def to_dict(self) -> dict:
        return {"inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs]}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSignature":
        return cls(tuple(TensorInfo.from_dict(t) for t in d["inputs"]),
                   tuple(TensorInfo.from_dict(t) for t in d["outputs"]))

    def to_text(self) -> str:
        """The line format read by the C runtime (``signature.txt``)."""
        lines = ["kiln-signature 1"]
        for kind, tensors in (("input", self.inputs), ("output", self.outputs)):
            for t in tensors:
                dims = " ".join(str(d) for d in t.shape)
                lines.append(" ".join(x for x in (kind, t.dtype, str(len(t.shape)), dims, t.name) if x))
        return "\n".join(lines) + "\n"


def conform_inputs(data: dict, signature: ModelSignature) -> dict[str, np.ndarray]:
    """Check names and shapes and cast dtypes (as DLR does for float inputs)."""
    names = [t.name for t in signature.inputs]
    missing = [n for n in names if n not in data]
    extra = [n for n in data if n not in names]
    if missing or extra:
        raise KilnError("invalid_input", f"inputs do not match the model: missing {missing}, "
                        f"unknown {extra}", hint=f"the model's inputs are {names}")
    out = {}
    for t in signature.inputs:
        arr = np.asarray(data[t.name])
        # a dimension of -1 takes any size (the row count of tree-ensemble artifacts)
        if arr.ndim != len(t.shape) or any(d >= 0 and a != d for a, d in zip(arr.shape, t.shape)):
            raise KilnError("invalid_input", f"input {t.name!r} has shape {list(arr.shape)}, the "
                            f"model takes {list(t.shape)}", hint="reshape the array, or compile "
                            "again with --input-shape")
        if arr.dtype != np.dtype(t.dtype):
            if arr.dtype.kind != np.dtype(t.dtype).kind and np.dtype(t.dtype).kind != "f":
                raise KilnError("invalid_input", f"input {t.name!r} has dtype {arr.dtype}, the "
                                f"model takes {t.dtype}", hint=f"convert it with .astype('{t.dtype}')")
            arr = arr.astype(t.dtype)
        out[t.name] = np.ascontiguousarray(arr)
    return out
