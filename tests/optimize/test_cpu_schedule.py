"""Kiln's default CPU schedules: each op family compiles to parallel, vectorized code and
still agrees with onnxruntime (x86_64 natively; aarch64 under qemu in the e2e tests)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import kiln
from kiln.options import CompileOptions
from conftest import onnx_reference

RNG = np.random.default_rng(11)


def _model(nodes, inputs, outputs, inits):
    graph = helper.make_graph(nodes, "g", inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _f32(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _w(*shape):
    return (RNG.standard_normal(shape) / np.sqrt(np.prod(shape[1:]) or 1)).astype(np.float32)


def _conv(batch, cin, cout, size, kernel=1, stride=1, relu=True):
    """A square conv with bias (``kernel // 2`` padding), then ReLU when ``relu``."""
    attrs = {}
    if kernel > 1:
        attrs["pads"] = [kernel // 2] * 4
    if stride > 1:
        attrs["strides"] = [stride, stride]
    out = (size + 2 * (kernel // 2) - kernel) // stride + 1
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c" if relu else "y"], **attrs)]
    if relu:
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    return _model(nodes, [_f32("x", [batch, cin, size, size])],
                  [_f32("y", [batch, cout, out, out])],
                  {"w": _w(cout, cin, kernel, kernel), "b": _w(cout)})


CASES = {
    "conv_1x1": lambda: _conv(1, 16, 32, 14, relu=False),
    "conv_grouped_strided": lambda: _model(
        [helper.make_node("Conv", ["x", "w"], ["c"], group=4, strides=[2, 2], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"])],
        [_f32("x", [1, 16, 15, 15])], [_f32("y", [1, 16, 8, 8])], {"w": _w(16, 4, 3, 3)}),
    # ResNeXt's first stage: 32 groups of 4 channels (a vector of 8 spans two groups)
    "conv_grouped_4_per_group": lambda: _model(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], group=8, pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"])],
        [_f32("x", [1, 32, 12, 12])], [_f32("y", [1, 32, 12, 12])],
        {"w": _w(32, 4, 3, 3), "b": _w(32)}),
    "depthwise_odd_width": lambda: _model(
        [helper.make_node("Conv", ["x", "w"], ["y"], group=8, pads=[1, 1, 1, 1])],
        [_f32("x", [1, 8, 7, 7])], [_f32("y", [1, 8, 7, 7])], {"w": _w(8, 1, 3, 3)}),
    "batch_matmul_softmax": lambda: _model(
        [helper.make_node("MatMul", ["x", "k"], ["s"]),
         helper.make_node("Softmax", ["s"], ["y"], axis=-1)],
        [_f32("x", [2, 4, 24, 16])], [_f32("y", [2, 4, 24, 24])], {"k": _w(2, 4, 16, 24)}),
    "gemm_gelu_layernorm": lambda: _model(
        [helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1),
         helper.make_node("Div", ["h", "sq2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
         helper.make_node("Add", ["e", "one"], ["e1"]), helper.make_node("Mul", ["h", "e1"], ["g"]),
         helper.make_node("LayerNormalization", ["g", "gamma", "beta"], ["y"], axis=-1)],
        [_f32("x", [5, 40])], [_f32("y", [5, 48])],
        {"w": _w(48, 40), "b": _w(48), "sq2": np.array(np.sqrt(2), np.float32),
         "one": np.array(1.0, np.float32), "gamma": _w(48), "beta": _w(48)}),
    # SiLU reads the conv's output twice (x * sigmoid(x)): still one pass, in the write-back
    "conv_silu": lambda: _model(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["y"])],
        [_f32("x", [1, 8, 12, 12])], [_f32("y", [1, 24, 12, 12])],
        {"w": _w(24, 8, 3, 3), "b": _w(24)}),
    # NHWC pooling and a global mean: channel vectors, window (or map) summed outside them
    "conv_maxpool_global_mean": lambda: _model(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[3, 3], strides=[2, 2],
                          pads=[1, 1, 1, 1]),
         helper.make_node("GlobalAveragePool", ["p"], ["y"])],
        [_f32("x", [2, 8, 15, 15])], [_f32("y", [2, 24, 1, 1])],
        {"w": _w(24, 8, 3, 3), "b": _w(24)}),
    # an odd number of channel vectors: 3 vectors by 4 rows (24 channels), 5 by 2 (40
    # channels on a 13x13 map: 13 rows as 7 tiles of 2, the last one overlapping)
    "conv_24_channels": lambda: _conv(1, 72, 24, 12),
    "conv_40_channels_13x13": lambda: _conv(1, 16, 40, 13, kernel=3, relu=False),
    # prime row extents (197 tokens of a ViT, 13x13 maps of SqueezeNet): full-height tiles
    "matmul_prime_rows": lambda: _model(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])],
        [_f32("x", [1, 37, 32])], [_f32("y", [1, 37, 48])], {"w": _w(32, 48), "b": _w(48)}),
    "conv_1x1_prime_width": lambda: _conv(1, 16, 32, 13),
    # a vector axis no lane count divides (q @ k^T over a ViT's 197 tokens): padded to 40
    "matmul_prime_vector_axis": lambda: _model(
        [helper.make_node("MatMul", ["x", "k"], ["s"]), helper.make_node("Div", ["s", "d"], ["y"])],
        [_f32("x", [1, 3, 37, 16])], [_f32("y", [1, 3, 37, 37])],
        {"k": _w(1, 3, 16, 37), "d": np.array(4.0, np.float32)}),
    # one row (a batch-1 dense layer): a tile four vectors wide, four accumulators
    "gemv_relu": lambda: _model(
        [helper.make_node("Gemm", ["x", "w", "b"], ["g"], transB=1),
         helper.make_node("Relu", ["g"], ["y"])],
        [_f32("x", [1, 72])], [_f32("y", [1, 96])], {"w": _w(96, 72), "b": _w(96)}),
    # small feature maps: the pixels of a row are too few for a two-vector tile, so the
    # rows and columns become one axis (196 pixels: 4-row tiles; 49: 6-row tiles, the last
    # one overlapping), with a residual and a batch of two
    "conv_3x3_fused_pixels": lambda: _model(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Add", ["c", "x"], ["r"]), helper.make_node("Relu", ["r"], ["y"])],
        [_f32("x", [1, 16, 14, 14])], [_f32("y", [1, 16, 14, 14])],
        {"w": _w(16, 16, 3, 3), "b": _w(16)}),
    "conv_1x1_7x7_batch2": lambda: _conv(2, 24, 32, 7),
    # a 1x1 conv over 64 channels on 56-pixel rows: 10 tiles of 6 rows, the last one
    # overlapping (a predicated one branched inside the reduction loop and spilled)
    "conv_1x1_deep_56_rows": lambda: _conv(1, 64, 32, 56),
    # 28-pixel rows that 6-row tiles do not divide: rows and columns fused (784 pixels)
    "conv_3x3_deep_28_rows": lambda: _conv(1, 16, 32, 28, kernel=3),
    # a first conv (3 channels, 7x7 taps, stride 2, 56 pixels a row): rows not fused
    "conv_7x7_3_channels_stride2": lambda: _conv(1, 3, 16, 112, kernel=7, stride=2),
    # a strided 1x1 conv onto a 7x7 map (ResNet's projection shortcut): 6-row tiles, the
    # last one overlapping
    "conv_1x1_stride2_7x7": lambda: _conv(1, 16, 32, 14, stride=2, relu=False),
    # a batch of three whose activations (602 KB) and weights (655 KB) outgrow L2: one image
    # at a time
    "conv_1x1_batch_outer": lambda: _conv(3, 256, 640, 14),
    # weights of 256 KB (above cache_bytes, within L2) under a 1.6 MB output: activation
    # tiles outermost
    "conv_1x1_pixels_outer": lambda: _conv(1, 128, 512, 28),
    # ShuffleNetV2's channel counts: 58 (7.25 vectors) and 116 (14.5) output channels,
    # padded with zero filters to 64 and 120 (kiln.optimize.channel_pad); 232 is 29 vectors
    "conv_58_channels": lambda: _conv(1, 24, 58, 14, kernel=3),
    "conv_116_channels_residual": lambda: _model(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"]),
         helper.make_node("Add", ["c", "x"], ["r"]), helper.make_node("Relu", ["r"], ["y"])],
        [_f32("x", [1, 116, 9, 9])], [_f32("y", [1, 116, 9, 9])],
        {"w": _w(116, 116, 1, 1), "b": _w(116)}),
    # a CNN's NCHW->NHWC input: 3 channels last, read 50 KB apart
    "transpose_channels_last": lambda: _model(
        [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
         helper.make_node("Relu", ["t"], ["y"])],
        [_f32("x", [2, 3, 40, 20])], [_f32("y", [2, 40, 20, 3])], {}),
    # attention's keys: reshape to heads, then transpose to [heads, dim, tokens]
    "reshape_transpose_heads": lambda: _model(
        [helper.make_node("Reshape", ["x", "shape"], ["r"]),
         helper.make_node("Transpose", ["r"], ["y"], perm=[0, 2, 3, 1])],
        [_f32("x", [2, 40, 32])], [_f32("y", [2, 4, 8, 40])],
        {"shape": np.array([2, 40, 4, 8], np.int64)}),
    "pool_mean": lambda: _model(
        [helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[3, 3], strides=[2, 2]),
         helper.make_node("AveragePool", ["p"], ["a"], kernel_shape=[2, 2]),
         helper.make_node("ReduceMean", ["a"], ["y"], axes=[2, 3], keepdims=0)],
        [_f32("x", [1, 6, 17, 17])], [_f32("y", [1, 6])], {}),
}


def _scheduled_funcs(onnx_model, simd="avx2", as_text=True, nhwc=False, unscheduled=False,
                     winograd=False, **cfg):
    """The PrimFuncs after Kiln's CPU pipeline, as TVMScript text by name (``unscheduled``:
    before Kiln's schedules; ``winograd``: 3x3 convs as Winograd transforms and a matmul, as
    in a compile, instead of the direct conv these tests look at; ``cfg``: CPUScheduleConfig
    fields other than the defaults)."""
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as cpu
    from tvm.relax.frontend.onnx import from_onnx

    from kiln.optimize.cpu_schedule import CPUScheduleConfig, lanes_for, schedule_cpu

    target = tvm.target.Target({"kind": "llvm", "mcpu": "x86-64-v3"})
    mod = from_onnx(onnx_model, keep_params_in_input=False)
    with target:
        if nhwc:  # Kiln's own pre-schedule passes: NHWC convs, as every opt-level-2 compile
            from kiln.optimize.pipeline import pre_schedule_passes

            mod = tvm.transform.Sequential(
                pre_schedule_passes(target, opt_level=2, winograd=winograd))(mod)
        else:
            mod = tvm.transform.Sequential([*cpu.legalize_passes(target)])(mod)
        if not unscheduled:
            mod = schedule_cpu(CPUScheduleConfig(vector_lanes=lanes_for(simd), **cfg))(mod)
    return {gv.name_hint: f.script() if as_text else f for gv, f in mod.functions_items()
            if isinstance(f, tvm.tirx.PrimFunc)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_scheduled_model_matches_onnxruntime(case, tmp_path):
    path = tmp_path / f"{case}.onnx"
    onnx.save(CASES[case](), path)
    res = kiln.compile(path, platform="LINUX/X86_64", output=tmp_path / "a.tar.gz")
    # the default route on x86_64: Kiln's schedules, then the standalone executor's plan
    assert res.manifest.compile_options["pipeline"] == "fused+schedules -> standalone plan"
    model = kiln.load(res.artifact)
    x = RNG.standard_normal(model.get_input_shapes()[0]).astype(np.float32)
    got = model.run(x)[0]
    np.testing.assert_allclose(got, onnx_reference(path, {"x": x})[0], rtol=1e-4, atol=1e-5)


def test_matmul_and_conv_get_parallel_vectorized_register_tiles():
    funcs = _scheduled_funcs(CASES["conv_1x1"]())
    conv = next(t for n, t in funcs.items() if "conv2d" in n)
    assert "T.parallel" in conv and "T.vectorized(T.int64(" in conv
    # the accumulator tile is a small "global" buffer inside the parallel loop: TVM 0.27 puts
    # those on the stack, but turns every "local" one into a TVMBackendAllocWorkspace call
    # per tile (2.5x slower MobileNetV2 convs)
    assert "_intermediate_global" in conv and 'scope="local"' not in conv
    assert "T.unroll" in conv                 # U rows of the tile
    assert 'T.sblock("conv2d_nchw_init")' in conv and 'T.sblock("conv2d_nchw_update")' in conv
    assert 'T.sblock("T_add")' not in conv   # the bias is fused into the tile's write-back
    funcs = _scheduled_funcs(CASES["gemm_gelu_layernorm"]())
    gemm = next(t for n, t in funcs.items() if "matmul" in n)
    assert "T.parallel" in gemm and "T.vectorized" in gemm and "erf" in gemm


def _blocks(text: str) -> list[str]:
    import re

    return re.findall(r'T\.sblock\("(\w+)"\)', text)


@pytest.mark.parametrize("case", ["conv_silu", "gemm_gelu_layernorm"])
def test_activations_reading_their_input_twice_fuse_into_the_write_back(case):
    """SiLU (x * sigmoid(x)) and GELU (x * (1 + erf(x / sqrt 2)) / 2) read the product twice;
    the whole activation is still computed in the tile's write-back, with no pass of its own
    (each step of EfficientNet's SiLU was one pass over the conv's output)."""
    funcs = _scheduled_funcs(CASES[case](), nhwc=True)
    name, text = next((n, t) for n, t in funcs.items() if "conv2d" in n or "matmul" in n)
    blocks = _blocks(text)
    elementwise = [b for b in blocks if b.startswith("T_") or "sigmoid" in b or "erf" in b]
    assert elementwise == [], (name, blocks)
    write_back = [b for b in blocks if b.endswith("_global") and "param" not in b]
    assert len(write_back) == 1, blocks
    assert ("sigmoid" in name) == (case == "conv_silu")


def test_nhwc_pooling_and_means_are_vectorized_over_channels():
    funcs = _scheduled_funcs(CASES["conv_maxpool_global_mean"](), nhwc=True)
    reductions = {n: t for n, t in funcs.items() if "pool" in n or "mean" in n}
    assert len(reductions) == 2, list(funcs)
    import re

    for name, text in reductions.items():
        # the reduction loops (window or map) run outside the vectorized channel loop
        assert "T.parallel" in text, name
        assert re.search(r"in T\.grid\([^\n]*\):\n\s*for \w+ in T\.vectorized\(T\.int64\(8\)\)",
                         text), name
        assert text.count("T.vectorized") >= 2, name  # the init too


def test_tiles_and_zero_pads_need_no_workspace_allocation():
    """The compiled 1x1 conv allocates nothing at run time: the tile is on the stack and the
    zero-width pad copy is inlined into the conv (it was a full copy of the activations)."""
    import tvm

    funcs = _scheduled_funcs(CASES["conv_1x1"](), as_text=False)
    conv = next(f for n, f in funcs.items() if "conv2d" in n)
    assert "pad_temp" not in conv.script()
    mod = tvm.IRModule({"main": conv.with_attr("global_symbol", "main")})
    asm = tvm.tirx.build(mod, tvm.target.Target({"kind": "llvm", "mcpu": "x86-64-v3"}))
    assert "TVMBackendAllocWorkspace" not in asm.inspect_source("asm")


def test_depthwise_conv_reads_its_input_through_the_inlined_pad():
    funcs = _scheduled_funcs(CASES["depthwise_odd_width"](), nhwc=True)
    conv = next(t for n, t in funcs.items() if "conv2d" in n)
    assert "pad_temp" not in conv and "T.if_then_else" in conv and "T.parallel" in conv
    for case in ("depthwise_odd_width", "conv_grouped_strided"):  # NCHW, or not depthwise
        conv = next(t for n, t in _scheduled_funcs(CASES[case](), nhwc=case != "depthwise_odd_width")
                    .items() if "conv2d" in n)
        assert "pad_temp" in conv, case


def test_row_reductions_and_injective_ops_are_parallel():
    funcs = _scheduled_funcs(CASES["batch_matmul_softmax"]())
    softmax = next(t for n, t in funcs.items() if "softmax" in n)
    assert softmax.count("T.parallel") >= 3   # max, exp-sum, normalize
    funcs = _scheduled_funcs(CASES["pool_mean"]())
    assert all("T.parallel" in t for t in funcs.values())


def test_vector_width_follows_the_target_simd():
    case = CASES["gemm_gelu_layernorm"]()   # 48 output columns
    wide = next(t for n, t in _scheduled_funcs(case, simd="avx512").items() if "matmul" in n)
    narrow = next(t for n, t in _scheduled_funcs(case, simd="neon").items() if "matmul" in n)
    assert "T.vectorized(T.int64(16))" in wide and "T.vectorized(T.int64(16))" not in narrow
    assert "T.vectorized(T.int64(4))" in narrow


def test_opt_levels_agree(model_dir, tmp_path):
    outs = []
    x = np.load(model_dir / "transformer_block.x.npy")
    for level in (0, 1, 2):
        res = kiln.compile(model_dir / "transformer_block.onnx", platform="LINUX/X86_64",
                           output=tmp_path / f"{level}.tar.gz",
                           options=CompileOptions(opt_level=level))
        outs.append(kiln.load(res.artifact).run(x)[0])
    np.testing.assert_allclose(outs[0], outs[2], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outs[1], outs[2], rtol=1e-5, atol=1e-5)


def test_constant_weights_are_prepacked_at_compile_time(model_dir):
    """Weights read along the vector axis get a tile-contiguous layout, computed once by
    FoldConstant: main calls only *_prepacked kernels and no repacking at run time."""
    import re

    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    from kiln.optimize.pipeline import _optimize_passes

    target = tvm.target.Target({"kind": "llvm", "mcpu": "x86-64-v3"})
    mod = from_onnx(onnx.load(model_dir / "cnn.onnx"), keep_params_in_input=False)
    with target:
        out = tvm.transform.Sequential(_optimize_passes(target, opt_level=2, simd="avx2"))(mod)
    calls = re.findall(r"call_tir\((?:cls\.)?(\w+),", out["main"].script())
    convs = [c for c in calls if "conv2d" in c]   # (the 10-class head is one tile already)
    # the 3x3 conv is a Winograd matmul over its transformed weights
    assert "matmul_prepacked" in calls, calls
    for name in convs:
        if not name.endswith("_prepacked"):
            # only a conv whose output channels fit one register tile (2 x 8 lanes) is left:
            # its HWIO weights are tile-contiguous already
            weights = [p for p in out[name].params if len(p.shape) == 4 and "param" in p.name]
            assert weights and all(int(w.shape[-1]) == 16 for w in weights), name
    assert not any("rewrite" in c or "preproc" in c for c in calls)


def test_clip_becomes_relax_ops_that_fuse_into_the_conv(tmp_path):
    """ReLU6 (Clip) after a conv: converted to Relax maximum/minimum, so layout conversion
    inserts no transposes around it and it fuses into the conv; values match onnxruntime,
    including a one-sided Clip."""
    import re

    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    from kiln.importers.from_onnx import _kiln_converters
    from kiln.optimize.pipeline import _optimize_passes

    model = _model(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Clip", ["c", "lo", "hi"], ["r"]),
         helper.make_node("Clip", ["r", "lo2"], ["y"])],
        [_f32("x", [1, 8, 12, 12])], [_f32("y", [1, 16, 12, 12])],
        {"w": _w(16, 8, 3, 3), "lo": np.array(0, np.float32), "hi": np.array(6, np.float32),
         "lo2": np.array(0.5, np.float32)})
    path = tmp_path / "relu6.onnx"
    onnx.save(model, path)
    with _kiln_converters():
        mod = from_onnx(model, keep_params_in_input=False)
    target = tvm.target.Target({"kind": "llvm", "mcpu": "x86-64-v3"})
    with target:
        out = tvm.transform.Sequential(_optimize_passes(target, opt_level=2, simd="avx2"))(mod)
    calls = re.findall(r"call_tir\((?:cls\.)?(\w+),", out["main"].script())
    fused = [c for c in calls if "conv2d" in c]
    assert len(fused) == 1 and "maximum" in fused[0] and "minimum" in fused[0]
    assert sum("transpose" in c for c in calls) == 2   # only at the graph's input and output
    res = kiln.compile(path, platform="LINUX/X86_64", output=tmp_path / "a.tar.gz")
    x = RNG.standard_normal((1, 8, 12, 12)).astype(np.float32) * 4
    np.testing.assert_allclose(kiln.load(res.artifact).run(x)[0],
                               onnx_reference(path, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_an_optional_pass_that_fails_leaves_the_module_unchanged(model_dir):
    """ConvertLayout throws std::bad_alloc on some exported transformers; the pipeline then
    goes on in the original layout instead of failing the compile."""
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    from kiln.optimize.pipeline import _optional

    @tvm.transform.module_pass(opt_level=0, name="Explodes")
    def explodes(mod, _ctx):
        raise MemoryError("std::bad_alloc")

    mod = from_onnx(onnx.load(model_dir / "cnn.onnx"), keep_params_in_input=False)
    out = _optional(explodes)(mod)
    assert out.same_as(mod)


def test_prime_row_extents_get_full_height_tiles():
    """37 rows (a prime, like a ViT's 197 tokens) used to give one-row register tiles (each
    broadcast input fed one FMA; ViT's matmuls ran 3-4x slower): now 8-row tiles, the last one
    overlapping the one before it (rows 29-36), with no predicate left in the loops."""
    from kiln.optimize.cpu_schedule import _row_tile

    assert _row_tile(37, 8) == 8 and _row_tile(197, 6) == 6 and _row_tile(13, 8) == 8
    assert _row_tile(56, 8) == 8 and _row_tile(28, 8) == 7 and _row_tile(27, 8) == 8
    assert _row_tile(6, 8) == 6 and _row_tile(7, 8) == 7  # shorter than a tile: whole
    # a predicated tile of full height where it wastes at most 1/8 of the rows: 56 pixels as
    # 10 tiles of 6 (not 14 of 4); a strided conv, or a short reduction, keeps the divisor
    assert _row_tile(56, 6) == 6 and _row_tile(196, 6) == 6 and _row_tile(13, 2) == 2
    assert _row_tile(56, 6, predicate=False) == 4 and _row_tile(196, 6, False) == 4
    assert _row_tile(20, 6) == 5  # 24 rows for 20: too many, and 5 divides
    funcs = _scheduled_funcs(CASES["matmul_prime_rows"]())
    mm = next(t for n, t in funcs.items() if "matmul" in n)
    assert "T.parallel" in mm and "T.vectorized" in mm
    assert "T.unroll(8)" in mm or "T.unroll(T.int64(8))" in mm, mm
    assert "T.where" not in mm and mm.count("T.min(") == 3, mm  # init, update, write-back
    assert "T.int64(29)) +" in mm or "29) +" in mm, mm


def test_odd_vector_counts_get_wide_tiles_of_single_vectors():
    """24 or 40 output channels (3 or 5 vectors) had one-vector tiles (nine loads for eight
    FMAs; SqueezeNet's 1000-class conv ran at half the rate of its other convs): now 3x4 and
    5x2 tiles, unrolled over single vectors (one 40-lane vector ran 3.5x slower: LLVM widens
    it to 64 lanes)."""
    import re

    for case, n, rows in (("conv_24_channels", 3, 4), ("conv_40_channels_13x13", 5, 2)):
        conv = next(t for name, t in _scheduled_funcs(CASES[case](), nhwc=True).items()
                    if "conv2d" in name)
        update = conv[conv.index('T.sblock("conv2d_nhwc_update")') - 600:]
        assert re.search(rf"T\.unroll\(T\.int64\({rows}\)\):\s*\n\s*for \w+ in "
                         rf"T\.unroll\(T\.int64\({n}\)\):\s*\n\s*for \w+ in "
                         r"T\.vectorized\(T\.int64\(8\)\)", update), (case, update[:700])
        assert f"T.vectorized(T.int64({8 * n}))" not in conv, case


def test_prime_vector_axis_is_padded_to_whole_vectors():
    """q @ k^T over 197 tokens had no vector length dividing its last axis and fell back to a
    scalar loop (3.5 of a ViT-style model's 34 ms): now the operand and the output are padded
    to whole vectors, the tile is vectorized, and the epilogue is fused into the crop that
    writes the real output (fused into the padded write-back it would store past the end)."""
    funcs = _scheduled_funcs(CASES["matmul_prime_vector_axis"]())
    mm = next(t for n, t in funcs.items() if "matmul" in n)
    assert "_pad = T.sblock_alloc_buffer" in mm, mm
    assert "T.int64(40)" in mm and "T.vectorized(T.int64(8))" in mm, mm
    assert 'T.sblock("T_divide")' not in mm  # the division is fused into the crop
    assert mm.count("T_divide_intermediate[") >= 1


def test_one_row_products_get_several_accumulator_vectors():
    """A batch-1 dense layer has no row axis to tile: a one-vector tile was one chain of
    dependent FMAs (the 784-1024-1024-512 MLP ran at a quarter of the FMA rate, 0.22 ms; four
    vectors: 0.12 ms). 96 outputs = 12 vectors of 8: the tile is 4 vectors, 32 lanes."""
    from kiln.optimize.cpu_schedule import CPUScheduleConfig, _Scheduler

    funcs = _scheduled_funcs(CASES["gemv_relu"]())
    mm = next(t for n, t in funcs.items() if "matmul" in n)
    assert "T.parallel" in mm and "T.vectorized(T.int64(32))" in mm, mm
    sched = _Scheduler.__new__(_Scheduler)
    sched.cfg = CPUScheduleConfig(vector_lanes=8)
    assert sched._tile_shape(96, 1) == (32, 1)
    assert sched._tile_shape(40, 1) == (40, 1)    # 5 vectors: 5 accumulators, none wasted
    assert sched._tile_shape(24, 1) == (24, 1)
    assert sched._tile_shape(10, 1) == (10, 8)    # not whole vectors: as before
    assert sched._tile_shape(1024, 64)[0] == 16   # rows to tile: the 2-vector micro-kernel


def test_small_feature_maps_fuse_pixels_into_wide_tiles():
    """A 14-wide map allowed only a one-vector tile of 7 rows (8 loads per 7 FMAs: ResNet-50's
    14x14 and 7x7 stages ran at 2/3 of the rate of its larger ones). The conv now iterates
    over all 196 pixels as one axis, in two-vector tiles of 6 pixels, and each tile writes back
    exactly its own pixels (a bounding range over two separate axes began at the start of the
    image row: stale values written back, wrong results across threads). 49 pixels: 6-row
    tiles, the last one overlapping the one before it."""
    from kiln.optimize.cpu_schedule import CPUScheduleConfig, _Scheduler

    sched = _Scheduler.__new__(_Scheduler)
    sched.cfg = CPUScheduleConfig(vector_lanes=8)
    assert sched._tile_shape(256, 14) == (8, 8)      # 14 alone: one vector, 7 rows
    assert sched._tile_shape(256, 196) == (16, 6)    # 4 rows divide 196
    assert sched._tile_shape(512, 49) == (16, 6)     # 9 tiles of 6 for 49: 10% waste
    assert sched._tile_shape(48, 37) == (8, 8)       # 42 rows for 37: too much waste
    conv = next(t for n, t in _scheduled_funcs(CASES["conv_3x3_fused_pixels"](), nhwc=True).items()
                if "conv2d" in n)
    assert "T.int64(196)" in conv and "T.vectorized(T.int64(16))" in conv, conv
    # 33 tiles of 6 pixels, the last one overlapping (4 divides 196, but 6 rows ran faster)
    assert "T.unroll(T.int64(6))" in conv and "T.where" not in conv
    assert "T.min(" in conv and "T.int64(190)) +" in conv, conv
    assert "in range(T.int64(6)):" in conv and "range(T.max(" not in conv  # the write-back
    conv = next(t for n, t in _scheduled_funcs(CASES["conv_1x1_7x7_batch2"](), nhwc=True).items()
                if "conv2d" in n)
    assert "T.int64(49)" in conv and "T.unroll(T.int64(6))" in conv, conv
    assert "T.where" not in conv and "T.int64(43)) +" in conv, conv
    # strided too (the predicated tile spilled accumulators there, 1.45x slower; the
    # overlapping one does not)
    conv = next(t for n, t in _scheduled_funcs(CASES["conv_1x1_stride2_7x7"](), nhwc=True).items()
                if "conv2d" in n)
    assert "T.int64(49)" in conv and "T.where" not in conv and "T.int64(43)) +" in conv, conv


def test_last_row_tile_overlaps_the_one_before_instead_of_a_predicate():
    """A last tile cut short by a predicate (``T.where(start + r < E)``) became a branch inside
    the reduction loop, and LLVM spilled the accumulators of the predicated rows on every
    step (ResNet-50's 56x56 1x1 convs ran at 21 GMAC/s, MobileNetV2 batch 8's 7x7 ones at
    28). The last tile now starts at ``min(start, E - U)``: full height, overlapping the one
    before it, the same rows in the tile's init, update and write-back. A short reduction
    (16 channels) keeps exact tiles."""
    conv = next(t for n, t in _scheduled_funcs(CASES["conv_1x1_deep_56_rows"](), nhwc=True).items()
                if "conv2d" in n)
    assert "T.unroll(T.int64(6))" in conv and "T.vectorized(T.int64(16))" in conv, conv
    # 56 x 56 pixels as one axis (see the test below): the last of 523 tiles at 3130
    assert "T.where" not in conv and "T.int64(3130)) +" in conv, conv
    conv = next(t for n, t in _scheduled_funcs(_conv(1, 16, 32, 56), nhwc=True).items()
                if "conv2d" in n)
    assert "T.unroll(T.int64(4))" in conv and "T.min(" not in conv and "T.where" not in conv, conv


def test_rows_that_tiles_do_not_divide_fuse_with_the_axis_above():
    """56 pixels a row in 6-row tiles compute 60 (the last tile overlaps the one before it):
    7% of the work done twice. Where fusing the rows with the axis above saves 5% or more of
    the computed rows, they are fused (3136 pixels: 3138 computed; ResNet-50's 1x1 and 3x3
    convs on 56x56 and 28x28 maps 5-18% faster, in one process). Not over a short innermost
    reduction: a first conv's 3 channels cannot hide the fused rows' address arithmetic (24%
    slower), and not where the tiles divide the rows (a 16-channel conv: exact 4-row tiles)."""
    def conv(model):
        return next(t for n, t in _scheduled_funcs(model, nhwc=True).items() if "conv2d" in n)

    deep = conv(CASES["conv_1x1_deep_56_rows"]())
    assert "T.int64(3136)" in deep and "T.int64(3130)) +" in deep, deep
    three = conv(CASES["conv_3x3_deep_28_rows"]())
    assert "T.int64(784)" in three and "T.int64(778)) +" in three, three
    first = conv(CASES["conv_7x7_3_channels_stride2"]())
    assert "T.int64(3136)" not in first and "T.int64(50)) +" in first, first
    short = conv(_conv(1, 16, 32, 56))
    assert "T.int64(3136)" not in short and "T.unroll(T.int64(4))" in short, short


def _parallel_loop(text: str) -> str:
    import re

    head = text.split('T.sblock("conv2d_nhwc_init")')[0]
    return re.findall(r"for (\w+) in T\.parallel", head)[-1]


def test_large_batches_run_one_image_at_a_time():
    """With the weights outermost, a batch whose activations outgrow L2 is re-read for every
    16 output channels (ResNet-50 batch 8: 64 x 1.6 MB for one 1x1 conv). When re-reading the
    weights once per image moves less, the batch loop goes outermost (ResNet-50 batch 8:
    -9.6% in one process). Small weights keep their own order (activation tiles outermost),
    also once the pixel axes are fused (the weight size was looked up on the wrong iter then)."""
    conv = next(t for n, t in _scheduled_funcs(CASES["conv_1x1_batch_outer"](), nhwc=True).items()
                if "conv2d" in n)
    # the batch (nn, or ax0 once the pixel axes are fused) leads the parallel loop
    assert _parallel_loop(conv).startswith(("nn_ff_0", "ax0_ax2_0")), _parallel_loop(conv)
    conv = next(t for n, t in _scheduled_funcs(CASES["conv_3x3_fused_pixels"](), nhwc=True).items()
                if "conv2d" in n)  # a batch of one, 9 KB of weights: activation tiles outermost
    assert _parallel_loop(conv).startswith("ax0_ax1_0"), _parallel_loop(conv)


def test_weights_that_fit_in_l2_under_a_large_output_go_innermost():
    """Weights above cache_bytes went outermost, so each activation tile was re-read once
    per 16 output channels. Where they fit in L2 and the output is 4x their size or more,
    activation tiles go outermost and the weights are re-read from L2 instead (ResNet-50's
    1x1 convs of 128 to 512 channels on 28x28 maps 12% faster). Weights under a small output
    (a 7x7 map) keep the weights' blocks outermost, and so does ``pixels_outer_ratio=0``."""
    def conv(model, **cfg):
        return next(t for n, t in _scheduled_funcs(model, nhwc=True, **cfg).items()
                    if "conv2d" in n)

    large_out = CASES["conv_1x1_pixels_outer"]()
    assert _parallel_loop(conv(large_out)).startswith("ax0_ax1_0"), _parallel_loop(conv(large_out))
    assert _parallel_loop(conv(large_out, pixels_outer_ratio=0)).startswith("ax2_0"), \
        _parallel_loop(conv(large_out, pixels_outer_ratio=0))
    small_out = _conv(1, 128, 512, 7)  # 100 KB of output under 256 KB of weights
    assert _parallel_loop(conv(small_out)).startswith(("ax2_0", "ff_0")), _parallel_loop(conv(small_out))


def test_channel_counts_that_fill_no_tile_are_padded_with_zero_filters():
    """58 and 116 output channels left 2- and 4-lane vectors, 232 (29 vectors) a one-vector
    tile: ShuffleNetV2 ran at 1.4-1.5x ONNX Runtime. Such convs compute 64 / 120 / 240
    channels with zero filters, and the real ones are sliced out in a pass of its own (inlined
    into the tile's write-back, the slice stored its padded lanes past the output: the accuracy
    gate caught it). ShuffleNetV2 0.86x ONNX Runtime after."""
    from kiln.optimize.channel_pad import padded_channels

    assert [padded_channels(c, 8) for c in (58, 116, 232, 464, 24, 1000, 48, 61, 6)] == \
        [64, 120, 240, 464, 24, 1000, 48, 64, 6]
    assert padded_channels(112, 4) == 112 and padded_channels(116, 4) == 120  # 28, 29 vectors
    assert padded_channels(9, 8) == 9  # 9 -> 16: 78% more
    for case, padded in (("conv_58_channels", 64), ("conv_116_channels_residual", 120)):
        funcs = _scheduled_funcs(CASES[case](), nhwc=True)
        (conv,) = [t for n, t in funcs.items() if "conv2d" in n]
        head = conv.split("):\n")[0]
        assert f"T.int64({padded})), \"float32\")" in head, head  # the padded weights
        assert "T.unroll" in conv and "T.vectorized(T.int64(8))" in conv, conv
        # the slice (with the bias, residual and ReLU) is its own loop after the tile's
        assert conv.count("T.parallel") >= 3, conv


def test_grouped_conv_vectors_stay_within_one_group():
    """With 4 output channels per group, a vector of 8 channels read two input channels (one
    per group), which TVM loaded lane by lane. The vector is one group wide instead (4 lanes,
    up to 8 rows: 6 of these 12), so that each lane reads the same, broadcast, input value."""
    funcs = _scheduled_funcs(CASES["conv_grouped_4_per_group"](), nhwc=True)
    (conv,) = [t for n, t in funcs.items() if "conv2d" in n]
    update = conv.split('T.sblock("group_conv2d_nhwc_update")')[0].rsplit("for ", 3)
    assert "T.vectorized(T.int64(4))" in update[-1] and "T.unroll(T.int64(6))" in update[-2], conv
    wide = _scheduled_funcs(_model(  # 8 channels per group: whole vectors, as before
        [helper.make_node("Conv", ["x", "w"], ["y"], group=4, pads=[1, 1, 1, 1])],
        [_f32("x", [1, 32, 12, 12])], [_f32("y", [1, 32, 12, 12])], {"w": _w(32, 8, 3, 3)}),
        nhwc=True)
    (conv,) = [t for n, t in wide.items() if "conv2d" in n]
    assert "T.vectorized(T.int64(4))" not in conv and "T.vectorized(T.int64(8))" in conv, conv


def test_a_replayed_trace_gets_the_overlapping_last_tile_back():
    """A tuning record stores the schedule's trace, and the overlap rewrite is not a traced
    instruction: replayed alone, the record gave back the predicated tile (ResNet-50 tuned
    ran 80.9 ms against 67.0 for the defaults). The trace marks each tile's blocks, and
    ``overlap_annotated_tiles`` (applied with the tuning database) repeats the rewrite: the
    replayed kernel is then the one Kiln scheduled and measured."""
    import tvm
    from tvm import s_tir

    from kiln.optimize.cpu_schedule import (CPUScheduleConfig, _Scheduler,
                                            overlap_annotated_tiles)

    raw = next(f for n, f in _scheduled_funcs(CASES["matmul_prime_rows"](), as_text=False,
                                              unscheduled=True).items() if "matmul" in n)
    sched = _Scheduler(raw, CPUScheduleConfig(vector_lanes=8), frozenset())
    scheduled = sched.run()
    replay = s_tir.Schedule(raw)
    sched.sch.trace.apply_to_schedule(replay, remove_postproc=False)
    replayed = replay.mod["main"]
    assert "T.where" in replayed.script() and "T.min(" not in replayed.script()
    fixed = overlap_annotated_tiles(replayed)
    assert "T.where" not in fixed.script() and fixed.script().count("T.min(") == 3
    tvm.ir.assert_structural_equal(fixed, scheduled)


def test_transposes_vectorize_the_last_axis_over_affine_loops():
    # 3 channels last: parallel over images x rows (80 >= PARALLEL_CHUNKS), a plain loop
    # over the columns, the channels one 3-lane vector; no div/mod lane by lane
    funcs = _scheduled_funcs(CASES["transpose_channels_last"](), unscheduled=False)
    text = next(t for n, t in funcs.items() if "transpose" in n)
    assert "T.parallel(T.int64(80))" in text and "range(T.int64(20))" in text
    assert "T.vectorized(T.int64(3))" in text
    # reshape then transpose: one pass (the reshape inlined), in tiles of 8 dims (the
    # input's contiguous axis) by a vector of 8 tokens
    funcs = _scheduled_funcs(CASES["reshape_transpose_heads"]())
    [text] = [t for n, t in funcs.items() if "transpose" in n]
    assert _blocks(text) == ["root", "T_transpose"]
    assert "range(T.int64(8))" in text and "T.vectorized(T.int64(8))" in text
    inner = text[text.index("range(T.int64(8))"):]
    assert inner.index("range(T.int64(8))") < inner.index("T.vectorized(T.int64(8))")
