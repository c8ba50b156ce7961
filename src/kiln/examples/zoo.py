"""Benchmark-sized seeded models (ImageNet-shaped CNNs, a BERT-style encoder, an MLP), built
with onnx.helper so that no weights are downloaded or committed. Random weights: for speed and
correctness comparisons only."""

from __future__ import annotations

import numpy as np

from kiln.examples.models import _Builder


def _conv_bn(b, x, cin, cout, k, stride=1, group=1, act="relu"):
    t = b.op("Conv", [x, b.weight((cout, cin // group, k, k)), b.weight((cout,), 0.1)],
             pads=[k // 2] * 4, strides=[stride, stride], group=group)
    if act == "relu":
        return b.op("Relu", [t])
    if act == "relu6":
        return b.op("Clip", [t, b.const(np.float32(0)), b.const(np.float32(6))])
    return t


def resnet(depth: int = 18, seed: int = 0, size: int = 224, classes: int = 1000):
    """ResNet-18/34 (basic blocks) or ResNet-50 (bottlenecks), BatchNorm folded into the convs."""
    b = _Builder(seed)
    stages = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3]}[depth]
    bottleneck = depth >= 50
    t = _conv_bn(b, "x", 3, 64, 7, 2)
    t = b.op("MaxPool", [t], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for i, n in enumerate(stages):
        width = 64 * 2 ** i
        cout = width * 4 if bottleneck else width
        for j in range(n):
            stride = 2 if i > 0 and j == 0 else 1
            if bottleneck:
                h = _conv_bn(b, t, cin, width, 1)
                h = _conv_bn(b, h, width, width, 3, stride)
                h = _conv_bn(b, h, width, cout, 1, act=None)
            else:
                h = _conv_bn(b, t, cin, width, 3, stride)
                h = _conv_bn(b, h, width, cout, 3, act=None)
            short = t if (stride == 1 and cin == cout) else _conv_bn(b, t, cin, cout, 1, stride, act=None)
            t = b.op("Relu", [b.op("Add", [h, short])])
            cin = cout
    t = b.op("Flatten", [b.op("GlobalAveragePool", [t])])
    b.nodes.append(b.h.make_node("Gemm", [t, b.weight((classes, cin)), b.weight((classes,), 0.1)],
                                 ["logits"], transB=1, name="fc"))
    return b.model([b.io("x", [1, 3, size, size])], [b.io("logits", [1, classes])], f"resnet{depth}")


def mobilenet_v2(seed: int = 0, size: int = 224, classes: int = 1000):
    """MobileNetV2 1.0: inverted residual blocks with depthwise 3x3 convs and ReLU6."""
    b = _Builder(seed)
    t = _conv_bn(b, "x", 3, 32, 3, 2, act="relu6")
    cin = 32
    for expand, cout, n, stride in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                                    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
        for j in range(n):
            s = stride if j == 0 else 1
            hid = cin * expand
            h = t if expand == 1 else _conv_bn(b, t, cin, hid, 1, act="relu6")
            h = _conv_bn(b, h, hid, hid, 3, s, group=hid, act="relu6")
            h = _conv_bn(b, h, hid, cout, 1, act=None)
            t = b.op("Add", [t, h]) if s == 1 and cin == cout else h
            cin = cout
    t = _conv_bn(b, t, cin, 1280, 1, act="relu6")
    t = b.op("Flatten", [b.op("GlobalAveragePool", [t])])
    b.nodes.append(b.h.make_node("Gemm", [t, b.weight((classes, 1280)), b.weight((classes,), 0.1)],
                                 ["logits"], transB=1, name="classifier"))
    return b.model([b.io("x", [1, 3, size, size])], [b.io("logits", [1, classes])], "mobilenet_v2")


def bert_encoder(layers: int = 4, hidden: int = 256, seq: int = 128, heads: int = 4,
                 seed: int = 0, batch: int = 1):
    """A BERT-style encoder on embeddings ``x`` [batch, seq, hidden]: post-LN blocks with
    multi-head attention and a GELU feed-forward of 4x hidden."""
    b = _Builder(seed)
    hd = hidden // heads

    def ln(x):
        return b.op("LayerNormalization", [x, b.const(np.ones(hidden, np.float32)),
                                           b.const(np.zeros(hidden, np.float32))], axis=-1)

    def dense(x, cin, cout):
        return b.op("Add", [b.op("MatMul", [x, b.weight((cin, cout))]), b.weight((cout,), 0.02)])

    def split_heads(x):
        r = b.op("Reshape", [x, b.const(np.array([batch, seq, heads, hd], np.int64))])
        return b.op("Transpose", [r], perm=[0, 2, 1, 3])

    t = "x"
    for _ in range(layers):
        q, k, v = (split_heads(dense(t, hidden, hidden)) for _ in range(3))
        s = b.op("Mul", [b.op("MatMul", [q, b.op("Transpose", [k], perm=[0, 1, 3, 2])]),
                         b.const(np.float32(1 / np.sqrt(hd)))])
        a = b.op("MatMul", [b.op("Softmax", [s], axis=-1), v])
        a = b.op("Reshape", [b.op("Transpose", [a], perm=[0, 2, 1, 3]),
                             b.const(np.array([batch, seq, hidden], np.int64))])
        t = ln(b.op("Add", [t, dense(a, hidden, hidden)]))
        m = dense(t, hidden, 4 * hidden)
        g = b.op("Mul", [b.op("Mul", [m, b.const(np.float32(0.5))]),
                         b.op("Add", [b.op("Erf", [b.op("Div", [m, b.const(np.float32(np.sqrt(2)))])]),
                                      b.const(np.float32(1))])])
        t = ln(b.op("Add", [t, dense(g, 4 * hidden, hidden)]))
    b.nodes.append(b.h.make_node("Identity", [t], ["y"], name="out"))
    return b.model([b.io("x", [batch, seq, hidden])], [b.io("y", [batch, seq, hidden])], "bert_encoder")


def mlp_784(seed: int = 0, batch: int = 1):
    """784-1024-1024-512-10 with ReLU (the spike's MLP)."""
    b = _Builder(seed)
    t, cin = "x", 784
    for cout in (1024, 1024, 512):
        t = b.op("Relu", [b.op("Gemm", [t, b.weight((cout, cin)), b.weight((cout,), 0.1)], transB=1)])
        cin = cout
    b.nodes.append(b.h.make_node("Gemm", [t, b.weight((10, cin)), b.weight((10,), 0.1)], ["y"],
                                 transB=1, name="head"))
    return b.model([b.io("x", [batch, 784])], [b.io("y", [batch, 10])], "mlp")


ZOO = {"resnet18": lambda batch=1: _batched(resnet(18), batch),
       "resnet50": lambda batch=1: _batched(resnet(50), batch),
       "mobilenet_v2": lambda batch=1: _batched(mobilenet_v2(), batch),
       "bert_encoder": lambda batch=1: bert_encoder(batch=batch),
       "mlp": lambda batch=1: mlp_784(batch=batch)}


def _batched(model, batch: int):
    for vi in list(model.graph.input) + list(model.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_value = batch
    return model
