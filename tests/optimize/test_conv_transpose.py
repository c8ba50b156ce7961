"""Transposed convolutions are rewritten into convolutions that Kiln's CPU schedules cover
(kiln.optimize.conv_transpose). TVM's own lowering got no schedule at all: a UNet's three
2x2 / stride-2 up-convolutions ran as scalar loops on one core, 100x ONNX Runtime's time."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import run_on_host
from test_cpu_schedule import _scheduled_funcs


def _deconv(c, oc, hw, k, s, p, op=0, groups=1) -> onnx.ModelProto:
    rng = np.random.default_rng(k * 100 + s * 10 + p)
    w = rng.standard_normal((c, oc // groups, k, k)).astype(np.float32) * 0.2
    b = rng.standard_normal(oc).astype(np.float32)
    out = (hw - 1) * s - 2 * p + k + op
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["c"], strides=[s, s], pads=[p] * 4,
                            output_padding=[op, op], group=groups)
    graph = helper.make_graph(
        [node, helper.make_node("Relu", ["c"], ["y"])], "deconv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, oc, out, out])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


CASES = {
    "unet_2x2_stride2": (32, 16, 8, 2, 2, 0),        # kernel = stride: 1x1 conv + depth-to-space
    "dcgan_4x4_stride2_pad1": (16, 8, 8, 4, 2, 1),   # zeros inserted, then a 4x4 conv
    "3x3_stride2_output_padding": (8, 16, 7, 3, 2, 1, 1),
    "3x3_stride1": (8, 8, 6, 3, 1, 1),
    "grouped_3x3_stride2": (16, 32, 5, 3, 2, 0, 0, 4),
    "2x2_stride2_pad1": (8, 8, 6, 2, 2, 1),          # the dilated input's last zero row cut
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_transposed_convs_match_onnxruntime(case, tmp_path):
    model = _deconv(*CASES[case])
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(7).standard_normal(dims).astype(np.float32)
    (y,), _, (ref,) = run_on_host(model, {"x": x}, tmp_path, "deconv")
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["unet_2x2_stride2", "dcgan_4x4_stride2_pad1"])
def test_transposed_convs_become_parallel_vectorized_conv_tiles(case):
    funcs = _scheduled_funcs(_deconv(*CASES[case]), nhwc=True)
    assert not any("transpose" in name and "conv" in name for name in funcs), sorted(funcs)
    (conv,) = [t for name, t in funcs.items() if "conv2d" in name]
    assert "T.parallel" in conv and "T.vectorized" in conv and "conv2d_nhwc" in conv, conv
    if case == "unet_2x2_stride2":  # 1x1: no zeros inserted, 4x the output channels
        assert "T.Buffer((T.int64(1), T.int64(1), T.int64(32), T.int64(64))" in conv, conv
