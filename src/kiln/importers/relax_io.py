"""Shared helpers for importers that get a Relax module from a framework frontend."""

from __future__ import annotations

from kiln.errors import KilnError
from kiln.signature import TensorInfo


def output_infos(mod, names: list[str] | None = None) -> list[TensorInfo]:
    """Outputs of ``mod["main"]`` as static-shape tensors (named ``names`` or output0, ...)."""
    import tvm
    from tvm import relax

    ret = mod["main"].ret_ty
    infos = list(ret.fields) if isinstance(ret, tvm.ir.TupleType) else [ret]
    names = names if names and len(names) == len(infos) else [f"output{i}" for i in range(len(infos))]
    out = []
    for name, sinfo in zip(names, infos):
        if not isinstance(sinfo, relax.TensorType) or sinfo.shape is None:
            raise KilnError("compile_failed", f"output {name!r} is not a tensor of known shape",
                            hint="Kiln supports models that return tensors")
        try:
            shape = tuple(int(d) for d in sinfo.shape.values)
        except TypeError:
            raise KilnError("compile_failed", f"output {name!r} has a data-dependent shape "
                            f"{list(sinfo.shape.values)}", hint="static output shapes only, "
                            "for now") from None
        out.append(TensorInfo(name, shape, str(sinfo.dtype)))
    return out


def frontend_failed(what: str, exc: Exception) -> KilnError:
    """A frontend's exception as one ``unsupported_operator`` line."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else type(exc).__name__
    return KilnError("unsupported_operator", f"{what}: the converter failed: {last[:400]}",
                     hint="the model uses an operator or attribute TVM 0.27 cannot convert; "
                          "simplify the model around it, or export to ONNX and compile that")
