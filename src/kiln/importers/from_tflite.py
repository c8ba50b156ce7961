"""TFLite flatbuffers -> Relax through TVM 0.27's TFLite frontend (float32 and int8).

Needs the ``tflite`` flatbuffer package (``pip install 'kilnml[tflite]'``); the accuracy gate's
reference is the LiteRT interpreter (``ai-edge-litert``).
"""

from __future__ import annotations

from pathlib import Path

from kiln.errors import KilnError
from kiln.importers.base import ImportedModel
from kiln.importers.relax_io import frontend_failed, output_infos
from kiln.signature import ModelSignature, TensorInfo

_INSTALL = "pip install 'kilnml[tflite]' (the tflite and ai-edge-litert packages)"


def _tflite_model(path: Path):
    try:
        import tflite
    except ImportError:
        raise KilnError("framework_not_installed", "TFLite models need the tflite package",
                        hint=_INSTALL) from None
    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise KilnError("invalid_model", f"{path.name} is not a TFLite flatbuffer (no TFL3 "
                        "identifier)", hint="convert with tf.lite.TFLiteConverter")
    try:
        model = tflite.Model.GetRootAsModel(data, 0)
        if model.SubgraphsLength() < 1:
            raise ValueError("no subgraph")
    except Exception as exc:
        raise KilnError("invalid_model", f"{path.name} cannot be read as TFLite: {exc}",
                        hint="convert the model again with tf.lite.TFLiteConverter") from None
    return model


def litert_interpreter(path: str):
    """A LiteRT interpreter with its tensors allocated (the accuracy gate's reference)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise KilnError("framework_not_installed", "the TFLite reference needs ai-edge-litert",
                        hint=_INSTALL) from None
    interp = Interpreter(model_path=path, num_threads=1)
    interp.allocate_tensors()
    return interp


def _io(model, which: str) -> list[tuple[str, list[int], str]]:
    from tvm.relax.frontend.tflite.tflite_frontend import _decode_type, get_tensor_name

    sub = model.Subgraphs(0)
    idx = sub.InputsAsNumpy() if which == "in" else sub.OutputsAsNumpy()
    out = []
    for i in idx:
        t = sub.Tensors(int(i))
        sig = t.ShapeSignatureAsNumpy() if t.ShapeSignatureLength() else t.ShapeAsNumpy()
        dims = [int(d) if d > 0 else "?" for d in sig]
        out.append((get_tensor_name(sub, int(i)), dims, _decode_type(t.Type())))
    return out


def import_tflite(path: Path, *, input_shapes=None) -> ImportedModel:
    """Import a ``.tflite`` file; ``input_shapes`` binds dynamic (-1) dimensions."""
    from kiln.importers.from_onnx import bind_input_shapes

    model = _tflite_model(path)
    inputs, derived = bind_input_shapes(_io(model, "in"), _by_position(model, input_shapes))
    from tvm.relax.frontend.tflite import from_tflite

    try:
        mod = from_tflite(model, shape_dict={t.name: t.shape for t in inputs},
                          dtype_dict={t.name: t.dtype for t in inputs})
    except Exception as exc:
        raise frontend_failed(path.name, exc) from None
    mod = _bind_params(mod)
    names = [n for n, _, _ in _io(model, "out")]
    quantized = any(t.dtype in ("int8", "uint8") for t in inputs)
    return ImportedModel(mod=mod, signature=ModelSignature(tuple(inputs),
                                                           tuple(output_infos(mod, names))),
                         framework="tflite", source=path, derived_shapes=derived,
                         framework_version=_tflite_version(),
                         source_info={"quantized_io": quantized, "route": "tflite -> relax"})


def _bind_params(mod):
    """Drop the frontend's ``params`` attribute: TVM 0.27 already embeds the weights as constants
    (the function takes only the model inputs); if a version passes them as parameters, bind them."""
    from tvm import relax

    func = mod["main"]
    attrs = func.attrs or {}
    params = list(attrs["params"]) if "params" in attrs else []
    n_in = int(attrs["num_input"]) if "num_input" in attrs else len(func.params)
    if params and len(func.params) == n_in + len(params):
        func = func.bind_params({func.params[n_in + i]: relax.const(p) for i, p in enumerate(params)})
    if "params" in attrs:
        func = func.without_attr("params")
    mod["main"] = func
    return mod


def _by_position(model, given):
    """Neo's list form (input0, input1 ...) maps to the model's inputs in order."""
    if not given:
        return given
    names = [n for n, _, _ in _io(model, "in")]
    positional = [f"input{i}" for i in range(len(given))]
    if list(given) == positional and not set(given) <= set(names) and len(given) == len(names):
        return dict(zip(names, given.values()))
    return given


def _tflite_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tflite")
    except PackageNotFoundError:
        return None
