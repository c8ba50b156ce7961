"""Post-training int8 quantization: calibration sets, ONNX Runtime's static QDQ quantizer,
power-of-two scales for accelerators, and the int8 accuracy figures."""

from kiln.quantize.calibration import load_calibration
from kiln.quantize.ort_quant import QuantizedModel, is_qdq_model, quantize_onnx

__all__ = ["QuantizedModel", "is_qdq_model", "load_calibration", "quantize_onnx"]
