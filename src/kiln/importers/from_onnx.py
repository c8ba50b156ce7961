"""ONNX -> Relax, with every problem reported at once."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from kiln.errors import KilnError
from kiln.importers.base import ImportedModel
from kiln.importers.onnx_fold import fold_shape_arithmetic
from kiln.signature import ModelSignature, TensorInfo

#: ONNX TensorProto element types Kiln can carry across the artifact boundary.
_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32",
                7: "int64", 9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64"}
_DEFAULT_DOMAINS = ("", "ai.onnx")


def load_onnx(path: Path):
    """Read and check an ONNX file; any failure is ``invalid_model``."""
    import onnx

    if path.stat().st_size == 0:
        raise KilnError("invalid_model", f"{path} is empty", hint="give an .onnx file")
    try:
        # by path, so that tensors stored as external data beside the file are found
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise KilnError("invalid_model", f"{path} is not an ONNX model (or is truncated): "
                        f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                        hint="export the model again with torch.onnx.export or tf2onnx") from None
    if not model.graph.node or not model.opset_import:
        raise KilnError("invalid_model", f"{path} holds no ONNX graph (no nodes or no opset)",
                        hint="is this file an ONNX model? export it again")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KilnError("invalid_model", f"{path} fails the ONNX checker: {first}",
                        hint="the file may be truncated or hand-edited; export it again") from None
    return model


def _opset(model) -> int:
    for imp in model.opset_import:
        if imp.domain in _DEFAULT_DOMAINS:
            return int(imp.version)
    return 0


def check_operators(model, path: Path) -> None:
    """Raise one ``unsupported_operator`` error naming every op (and node) Kiln cannot convert."""
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    known = _get_convert_map()
    missing: dict[str, list[str]] = {}
    for i, node in enumerate(model.graph.node):
        op = node.op_type if node.domain in _DEFAULT_DOMAINS else f"{node.domain}.{node.op_type}"
        if node.domain not in _DEFAULT_DOMAINS or node.op_type not in known:
            missing.setdefault(op, []).append(node.name or f"#{i}")
    if missing:
        parts = [f"{op} (nodes: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''})"
                 for op, names in sorted(missing.items())]
        raise KilnError("unsupported_operator",
                        f"{path.name}: {len(missing)} operator type(s) cannot be compiled: "
                        + "; ".join(parts),
                        hint="replace these operators before export, or split the model around "
                             "them; `kiln` lists no partial compilation yet")


def _dtype(elem_type: int, what: str) -> str:
    if elem_type not in _ONNX_DTYPES:
        raise KilnError("invalid_model", f"{what} has ONNX element type {elem_type}, which Kiln "
                        "does not support", hint="use float32, float16 or an integer type")
    return _ONNX_DTYPES[elem_type]


def _graph_inputs(model) -> list[tuple[str, list[int | str], str]]:
    inits = {t.name for t in model.graph.initializer}
    out = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?")
                for d in tt.shape.dim]
        out.append((vi.name, dims, _dtype(tt.elem_type, f"input {vi.name!r}")))
    return out


def resolve_shapes(model, given: dict[str, list[int]] | None) -> tuple[list[TensorInfo], bool]:
    """Bind every input's shape, from ``given`` (Neo's DataInputConfig) or the model."""
    return bind_input_shapes(_graph_inputs(model), given)


def bind_input_shapes(inputs: list[tuple[str, list[int | str], str]],
                      given: dict[str, list[int]] | None) -> tuple[list[TensorInfo], bool]:
    """Bind ``(name, dims, dtype)`` inputs (a str dim is dynamic) from ``given`` or the model."""
    names = [n for n, _, _ in inputs]
    given = dict(given or {})
    unknown = [n for n in given if n not in names]
    if unknown:
        raise KilnError("shape_mismatch", f"--input-shape names {unknown} but the model's inputs "
                        f"are {names}", hint="use the model's input names")
    resolved, dynamic = [], {}
    for name, dims, dtype in inputs:
        if name in given:
            shape = given[name]
            if len(shape) != len(dims) or any(isinstance(d, int) and d != s for d, s in zip(dims, shape)):
                raise KilnError("shape_mismatch", f"input {name!r} has shape {dims} in the model, "
                                f"but --input-shape gives {shape}",
                                hint="give a shape of the same rank that keeps the fixed dimensions")
            resolved.append(TensorInfo(name, tuple(shape), dtype))
        elif all(isinstance(d, int) for d in dims):
            resolved.append(TensorInfo(name, tuple(dims), dtype))
        else:
            dynamic[name] = [d if isinstance(d, int) else 1 for d in dims]
            resolved.append(TensorInfo(name, (), dtype))
    if dynamic:
        desc = ", ".join(f"{n} {dims}" for n, dims, _ in inputs if n in dynamic)
        raise KilnError("invalid_input_shape", f"the model has dynamic input dimensions: {desc}",
                        hint=f"fix them with --input-shape '{json.dumps(dynamic)}'")
    return resolved, not given


def _output_infos(model, mod) -> list[TensorInfo]:
    """The outputs of the Relax module, named as the ONNX graph names them."""
    import tvm

    from kiln.importers.relax_io import output_infos

    # TVM 0.27 merged StructInfo into Type: a function's return type is ``ret_ty``.
    ret = mod["main"].ret_ty
    produced = len(ret.fields) if isinstance(ret, tvm.ir.TupleType) else 1
    names = [o.name for o in model.graph.output]
    if produced != len(names):
        raise KilnError("compile_failed", f"the model declares {len(names)} outputs, Relax "
                        f"produced {produced}", hint="please report this model")
    return output_infos(mod, names)


@contextlib.contextmanager
def _kiln_converters():
    """TVM's ONNX converters, with Clip emitted as Relax ``maximum``/``minimum``.

    TVM 0.27 converts Clip (ReLU6) to opaque ``emit_te`` calls: layout conversion wraps them in
    two transposes and fusion cannot fold them into the conv before. As Relax ops they convert
    and fuse. NaN bounds keep ONNX's meaning (unbounded), as in TVM's converter.
    """
    import numpy as np
    from tvm import relax
    from tvm.relax.frontend.onnx import onnx_frontend as frontend

    class Clip(frontend.Clip):
        @classmethod
        def _impl_v1(cls, bb, inputs, attr, params):
            dtype = inputs[0].ty.dtype
            lo = relax.const(float(attr.get("min", -np.inf)), dtype)
            hi = relax.const(float(attr.get("max", np.inf)), dtype)
            return bb.emit(relax.op.minimum(bb.emit(relax.op.maximum(inputs[0], lo)), hi))

        @classmethod
        def _impl_v13(cls, bb, inputs, attr, params):
            out = inputs[0]
            if inputs[1] is not None:
                lo = cls._sanitize_nan_clip_bound(bb, inputs[1], for_min=True)
                out = bb.emit(relax.op.maximum(out, lo))
            if inputs[2] is not None:
                hi = cls._sanitize_nan_clip_bound(bb, inputs[2], for_min=False)
                out = bb.emit(relax.op.minimum(out, hi))
            return out

    original = frontend._get_convert_map
    frontend._get_convert_map = lambda: {**original(), "Clip": Clip}
    try:
        yield
    finally:
        frontend._get_convert_map = original


def import_onnx(path: Path, *, input_shapes=None) -> ImportedModel:
    """Import an ONNX file. ``input_shapes`` is a ``{name: [dims]}`` dict or None."""
    model = load_onnx(path)
    check_operators(model, path)
    inputs, derived = resolve_shapes(model, input_shapes)
    model = fold_shape_arithmetic(model, {t.name: t.shape for t in inputs})
    from tvm.relax.frontend.onnx import from_onnx

    try:
        with _kiln_converters():
            mod = from_onnx(model, shape_dict={t.name: list(t.shape) for t in inputs},
                            dtype_dict={t.name: t.dtype for t in inputs},
                            keep_params_in_input=False)
    except KilnError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise KilnError("unsupported_operator", f"{path.name}: the ONNX converter failed: "
                        f"{first[:400]}", hint="the operator's attributes or non-constant "
                        "parameters are not supported; fold constants (onnxsim) and retry") from None
    outputs = _output_infos(model, mod)
    return ImportedModel(mod=mod, signature=ModelSignature(tuple(inputs), tuple(outputs)),
                         framework="onnx", source=path, opset=_opset(model),
                         derived_shapes=derived)
