"""Stride-1 3x3 convolutions run as Winograd F(4x4, 3x3) / F(2x2, 3x3) (kiln.optimize.winograd):
an input transform, one batched matmul over the tile positions, and an output transform that
takes the conv's epilogue (bias, ReLU, residual add). ResNet-18 batch 1 went from 1.10-1.15x to
0.68-0.78x ONNX Runtime's latency with it (README, "Session 14")."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import run_on_host
from test_cpu_schedule import _scheduled_funcs


def _conv_model(c, oc, hw, *, batch=1, pads=1, stride=1, dilation=1, group=1, residual=False):
    rng = np.random.default_rng(c * 1000 + oc * 10 + hw)
    w = (rng.standard_normal((oc, c // group, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    b = rng.standard_normal(oc).astype(np.float32) * 0.1
    out = (hw + 2 * pads - dilation * 2 - 1) // stride + 1
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[pads] * 4,
                              strides=[stride] * 2, dilations=[dilation] * 2, group=group)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, c, hw, hw])]
    if residual:  # conv + bias + residual, then ReLU: the whole tail of a ResNet block
        nodes.append(helper.make_node("Add", ["c", "r"], ["s"]))
        inputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [batch, oc, out, out]))
    nodes.append(helper.make_node("Relu", ["s" if residual else "c"], ["y"]))
    graph = helper.make_graph(
        nodes, "conv3x3", inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, oc, out, out])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


CASES = {  # (channels in, out, map size, extra): the tile each one gets in brackets
    "f4_16x16": ((16, 32, 16), {}),                       # [4x4] 16 tiles
    "f2_14x14_batch2": ((24, 16, 14), {"batch": 2}),      # [2x2] 14 is no multiple of 4
    "f2_7x7_edge_tiles": ((32, 32, 7), {}),               # [2x2] 4x4 tiles, the last past the edge
    "f4_unpadded_18_to_16": ((16, 16, 18), {"pads": 0}),  # [4x4] a 'valid' conv
    "f4_residual": ((16, 16, 16), {"residual": True}),    # [4x4] bias + residual + ReLU fused
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_winograd_convs_match_onnxruntime(case, tmp_path):
    shape, extra = CASES[case]
    model = _conv_model(*shape, **extra)
    funcs = _scheduled_funcs(model, nhwc=True, winograd=True)
    assert any("winograd_input" in n for n in funcs) and not any("conv2d" in n for n in funcs), \
        sorted(funcs)
    rng = np.random.default_rng(3)
    feeds = {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim])
             .astype(np.float32) for i in model.graph.input}
    (y,), _, (ref,) = run_on_host(model, feeds, tmp_path, "conv")
    # the transforms' rounding: within a few float32 ulps of the output's scale
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))


def test_winograd_kernels_are_parallel_vectorized_and_take_the_epilogue():
    funcs = _scheduled_funcs(_conv_model(16, 16, 16, residual=True), nhwc=True, winograd=True)
    (out,) = [t for n, t in funcs.items() if "winograd_output" in n]
    (inp,) = [t for n, t in funcs.items() if "winograd_input" in n]
    (mm,) = [t for n, t in funcs.items() if n.startswith(("matmul", "fused_matmul"))]
    # the bias, the residual add and the ReLU are the output transform's epilogue
    assert "add" in [n for n in funcs if "winograd_output" in n][0]
    assert "relu" in [n for n in funcs if "winograd_output" in n][0]
    for text in (out, inp):
        assert "T.parallel" in text and "T.vectorized" in text and "T.unroll" in text, text
        # the first stage is computed per tile inside the parallel loop (a stack buffer)
        stage = text.index('T.sblock("winograd_')
        assert text.index("T.parallel") < stage, text
    assert 'T.sblock_attr({"kiln.winograd": 4})' in out
    # 36 tile positions, each a matmul of (tiles x 16 channels) by (16 x 16 filters)
    assert "T.Buffer((T.int64(36), T.int64(16), T.int64(16))" in mm, mm
    assert "T.parallel" in mm and "T.vectorized" in mm


@pytest.mark.parametrize("extra", [{"stride": 2}, {"dilation": 2, "pads": 2}, {"group": 4}],
                         ids=["strided", "dilated", "grouped"])
def test_convs_winograd_does_not_cover_stay_direct(extra):
    funcs = _scheduled_funcs(_conv_model(16, 16, 16, **extra), nhwc=True, winograd=True)
    assert not any("winograd" in n for n in funcs), sorted(funcs)
    assert any("conv2d" in n for n in funcs), sorted(funcs)


def test_tile_size_and_weight_limits():
    from kiln.optimize.winograd import MAX_WEIGHT_BYTES, tile_size

    assert tile_size(56, 56) == 4 and tile_size(28, 28) == 4 and tile_size(16, 16) == 4
    assert tile_size(14, 14) == 2  # 4 does not divide 14: 7x7 tiles of 2x2
    assert tile_size(7, 7) == 2    # 4x4 tiles of 2x2 compute 64 outputs for 49
    assert tile_size(8, 8) == 2    # 4 tiles of 4x4 are too few to share the transforms
    assert tile_size(5, 5) is None and tile_size(9, 5) is None
    # a 512-channel conv would need 16 x 512 x 512 floats of transformed weights
    assert 16 * 512 * 512 * 4 > MAX_WEIGHT_BYTES >= 36 * 128 * 128 * 4


@pytest.mark.parametrize("m", [2, 4])
def test_transforms_compute_the_convolution(m):
    """The matrices and the weight transform: A^T [(G g G^T) * (B^T d B)] A equals the 3x3
    correlation of every (m+2)^2 input tile, summed over the channels."""
    from kiln.optimize.winograd import _matrices, transform_weights

    rng = np.random.default_rng(m)
    a, b, _ = _matrices(m)
    w = rng.standard_normal((3, 3, 5, 7))  # HWIO
    d = rng.standard_normal((m + 2, m + 2, 5))
    u = transform_weights(w, m).astype(np.float64).reshape(m + 2, m + 2, 5, 7)
    v = np.einsum("ix,ijc,jy->xyc", b, d, b)
    y = np.einsum("xr,xyk,ys->rsk", a, np.einsum("xyc,xyck->xyk", v, u), a)
    ref = np.array([[np.einsum("ijc,ijck->k", d[r:r + 3, s:s + 3], w) for s in range(m)]
                    for r in range(m)])
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_huge_maps_stay_direct():
    """A 256x256 map of 64 channels would need 38 MB per transformed activation."""
    funcs = _scheduled_funcs(_conv_model(64, 64, 256), nhwc=True, winograd=True)
    assert not any("winograd" in n for n in funcs), sorted(funcs)


def test_no_winograd_option_keeps_convs_direct_from_the_cli(tmp_path):
    """`kiln compile --no-winograd` (CompileOptions.winograd=False): the artifact's plan calls a
    direct conv kernel and no Winograd transform, the manifest records the option, and the
    outputs match ONNX Runtime; the default build of the same model uses the transforms."""
    import onnx

    import kiln
    from conftest import onnx_reference, run_kiln

    model = _conv_model(16, 32, 16)
    path = tmp_path / "conv.onnx"
    onnx.save(model, path)
    x = np.random.default_rng(3).standard_normal((1, 16, 16, 16)).astype(np.float32)
    ref = onnx_reference(path, {"x": x})[0]
    plans = {}
    for flag in ("--winograd", "--no-winograd"):
        art = tmp_path / f"conv{flag}.tar.gz"
        res = run_kiln("compile", path, "--platform", "LINUX/X86_64", flag, "-o", art)
        assert res.returncode == 0, res.stderr
        m = kiln.load(art)
        try:
            plans[flag] = [line.split()[1] for line in (m._dir / "plan.txt").read_text()
                           .splitlines() if line.startswith("c ")]
            assert m.manifest.compile_options["winograd"] is (flag == "--winograd")
            np.testing.assert_allclose(m.run(x)[0], ref, rtol=1e-5,
                                       atol=1e-5 * float(np.abs(ref).max()))
        finally:
            m.close()
    assert any("winograd_input" in k for k in plans["--winograd"]), plans
    assert not any("winograd" in k for k in plans["--no-winograd"]), plans
    assert any("conv2d" in k for k in plans["--no-winograd"]), plans


def test_winograd_option_is_a_checked_flag():
    from kiln.errors import KilnError
    from kiln.options import CompileOptions, TuneOptions

    assert CompileOptions(winograd=False, tune_trials=4).tuning.winograd is False
    for bad in ("no", 0, None):
        with pytest.raises(KilnError) as exc:
            CompileOptions(winograd=bad)
        assert exc.value.code == "invalid_options"
    with pytest.raises(KilnError):
        TuneOptions(trials=4, winograd="false")
