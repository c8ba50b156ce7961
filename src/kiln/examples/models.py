"""Small seeded ONNX models (opset 17) for the quick start, the tests and the benchmarks.

Nothing here is committed as a binary: every model is built from a seed.
"""

from __future__ import annotations

import numpy as np

OPSET = 17


def _helpers():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    return onnx, TensorProto, helper, numpy_helper


class _Builder:
    def __init__(self, seed: int) -> None:
        self.onnx, self.tp, self.h, self.nh = _helpers()
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.n = [], [], 0

    def weight(self, shape, scale=None, name=None) -> str:
        name = name or f"w{len(self.inits)}"
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])
        std = scale if scale is not None else 1.0 / np.sqrt(max(fan_in, 1))
        arr = (self.rng.standard_normal(shape) * std).astype(np.float32)
        self.inits.append(self.nh.from_array(arr, name))
        return name

    def const(self, arr, name=None) -> str:
        name = name or f"c{len(self.inits)}"
        self.inits.append(self.nh.from_array(np.asarray(arr), name))
        return name

    def op(self, op_type, inputs, n_out=1, **attrs):
        outs = [f"t{self.n + i}" for i in range(n_out)]
        self.n += n_out
        self.nodes.append(self.h.make_node(op_type, inputs, outs, name=f"{op_type}_{self.n}", **attrs))
        return outs[0] if n_out == 1 else outs

    def model(self, inputs, outputs, name="kiln_example"):
        graph = self.h.make_graph(self.nodes, name, inputs, outputs, self.inits)
        m = self.h.make_model(graph, opset_imports=[self.h.make_opsetid("", OPSET)],
                              producer_name="kiln.examples")
        m.ir_version = 8
        self.onnx.checker.check_model(m, full_check=True)
        return m

    def io(self, name, shape, elem=None):
        return self.h.make_tensor_value_info(name, elem or self.tp.FLOAT, shape)

    def bn(self, x, c):
        return self.op("BatchNormalization", [x, self.const(1 + 0.1 * self.rng.standard_normal(c).astype(np.float32)),
                                              self.const(0.1 * self.rng.standard_normal(c).astype(np.float32)),
                                              self.const(0.1 * self.rng.standard_normal(c).astype(np.float32)),
                                              self.const((1 + 0.1 * self.rng.random(c)).astype(np.float32))])


def cnn(seed: int = 0, size: int = 32, classes: int = 10):
    """Conv-BN-ReLU-MaxPool x2, global pool, Gemm, Softmax. Input ``x`` [1, 3, size, size]."""
    b = _Builder(seed)
    t = b.op("Conv", ["x", b.weight((16, 3, 3, 3)), b.weight((16,), 0.1)], pads=[1, 1, 1, 1])
    t = b.op("MaxPool", [b.op("Relu", [b.bn(t, 16)])], kernel_shape=[2, 2], strides=[2, 2])
    t = b.op("Conv", [t, b.weight((32, 16, 3, 3)), b.weight((32,), 0.1)], pads=[1, 1, 1, 1])
    t = b.op("GlobalAveragePool", [b.op("Relu", [b.bn(t, 32)])])
    t = b.op("Gemm", [b.op("Flatten", [t]), b.weight((classes, 32)), b.weight((classes,), 0.1)],
             transB=1)
    b.nodes.append(b.h.make_node("Softmax", [t], ["y"], axis=-1, name="softmax"))
    return b.model([b.io("x", [1, 3, size, size])], [b.io("y", [1, classes])])


def depthwise_separable(seed: int = 0, size: int = 32, classes: int = 10):
    """MobileNet-style: stem conv, depthwise 3x3 + pointwise 1x1 (ReLU6) blocks, residual add."""
    b = _Builder(seed)
    t = b.op("Conv", ["x", b.weight((16, 3, 3, 3)), b.weight((16,), 0.1)], pads=[1, 1, 1, 1],
             strides=[2, 2])
    t = b.op("Clip", [b.bn(t, 16), b.const(np.float32(0)), b.const(np.float32(6))])
    for _ in range(2):
        d = b.op("Conv", [t, b.weight((16, 1, 3, 3)), b.weight((16,), 0.1)], pads=[1, 1, 1, 1],
                 group=16)
        d = b.op("Clip", [b.bn(d, 16), b.const(np.float32(0)), b.const(np.float32(6))])
        p = b.op("Conv", [d, b.weight((16, 16, 1, 1)), b.weight((16,), 0.1)])
        t = b.op("Add", [t, b.bn(p, 16)])
    t = b.op("Flatten", [b.op("GlobalAveragePool", [t])])
    b.nodes.append(b.h.make_node("Gemm", [t, b.weight((classes, 16)), b.weight((classes,), 0.1)],
                                 ["logits"], transB=1, name="head"))
    return b.model([b.io("x", [1, 3, size, size])], [b.io("logits", [1, classes])])


def transformer_block(seed: int = 0, seq: int = 16, hidden: int = 32, heads: int = 4):
    """Pre-LN encoder block: LayerNorm, multi-head self-attention, residual, GELU MLP, residual."""
    b = _Builder(seed)
    hd = hidden // heads

    def ln(x):
        return b.op("LayerNormalization", [x, b.const(np.ones(hidden, np.float32)),
                                           b.const(np.zeros(hidden, np.float32))], axis=-1)

    def heads_of(x):  # [1, seq, hidden] -> [1, heads, seq, hd]
        r = b.op("Reshape", [x, b.const(np.array([1, seq, heads, hd], np.int64))])
        return b.op("Transpose", [r], perm=[0, 2, 1, 3])

    h = ln("x")
    q, k, v = (heads_of(b.op("MatMul", [h, b.weight((hidden, hidden))])) for _ in range(3))
    s = b.op("Mul", [b.op("MatMul", [q, b.op("Transpose", [k], perm=[0, 1, 3, 2])]),
                     b.const(np.float32(1 / np.sqrt(hd)))])
    a = b.op("MatMul", [b.op("Softmax", [s], axis=-1), v])
    a = b.op("Reshape", [b.op("Transpose", [a], perm=[0, 2, 1, 3]),
                         b.const(np.array([1, seq, hidden], np.int64))])
    x1 = b.op("Add", ["x", b.op("MatMul", [a, b.weight((hidden, hidden))])])
    m = b.op("Add", [b.op("MatMul", [ln(x1), b.weight((hidden, 4 * hidden))]),
                     b.weight((4 * hidden,), 0.1)])
    g = b.op("Mul", [b.op("Mul", [m, b.const(np.float32(0.5))]),
                     b.op("Add", [b.op("Erf", [b.op("Div", [m, b.const(np.float32(np.sqrt(2)))])]),
                                  b.const(np.float32(1))])])
    b.nodes.append(b.h.make_node("Add", [x1, b.op("MatMul", [g, b.weight((4 * hidden, hidden))])],
                                 ["y"], name="residual2"))
    return b.model([b.io("x", [1, seq, hidden])], [b.io("y", [1, seq, hidden])])


def mlp(seed: int = 0, features: int = 64, hidden: int = 128, classes: int = 8, batch: int = 1):
    """Two Gemm+ReLU layers and a head, two outputs: logits and probabilities."""
    b = _Builder(seed)
    t = b.op("Relu", [b.op("Gemm", ["x", b.weight((hidden, features)), b.weight((hidden,), 0.1)],
                           transB=1)])
    t = b.op("Relu", [b.op("Gemm", [t, b.weight((hidden, hidden)), b.weight((hidden,), 0.1)],
                           transB=1)])
    b.nodes.append(b.h.make_node("Gemm", [t, b.weight((classes, hidden)), b.weight((classes,), 0.1)],
                                 ["logits"], transB=1, name="head"))
    b.nodes.append(b.h.make_node("Softmax", ["logits"], ["probs"], axis=-1, name="softmax"))
    return b.model([b.io("x", [batch, features])],
                   [b.io("logits", [batch, classes]), b.io("probs", [batch, classes])])


MODELS = {"cnn": cnn, "depthwise_separable": depthwise_separable,
          "transformer_block": transformer_block, "mlp": mlp}
