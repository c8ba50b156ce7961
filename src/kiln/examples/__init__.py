"""Seeded example models. ``python -m kiln.examples OUT_DIR`` writes example.onnx and x.npy."""

from kiln.examples.models import MODELS, cnn, depthwise_separable, mlp, transformer_block

__all__ = ["MODELS", "cnn", "depthwise_separable", "mlp", "transformer_block"]
