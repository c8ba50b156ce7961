"""Shape arithmetic in ONNX graphs (PyTorch's ``chunk`` and ``view`` as exported) is folded into
constants at import, so that a ShuffleNetV2-style channel split and shuffle keep static shapes.
Before the fold, TVM's converter kept the split's ``Slice`` dynamic and lowering failed with
"emit_te now only supports Tensor that has ShapeExpr shape"."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from conftest import run_on_host
from kiln.importers.onnx_fold import fold_shape_arithmetic


def _const(name, value):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(
        np.asarray(value, dtype=np.int64), name))


def _shuffle_unit(c=8, hw=6) -> onnx.ModelProto:
    """conv -> split channels in halves (bounds from Shape) -> conv + relu on one half ->
    concat -> channel shuffle (Reshape to [n, 2, c/2, h, w] built from Shape, Transpose,
    Reshape back to Shape(concat)), as the TorchScript exporter writes ``chunk`` and ``view``."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((c, c, 1, 1)).astype(np.float32) * 0.3
    w2 = rng.standard_normal((c // 2, c // 2, 3, 3)).astype(np.float32) * 0.3
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["y"]),
        helper.make_node("Shape", ["y"], ["ys"]),
        _const("one", [1]), _const("two", 2), _const("zero", [0]), _const("big", [1 << 62]),
        helper.make_node("Gather", ["ys", "one"], ["ch"], axis=0),  # [c]
        helper.make_node("Div", ["ch", "two"], ["half"]),
        helper.make_node("Slice", ["y", "zero", "half", "one"], ["a"]),
        helper.make_node("Slice", ["y", "half", "big", "one"], ["b"]),
        helper.make_node("Conv", ["b", "w2"], ["bc"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["bc"], ["br"]),
        helper.make_node("Concat", ["a", "br"], ["cat"], axis=1),
        helper.make_node("Shape", ["cat"], ["cs"]),
        _const("i0", [0]), _const("i2", [2]), _const("i3", [3]), _const("groups", [2]),
        helper.make_node("Gather", ["cs", "i0"], ["n"], axis=0),
        helper.make_node("Gather", ["cs", "one"], ["cc"], axis=0),
        helper.make_node("Div", ["cc", "groups"], ["per"]),
        helper.make_node("Gather", ["cs", "i2"], ["h"], axis=0),
        helper.make_node("Gather", ["cs", "i3"], ["w"], axis=0),
        helper.make_node("Concat", ["n", "groups", "per", "h", "w"], ["shape5"], axis=0),
        helper.make_node("Reshape", ["cat", "shape5"], ["r5"]),
        helper.make_node("Transpose", ["r5"], ["t5"], perm=[0, 2, 1, 3, 4]),
        helper.make_node("Reshape", ["t5", "cs"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes, "shuffle", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, c, hw, hw])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _ort(model, x):
    return ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_shape_arithmetic_becomes_constants_with_the_same_outputs():
    model = _shuffle_unit()
    folded = fold_shape_arithmetic(model, {"x": (1, 8, 6, 6)})
    ops = [n.op_type for n in folded.graph.node]
    assert not {"Shape", "Gather", "Div"} & set(ops), ops
    assert sorted(o for o in ops if o != "Constant") == [
        "Concat", "Conv", "Conv", "Relu", "Reshape", "Reshape", "Slice", "Slice", "Transpose"], ops
    x = np.random.default_rng(1).standard_normal((1, 8, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(_ort(folded, x), _ort(model, x))
    # no Shape node: the model comes back as it was, not a copy
    plain = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]))
    assert fold_shape_arithmetic(plain, {"x": (2,)}) is plain


def test_a_channel_split_and_shuffle_compiles_and_matches_onnxruntime(tmp_path):
    x = np.random.default_rng(2).standard_normal((1, 16, 10, 10)).astype(np.float32)
    (y,), _, (ref,) = run_on_host(_shuffle_unit(c=16, hw=10), {"x": x}, tmp_path, "shuffle")
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
