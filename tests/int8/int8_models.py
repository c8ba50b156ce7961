"""Seeded tiny models for the int8 tests (built here, never committed as binaries)."""

from __future__ import annotations

import numpy as np

from kiln.examples.models import _Builder

SIZE = 16


def small_cnn(seed: int = 0, softmax: bool = True):
    """Conv-ReLU, depthwise 3x3-ReLU, pointwise conv, residual Add, MaxPool, global pool,
    Gemm, then Softmax (the op DPU cannot run). Input ``x`` [1, 3, 16, 16]."""
    b = _Builder(seed)
    t = b.op("Relu", [b.op("Conv", ["x", b.weight((8, 3, 3, 3)), b.weight((8,), 0.1)],
                           pads=[1, 1, 1, 1])])
    d = b.op("Relu", [b.op("Conv", [t, b.weight((8, 1, 3, 3)), b.weight((8,), 0.1)],
                           pads=[1, 1, 1, 1], group=8)])
    p = b.op("Conv", [d, b.weight((8, 8, 1, 1)), b.weight((8,), 0.1)])
    t = b.op("MaxPool", [b.op("Add", [t, p])], kernel_shape=[2, 2], strides=[2, 2])
    t = b.op("Flatten", [b.op("GlobalAveragePool", [t])])
    out = "logits" if not softmax else None
    logits = b.op("Gemm", [t, b.weight((10, 8)), b.weight((10,), 0.1)], transB=1)
    if softmax:
        b.nodes.append(b.h.make_node("Softmax", [logits], ["y"], axis=-1, name="softmax"))
        return b.model([b.io("x", [1, 3, SIZE, SIZE])], [b.io("y", [1, 10])])
    b.nodes[-1].output[0] = out
    return b.model([b.io("x", [1, 3, SIZE, SIZE])], [b.io(out, [1, 10])])


def no_quantizable_op():
    """Exp then Sqrt: no operator ONNX Runtime's QDQ quantizer applies to."""
    b = _Builder(0)
    b.nodes.append(b.h.make_node("Sqrt", [b.op("Exp", ["x"])], ["y"], name="sqrt"))
    return b.model([b.io("x", [1, 10])], [b.io("y", [1, 10])])


def calibration(n: int = 16, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.uniform(0.0, 1.0, (n, 1, 3, SIZE, SIZE)).astype(np.float32)}


def write_fixture(root):
    """The small CNN as ``cnn.onnx`` and its 16-sample ``calib.npz`` under ``root``."""
    import onnx

    onnx.save(small_cnn(), root / "cnn.onnx")
    np.savez(root / "calib.npz", **calibration())
    return root


def mixed_ops(seed: int = 0):
    """Conv 3x3 -> Sigmoid -> Conv 9x9 -> Relu -> GlobalAveragePool on [1, 3, 8, 8]: DPU keeps
    the Sigmoid on the CPU, TIDL keeps the 9x9 convolution (kernels 1/3/5/7 only)."""
    b = _Builder(seed)
    t = b.op("Conv", ["x", b.weight((4, 3, 3, 3)), b.weight((4,), 0.1)], pads=[1, 1, 1, 1])
    t = b.op("Sigmoid", [t])
    t = b.op("Conv", [t, b.weight((4, 4, 9, 9)), b.weight((4,), 0.1)], pads=[4, 4, 4, 4])
    t = b.op("Relu", [t])
    b.nodes.append(b.h.make_node("GlobalAveragePool", [t], ["y"], name="gap"))
    return b.model([b.io("x", [1, 3, 8, 8])], [b.io("y", [1, 4, 1, 1])])
