"""Where int8 enters a compile: quantize a float ONNX model with a calibration set, or take a
model that is already quantized (QDQ ONNX). The driver compiles ``plan.model`` and the accuracy
gate compares the artifact with ``plan.reference`` (the float model when there is one)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kiln.errors import KilnError
from kiln.options import CompileOptions
from kiln.signature import ModelSignature, TensorInfo

#: what TVM 0.27's Relax ONNX frontend makes of QDQ (see docs/int8.md)
ARITHMETIC = ("simulated int8: TVM's Relax ONNX frontend turns QuantizeLinear/DequantizeLinear "
              "into relax quantize/dequantize, so weights and activations are rounded to int8 "
              "exactly as on an int8 engine, but convolutions and matmuls compute in float32 on "
              "the dequantized values (no int8 kernels)")


@dataclass(frozen=True)
class Int8Plan:
    model: Path        # the file Kiln compiles (QDQ ONNX)
    reference: Path    # the file the accuracy gate runs (the float model, else the QDQ one)
    info: dict = field(default_factory=dict)
    #: inputs for the accuracy gate when none are given (the first calibration sample)
    gate_inputs: dict | None = None
    #: the calibration samples (partitioning quantizes accelerator segments with them)
    samples: list | None = None


def plan_int8(model: Path, framework: str | None, options: CompileOptions,
              workdir: Path) -> Int8Plan | None:
    """The int8 plan for this compile, or None when the model is neither quantized nor asked
    to be. ``--quantize`` needs an ONNX model; a pre-quantized QDQ ONNX needs no calibration."""
    qopts = options.quantize
    is_onnx = (framework or _sniff(model)) == "onnx"
    if qopts is None:
        if is_onnx and _is_qdq(model):
            return Int8Plan(model, model, {"source": "pre-quantized QDQ ONNX",
                                           "reference": "the QDQ model under ONNX Runtime",
                                           "arithmetic": ARITHMETIC})
        return None
    if not is_onnx:
        raise KilnError("quantize_input_unsupported", f"--quantize int8 takes an ONNX model; "
                        f"{model.name} is {framework or 'not ONNX'}",
                        hint="export the model to ONNX (torch.onnx.export, tf2onnx), or give an "
                             "int8 .tflite, which compiles as it is")
    if _is_qdq(model):
        raise KilnError("invalid_quantize_options", f"{model.name} is already quantized (it has "
                        "QuantizeLinear/DequantizeLinear nodes)",
                        hint="compile it without --quantize/--calibration")
    from kiln.quantize.calibration import load_calibration
    from kiln.quantize.ort_quant import quantize_onnx

    samples = load_calibration(Path(qopts.calibration), onnx_signature(model, options))
    q = quantize_onnx(model, samples, qopts, workdir)
    from kiln.quantize.accuracy import ort_int8_vs_fp32

    info = {"source": "quantized by Kiln", **q.info,
            "calibration_file": Path(qopts.calibration).name,
            "reference": "the float32 model under ONNX Runtime", "arithmetic": ARITHMETIC,
            "gate_inputs": "calibration sample 0 unless --sample-inputs",
            "onnxruntime_int8_vs_fp32": ort_int8_vs_fp32(model, q.path, samples)}
    return Int8Plan(q.path, model, info, gate_inputs=samples[0], samples=samples)


def onnx_signature(model: Path, options: CompileOptions) -> ModelSignature:
    """Inputs and outputs of an ONNX model as ONNX Runtime sees them (``--input-shape`` wins)."""
    import onnxruntime as ort

    from kiln.importers.from_onnx import load_onnx

    load_onnx(model)  # invalid_model with the importer's message
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    given = options.shape_dict() or {}
    ins = tuple(TensorInfo(i.name, tuple(given.get(i.name) or _dims(i.shape, i.name)),
                           _dtype(i.type)) for i in sess.get_inputs())
    outs = tuple(TensorInfo(o.name, tuple(d if isinstance(d, int) else -1 for d in o.shape),
                            _dtype(o.type)) for o in sess.get_outputs())
    return ModelSignature(ins, outs)


def _dims(shape, name: str) -> list[int]:
    if not all(isinstance(d, int) and d > 0 for d in shape):
        raise KilnError("invalid_input_shape", f"input {name!r} has a dynamic shape {shape}",
                        hint='give --input-shape \'{"%s": [1, 3, 224, 224]}\'' % name)
    return list(shape)


def _dtype(ort_type: str) -> str:
    return {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(int8)": "int8",
            "tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(float16)": "float16",
            "tensor(double)": "float64", "tensor(bool)": "bool"}.get(ort_type, ort_type)


def _sniff(model: Path) -> str | None:
    from kiln.importers.detect import sniff

    return sniff(model)


def _is_qdq(model: Path) -> bool:
    """Whether the ONNX file already holds QDQ nodes (read without external data or the
    checker: the importer reports a broken file with its own message)."""
    if not model.is_file():
        return False
    import onnx

    from kiln.quantize.ort_quant import is_qdq_model

    try:
        return is_qdq_model(onnx.load(str(model), load_external_data=False))
    except Exception:
        return False
