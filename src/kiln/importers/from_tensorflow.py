"""TensorFlow / Keras -> TFLite (TF's own converter) -> Relax (``from_tflite``).

SavedModel folders (``serving_default`` signature), Keras 3 ``.keras`` files (loaded with
``safe_mode=True``: no Lambda bytecode is deserialized) and legacy ``.h5`` files. The model is
traced at the bound input shapes and converted to a float32 TFLite flatbuffer in the work
folder; TVM's TFLite frontend then reads it. The accuracy gate runs TensorFlow / Keras itself.
Needs ``pip install 'kilnml[tensorflow]'``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from kiln.errors import KilnError
from kiln.importers.base import ImportedModel
from kiln.signature import ModelSignature, TensorInfo

_INSTALL = "pip install 'kilnml[tensorflow]' (tensorflow-cpu, tflite, ai-edge-litert)"


def require_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tensorflow as tf
    except ImportError:
        raise KilnError("framework_not_installed", "TensorFlow / Keras models need tensorflow, "
                        "which is not installed", hint=_INSTALL) from None
    return tf


def load_callable(path: Path):
    """(function of positional tensors -> tuple, inputs [(name, dims, dtype)], output names, owner)."""
    tf = require_tf()
    if path.is_dir():
        return _saved_model(tf, path)
    import keras

    try:
        model = keras.models.load_model(str(path), compile=False, safe_mode=True)
    except Exception as exc:
        lines = [ln for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
        raise KilnError("invalid_model", f"{path.name}: Keras cannot load the model (safe "
                        f"mode): {lines[0][:300]}", hint="save it again with model.save("
                        "'model.keras'); Lambda layers are refused in safe mode") from None
    inputs = [(t.name, [d if d is not None else "?" for d in t.shape], str(t.dtype))
              for t in model.inputs]
    outs = list(getattr(model, "output_names", None) or
                [f"output{i}" for i in range(len(model.outputs))])

    def call(*xs):
        y = model(list(xs) if len(xs) > 1 else xs[0], training=False)
        return tuple(y) if isinstance(y, (list, tuple)) else (y,)

    return call, inputs, outs, model


def _saved_model(tf, path: Path):
    try:
        loaded = tf.saved_model.load(str(path))
        sig = loaded.signatures["serving_default"]
    except Exception as exc:
        raise KilnError("invalid_model", f"{path.name}: not a loadable SavedModel with a "
                        f"serving_default signature: {str(exc).splitlines()[0][:300]}",
                        hint="save with tf.saved_model.save(model, dir) or model.export(dir)") from None
    specs = sig.structured_input_signature[1]
    names = sorted(specs)
    inputs = [(n, [d if d is not None else "?" for d in specs[n].shape.as_list()],
               specs[n].dtype.name) for n in names]
    outs = sorted(sig.structured_outputs)

    def call(*xs):
        y = sig(**dict(zip(names, xs)))
        return tuple(y[k] for k in outs)

    return call, inputs, outs, loaded


def import_tensorflow(path: Path, framework: str, *, input_shapes=None,
                      workdir: Path | None = None) -> ImportedModel:
    from kiln.importers.from_tflite import import_tflite

    tf = require_tf()
    tfl, resolved, outs, derived = convert_to_tflite(path, input_shapes=input_shapes,
                                                     workdir=workdir)
    imported = import_tflite(tfl)
    sig = imported.signature
    if len(sig.outputs) != len(outs):
        outs = [o.name for o in sig.outputs]
    signature = ModelSignature(
        tuple(TensorInfo(t.name, r.shape, r.dtype) for t, r in zip(resolved, sig.inputs)),
        tuple(TensorInfo(n, o.shape, o.dtype) for n, o in zip(outs, sig.outputs)))
    kind = "savedmodel" if path.is_dir() else path.suffix.lstrip(".")
    return dataclasses.replace(imported, signature=signature, framework=framework, source=path,
                               derived_shapes=derived, framework_version=tf.__version__,
                               source_info={"format": kind, "route": "TFLiteConverter -> "
                                            "tflite -> relax", "float_io": True})


def convert_to_tflite(path: Path, *, input_shapes=None, workdir: Path | None = None):
    """The model traced at the bound shapes and converted by TF's own TFLiteConverter to a
    float32 ``.tflite`` in ``workdir``: (that file, the bound inputs, output names, derived
    shapes). Never imports tvm (the Ethos-U55 flow quantizes this file for Vela)."""
    from kiln.importers.from_onnx import bind_input_shapes

    tf = require_tf()
    call, inputs, outs, owner = load_callable(path)
    resolved, derived = bind_input_shapes(inputs, _positional(inputs, input_shapes))
    specs = [tf.TensorSpec(t.shape, t.dtype, name=t.name) for t in resolved]
    try:
        from tensorflow.python.framework.convert_to_constants import (
            convert_variables_to_constants_v2,
        )

        # variables frozen into constants: TVM reads no TFLite resource variables
        concrete = convert_variables_to_constants_v2(tf.function(call).get_concrete_function(*specs))
        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], owner)
        flatbuffer = converter.convert()
    except Exception as exc:
        lines = [ln for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
        raise KilnError("unsupported_operator", f"{path.name}: TensorFlow's TFLite converter "
                        f"failed: {lines[-1][:300]}", hint="the model uses TF ops without a "
                        "TFLite builtin; export to ONNX with tf2onnx and compile that") from None
    folder = Path(workdir) if workdir else path.parent
    tfl = folder / f"{path.name.split('.')[0] or 'model'}.converted.tflite"
    tfl.write_bytes(flatbuffer)
    return tfl, resolved, outs, derived


def _positional(inputs, given):
    if not given:
        return given
    names = [n for n, _, _ in inputs]
    if not set(given) <= set(names) and list(given) == [f"input{i}" for i in range(len(given))] \
            and len(given) == len(names):
        return dict(zip(names, given.values()))
    return given


def reference_outputs(path: Path, inputs: dict) -> list:
    """TensorFlow / Keras itself on ``inputs`` (in signature order)."""
    import numpy as np

    tf = require_tf()
    call, _, _, _ = load_callable(path)
    outs = call(*[tf.constant(v) for v in inputs.values()])
    return [np.asarray(o) for o in outs]
