"""int8 TFLite for Arm Ethos-U: quantize a float32 ``.tflite`` with the calibration set
(TensorFlow Lite's post-training calibrator, the one behind ``TFLiteConverter`` with a
representative dataset) and measure the int8 model against the float one under LiteRT.

Ethos-U compiles full-integer TFLite (Vela), so this is the int8 path of host-less Ethos-U55
targets; ONNX models keep using ``ort_quant.py``. Never imports tvm.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from kiln.errors import KilnError
from kiln.quantize.accuracy import figures
from kiln.signature import ModelSignature, TensorInfo

QUANTIZER = ("TensorFlow Lite post-training calibrator (min-max over the calibration set): "
             "int8 per-channel symmetric weights, int8 asymmetric activations, int8 input and "
             "output; ops TFLite cannot quantize stay float32 (they run on the CPU)")


def tflite_signature(model: Path) -> ModelSignature:
    """Inputs and outputs of a ``.tflite`` as LiteRT sees them."""
    interp = _interpreter(model)
    return ModelSignature(*(tuple(TensorInfo(d["name"], tuple(int(x) for x in d["shape"]),
                                             np.dtype(d["dtype"]).name) for d in details)
                            for details in (interp.get_input_details(),
                                            interp.get_output_details())))


def is_int8_tflite(model: Path) -> bool:
    """Whether every input of the ``.tflite`` is int8 / uint8 (a full-integer model)."""
    return all(np.dtype(d["dtype"]).kind in "iu" and d["quantization"][0] != 0
               for d in _interpreter(model).get_input_details())


def quantize_tflite(float_model: Path, samples: list[dict], names: list[str],
                    workdir: Path) -> Path:
    """``float_model`` quantized to int8 with ``samples`` (inputs in ``names`` order)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tensorflow as tf
        from tensorflow.lite.python.optimize import calibrator
    except ImportError:
        raise KilnError("framework_not_installed", "int8 TFLite quantization needs tensorflow",
                        hint="pip install 'kilnml[tensorflow]'") from None

    def dataset():
        for s in samples:
            yield [np.asarray(s[n]) for n in names]

    try:
        q = calibrator.Calibrator(float_model.read_bytes()).calibrate_and_quantize(
            dataset, tf.int8, tf.int8, True)
    except Exception as exc:
        lines = [ln for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
        raise KilnError("quantization_failed", f"TFLite's calibrator failed on "
                        f"{float_model.name}: {lines[-1][:300]}",
                        hint="quantize the model yourself (TFLiteConverter with a "
                             "representative_dataset) and compile the int8 .tflite") from None
    out = Path(workdir) / f"{float_model.name.split('.')[0] or 'model'}.int8.tflite"
    out.write_bytes(q)
    return out


def run_tflite(model: Path, samples: list[dict], names: list[str]) -> list[np.ndarray]:
    """Each output of ``model`` stacked over ``samples`` (float inputs quantized with the
    input's scale and zero point, int outputs dequantized), under LiteRT's CPU kernels."""
    interp = _interpreter(model)
    ins, outs = interp.get_input_details(), interp.get_output_details()
    runs = []
    for s in samples:
        for d, n in zip(ins, names):
            interp.set_tensor(d["index"], _to_input(np.asarray(s[n]), d))
        interp.invoke()
        runs.append([_from_output(interp.get_tensor(d["index"]), d) for d in outs])
    return [np.stack([r[i] for r in runs]) for i in range(len(outs))]


def int8_vs_fp32(float_model: Path, int8_model: Path, samples: list[dict], names: list[str],
                 out_names: list[str], limit: int = 8) -> dict:
    """LiteRT running the int8 model against the float model on up to ``limit`` samples."""
    from ai_edge_litert import __version__ as litert_version

    use = samples[:limit]
    ref, got = run_tflite(float_model, use, names), run_tflite(int8_model, use, names)
    return {"runtime": f"LiteRT {litert_version} (ai-edge-litert) CPU kernels",
            "samples": len(use),
            "outputs": [figures(n, g, r) for n, g, r in zip(out_names, got, ref)]}


def _to_input(x: np.ndarray, d: dict) -> np.ndarray:
    dtype = np.dtype(d["dtype"])
    x = x.reshape(d["shape"])
    scale, zero = d["quantization"]
    if dtype.kind in "iu" and scale and x.dtype.kind == "f":
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)
    return x.astype(dtype)


def _from_output(y: np.ndarray, d: dict) -> np.ndarray:
    scale, zero = d["quantization"]
    if np.dtype(d["dtype"]).kind in "iu" and scale:
        return (y.astype(np.float32) - zero) * np.float32(scale)
    return y.copy()


def _interpreter(model: Path):
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        raise KilnError("framework_not_installed", "running .tflite models needs LiteRT",
                        hint="pip install 'kilnml[tensorflow]' (ai-edge-litert)") from None
    plain = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES  # no XNNPACK: the reference kernels
    interp = Interpreter(model_path=str(model), experimental_op_resolver_type=plain)
    interp.allocate_tensors()
    return interp
