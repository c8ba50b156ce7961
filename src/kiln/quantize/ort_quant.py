"""Static int8 quantization of an ONNX model with ONNX Runtime (QDQ format).

ONNX Runtime's ``quantize_static`` runs the float model on the calibration set, collects each
activation's range (min-max, entropy or percentile) and inserts QuantizeLinear /
DequantizeLinear pairs around the operators it knows how to quantize; weights become int8
initializers (per output channel by default). The QDQ model is what Kiln compiles.
"""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kiln.errors import KilnError
from kiln.options import QuantizeOptions

_QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class QuantizedModel:
    path: Path
    #: facts for the manifest: quantizer, activation/weight types, calibration, op counts
    info: dict = field(default_factory=dict)


def is_qdq_model(model) -> bool:
    """Whether an ONNX ModelProto already holds QuantizeLinear / DequantizeLinear nodes."""
    return any(n.op_type in _QDQ_OPS for n in model.graph.node)


def quantize_onnx(source: Path, samples: list[dict[str, np.ndarray]], qopts: QuantizeOptions,
                  workdir: Path, *, nodes: list[str] | None = None,
                  name: str = "model.int8.onnx") -> QuantizedModel:
    """Quantize ``source`` (float ONNX) with ``samples``; ``nodes`` limits which nodes are
    quantized (an accelerator's share). Raises ``nothing_to_quantize`` when no op was."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(samples)

        def get_next(self):
            return next(self._it, None)

    prepared = preprocess(source, workdir)
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[qopts.method]
    act = QuantType.QInt8 if qopts.symmetric else QuantType.QUInt8
    extra = {"ActivationSymmetric": qopts.symmetric, "WeightSymmetric": True}
    if qopts.method == "percentile":
        extra["CalibPercentile"] = qopts.percentile
    out = workdir / name
    _quiet_onnxruntime()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # calibrators print progress
            quantize_static(str(prepared), str(out), _Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=qopts.per_channel, activation_type=act,
                            weight_type=QuantType.QInt8, calibrate_method=method,
                            nodes_to_quantize=nodes, extra_options=extra)
    except KilnError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KilnError("quantization_failed", f"onnxruntime quantize_static failed: {first}",
                        hint="try --calibration-method minmax, or quantize the model yourself "
                             "and compile the QDQ ONNX file") from None
    model = onnx.load(str(out))
    ops = Counter(n.op_type for n in model.graph.node)
    quantized = sorted(_quantized_ops(model))
    if ops["DequantizeLinear"] == 0:
        kinds = sorted({n.op_type for n in onnx.load(str(source)).graph.node})
        raise KilnError("nothing_to_quantize", f"{source.name} has no operator int8 "
                        f"quantization applies to (its ops: {', '.join(kinds)})",
                        hint="int8 quantizes Conv, MatMul, Gemm, pooling, Add, Concat ...; "
                             "compile this model without --quantize")
    info = {"quantizer": "onnxruntime.quantization.quantize_static", "format": "QDQ",
            "activations": "int8 symmetric" if qopts.symmetric else "uint8 asymmetric",
            "weights": "int8 symmetric " + ("per-channel" if qopts.per_channel else "per-tensor"),
            "calibration_method": qopts.method, "calibration_samples": len(samples),
            "quantized_ops": quantized,
            "qdq_nodes": ops["QuantizeLinear"] + ops["DequantizeLinear"]}
    return QuantizedModel(out, info)


def preprocess(source: Path, workdir: Path) -> Path:
    """ONNX Runtime's recommended pre-pass (shape inference, BatchNorm folded into Conv), so
    that the quantized graph has one QDQ pair per real layer."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = workdir / "model.prep.onnx"
    try:
        quant_pre_process(str(source), str(out), skip_symbolic_shape=True)
    except Exception:  # the pre-pass is an optimisation; quantize the model as given
        return source
    return out


def _quantized_ops(model) -> set[str]:
    """Op types that read at least one dequantized tensor (they compute on int8 data)."""
    deq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.op_type for n in model.graph.node
            if n.op_type not in _QDQ_OPS and any(i in deq for i in n.input)}


def _quiet_onnxruntime() -> None:
    """ONNX Runtime's warnings (unused initializers the quantizer leaves) would break the
    one-line error contract on stderr; keep errors only."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
