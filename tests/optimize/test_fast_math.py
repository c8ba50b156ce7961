"""Fast transcendental functions (kiln/optimize/fast_math.py): every CPU compile at the
default opt level computes exp / tanh / erf / sigmoid / softmax with TVM's polynomial forms,
which vectorize (LLVM calls libm once per lane otherwise). They must stay within float32
rounding of ONNX Runtime over the whole input range, saturation included."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import kiln
from conftest import onnx_reference

OPS = ("Sigmoid", "Tanh", "Erf", "Exp", "Softmax")


def _model():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 256])
    nodes, outs = [], []
    for op in OPS:
        attrs = {"axis": -1} if op == "Softmax" else {}
        src = "xc" if op == "Exp" else "x"  # exp past 88 overflows float32 in both
        nodes.append(helper.make_node(op, [src], [op.lower()], **attrs))
        outs.append(helper.make_tensor_value_info(op.lower(), TensorProto.FLOAT, [4, 256]))
    # SiLU and tanh-GELU as exporters write them
    nodes += [helper.make_node("Mul", ["x", "sigmoid"], ["silu"])]
    outs.append(helper.make_tensor_value_info("silu", TensorProto.FLOAT, [4, 256]))
    lo = onnx.numpy_helper.from_array(np.array(-80.0, np.float32), "lo")
    hi = onnx.numpy_helper.from_array(np.array(80.0, np.float32), "hi")
    nodes.insert(0, helper.make_node("Clip", ["x", "lo", "hi"], ["xc"]))
    graph = helper.make_graph(nodes, "fast", [x], outs, [lo, hi])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_fast_math_matches_onnxruntime_over_the_whole_range(tmp_path):
    path = tmp_path / "fast.onnx"
    onnx.save(_model(), path)
    res = kiln.compile(path, platform="LINUX/X86_64", output=tmp_path / "a.tar.gz")
    model = kiln.load(res.artifact)
    rng = np.random.default_rng(5)
    x = np.concatenate([np.linspace(-100, 100, 256), np.linspace(-6, 6, 256),
                        rng.standard_normal(256) * 3, rng.standard_normal(256) * 0.01])
    x = x.reshape(4, 256).astype(np.float32)
    got = model.run(x)
    want = onnx_reference(path, {"x": x})
    for name, g, w in zip([o.lower() for o in OPS] + ["silu"], got, want):
        # relative for exp (values up to 5.5e34), absolute 2e-6 for the bounded functions
        np.testing.assert_allclose(g, w, rtol=2e-6, atol=2e-6, err_msg=name)
    assert np.all(got[0] >= 0) and np.all(got[0] <= 1)  # sigmoid saturates, no overshoot
    assert np.all(np.abs(got[1]) <= 1)


@pytest.mark.parametrize("op", ["sigmoid", "tanh", "erf", "exp", "nn.softmax", "nn.gelu",
                                "nn.gelu_tanh", "nn.silu"])
def test_transcendentals_leave_no_libm_call_in_the_kernels(op):
    """After the pre-schedule passes no kernel calls exp / tanh / erf / sigmoid (each one a
    scalar libm call per lane once LLVM lowers it); float64 is left alone."""
    import tvm
    from tvm import relax
    from tvm.script import relax as R

    from kiln.optimize.pipeline import pre_schedule_passes

    fn = relax.op
    for part in op.split("."):
        fn = getattr(fn, part)
    bb = relax.BlockBuilder()
    x = relax.Var("x", R.Tensor((4, 64), "float32"))
    d = relax.Var("d", R.Tensor((4, 64), "float64"))
    with bb.function("main", [x, d]):
        with bb.dataflow():
            y = bb.emit(fn(x))
            z = bb.emit(relax.op.exp(d))
            out = bb.emit_output(relax.Tuple([y, z]))
        bb.emit_func_output(out)
    target = tvm.target.Target({"kind": "llvm", "mcpu": "x86-64-v3"})
    with target:
        mod = tvm.transform.Sequential(pre_schedule_passes(target, opt_level=2))(bb.get())
    texts = {gv.name_hint: f.script() for gv, f in mod.functions_items()
             if isinstance(f, tvm.tirx.PrimFunc)}
    f32 = [t for t in texts.values() if '"float64"' not in t]
    f64 = [t for t in texts.values() if '"float64"' in t]
    assert f32 and f64
    for text in f32:
        for call in ("T.exp(", "T.tanh(", "T.erf(", "T.sigmoid("):
            assert call not in text, (op, text)
    assert any("T.exp(" in t for t in f64)  # float64 keeps the exact libm exp
