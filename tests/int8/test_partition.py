"""Accelerator partitioning for DPUCZDX8G (kv260) and TIDL (jacinto_tda4vm): exact shares and
reasons for known graphs, power-of-two segments, simulated accuracy, the artifact's hand-off."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import onnx
import pytest
from conftest import requires_qemu
from int8_models import calibration, mixed_ops, write_fixture
from onnx import numpy_helper

from kiln.compiler import compile_model
from kiln.options import CompileOptions, QuantizeOptions
from kiln.partition import partition_model

# MACs of small_cnn: conv 3->8 3x3 on 16x16, depthwise 3x3, pointwise 8->8, Gemm 8->10
CNN_MACS = 8 * 16 * 16 * 27 + 8 * 16 * 16 * 9 + 8 * 16 * 16 * 8 + 10 * 8
# MACs of mixed_ops: conv 3->4 3x3 and conv 4->4 9x9, both on 8x8
MIXED_MACS = (4 * 64 * 27, 4 * 64 * 4 * 81)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = write_fixture(tmp_path_factory.mktemp("part"))
    onnx.save(mixed_ops(), root / "mixed.onnx")
    return root


def _samples(n=8, shape=(1, 3, 16, 16)):
    rng = np.random.default_rng(3)
    return [{"x": rng.uniform(0, 1, shape).astype(np.float32)} for _ in range(n)]


def _part(work, model, acc, target, shape=(1, 3, 16, 16)):
    stage = work / f"stage-{acc}-{model}"
    report = partition_model(acc, target, work / model, _samples(shape=shape),
                             QuantizeOptions(calibration="-"), work / f"w-{acc}-{model}", stage)
    return report, stage / "accelerator"


def test_tidl_runs_the_whole_cnn(work):
    r, folder = _part(work, "cnn.onnx", "tidl", "jacinto_tda4vm")
    assert (r["nodes"], r["nodes_offloaded"], r["cpu_ops"]) == (11, 11, [])
    assert r["macs"] == CNN_MACS and r["mac_share"] == 1.0 and r["status"] == "codegen"
    assert [s["device"] for s in r["segments"]] == ["accelerator"]
    opts = json.loads((folder / "tidl_compile_options.json").read_text())
    assert opts["advanced_options:quantization_scale_type"] == 1  # power-of-two
    assert opts["advanced_options:prequantized_model"] == 1
    assert r["simulated_accuracy"]["outputs"][0]["cosine"] >= 0.99


def test_mixed_graph_reasons_and_shares(work):
    dpu, _ = _part(work, "mixed.onnx", "dpu", "kv260", (1, 3, 8, 8))
    assert (dpu["nodes"], dpu["nodes_offloaded"]) == (5, 4)
    assert dpu["macs"] == sum(MIXED_MACS) and dpu["mac_share"] == 1.0
    assert dpu["cpu_ops"] == [{"node": "Sigmoid_2", "op": "Sigmoid",
                               "reason": "Sigmoid is not in DPUCZDX8G's operator set"}]
    assert [s["device"] for s in dpu["segments"]] == ["accelerator", "cpu", "accelerator"]
    tidl, _ = _part(work, "mixed.onnx", "tidl", "am62a", (1, 3, 8, 8))
    assert (tidl["nodes"], tidl["nodes_offloaded"]) == (5, 4)
    assert tidl["macs_offloaded"] == MIXED_MACS[0]
    assert tidl["mac_share"] == pytest.approx(MIXED_MACS[0] / sum(MIXED_MACS))
    assert tidl["cpu_ops"] == [{"node": "Conv_3", "op": "Conv", "reason":
                                "Conv: kernel_shape [9, 9] not in [1, 3, 5, 7] (TIDL (C7x/MMA))"}]
    # the segment boundaries are the tensors that cross them
    seg = tidl["segments"]
    assert seg[0]["outputs"] == seg[1]["inputs"] and seg[1]["outputs"] == seg[2]["inputs"]


def test_dpu_segments_have_power_of_two_scales(work):
    r, folder = _part(work, "cnn.onnx", "dpu", "kv260")
    files = [s["file"] for s in r["segments"] if s["device"] == "accelerator"]
    assert files == ["accelerator/subgraph_0.int8.onnx"]
    m = onnx.load(str(folder.parent / files[0]))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    qdq = [n for n in m.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(qdq) > 10
    for n in qdq:
        s = inits[n.input[1]].astype(np.float64)
        assert np.all(np.exp2(np.round(np.log2(s))) == s), (n.name, s)
        if len(n.input) > 2 and n.input[2]:
            assert not np.any(inits[n.input[2]]), "symmetric: zero points are 0"
    made = {o: n for n in m.graph.node for o in n.output}
    biased = [n for n in m.graph.node if n.op_type in ("Conv", "Gemm") and len(n.input) > 2]
    assert len(biased) == 4  # 3 Conv + Gemm: each bias is read at input scale * weight scale
    for n in biased:
        x, w, b = (inits[made[t].input[1]].astype(np.float64) for t in n.input)
        assert np.array_equal(np.ravel(b), np.ravel(x * w)), n.name
    assert r["simulated_accuracy"]["outputs"][0]["cosine"] >= 0.99
    page = (folder / "partition.html").read_text()
    assert page.count('class="n"') == 2 + r["nodes"] and "Softmax is not in DPUCZDX8G" in page


@requires_qemu
def test_kv260_artifact(work, tmp_path):
    opts = CompileOptions(quantize=QuantizeOptions(calibration=str(work / "calib.npz")))
    res = compile_model(work / "cnn.onnx", target="kv260", options=opts,
                        output=tmp_path / "kv260.tar.gz")
    m = res.manifest
    assert m.verification["verified"] and m.verification["passed"]  # the A53 part, in qemu
    p = m.partition
    assert p["accelerator"] == "DPUCZDX8G" and p["status"] == "codegen"
    assert (p["nodes"], p["nodes_offloaded"], p["macs"]) == (11, 10, CNN_MACS)
    assert p["cpu_ops"][0]["op"] == "Softmax"
    assert p["simulated_accuracy"]["outputs"][0]["cosine"] >= 0.99
    names = set(tarfile.open(res.artifact).getnames())
    assert {"accelerator/README.md", "accelerator/partition.json",
            "accelerator/subgraph_0.int8.onnx", "accelerator/cpu_segment_1.onnx",
            "model.so"} <= names
    assert "accelerator/README.md" in m.files
    readme = tarfile.open(res.artifact).extractfile("accelerator/README.md").read().decode()
    assert "vai_c_xir" in readme and "DPUCZDX8G/KV260/arch.json" in readme


def test_weight_scale_is_the_power_of_two_with_the_smaller_error():
    """Weights get 2^ceil(log2 s) or half of it, whichever requantizes them more exactly
    (ceil alone took MobileNetV2's simulated DPU cosine down to 0.947)."""
    from kiln.partition.pow2 import _weight_scale, is_power_of_two, pow2_ceil

    rng = np.random.default_rng(0)
    scale = np.float32(0.0123)                      # ceil: 2^-6 = 0.015625
    small = np.clip(np.round(rng.normal(0, 10, 4096)), -127, 127).astype(np.int8)
    small[0] = 90                                   # one outlier, the rest within +-40
    got = _weight_scale(numpy_helper.from_array(small, "w"), scale)
    assert is_power_of_two(got) and float(got) == 2.0 ** -7   # finer: the outlier clips

    def err(step):
        real = small.astype(np.float64) * float(scale)
        return np.mean((np.clip(np.round(real / step), -128, 127) * step - real) ** 2)
    assert err(float(got)) < err(float(pow2_ceil(scale)))
    full = np.linspace(-127, 127, 255).astype(np.int8)   # the whole range used: keep ceil
    assert float(_weight_scale(numpy_helper.from_array(full, "w"), scale)) == 2.0 ** -6
    bias = np.arange(-5, 5, dtype=np.int32)          # int32 biases: ceil
    assert float(_weight_scale(numpy_helper.from_array(bias, "b"), scale)) == 2.0 ** -6


def _long_tail_qdq(tmp_path):
    """Conv 1x1 (8->8, bias) then ReLU on [1, 8, 8, 8] inputs that are N(0, 1) but for one
    value of 33 per sample, quantized by ONNX Runtime (symmetric, per tensor) as for the DPU;
    the input's scale is 33/127 = 0.26, so 2^ceil gives 0.5 where 0.25 clips only the outlier."""
    from kiln.examples.models import _Builder
    from kiln.quantize.ort_quant import quantize_onnx

    b = _Builder(4)
    t = b.op("Conv", ["x", b.weight((8, 8, 1, 1)), b.weight((8,), 0.1)])
    b.nodes.append(b.h.make_node("Relu", [t], ["y"], name="relu"))
    onnx.save(b.model([b.io("x", [1, 8, 8, 8])], [b.io("y", [1, 8, 8, 8])]), tmp_path / "m.onnx")
    rng = np.random.default_rng(7)
    samples = []
    for _ in range(8):
        x = rng.standard_normal((1, 8, 8, 8)).astype(np.float32)
        x.flat[rng.integers(x.size)] = 33.0
        samples.append({"x": x})
    q = quantize_onnx(tmp_path / "m.onnx", samples,
                      QuantizeOptions(calibration="-", symmetric=True, per_channel=False),
                      tmp_path, name="m.int8.onnx")
    return tmp_path / "m.onnx", onnx.load(str(q.path)), samples


def _cosine(float_path, model, samples):
    import onnxruntime as ort

    ref = ort.InferenceSession(str(float_path), providers=["CPUExecutionProvider"])
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    r = np.concatenate([ref.run(None, s)[0].ravel() for s in samples]).astype(np.float64)
    g = np.concatenate([got.run(None, s)[0].ravel() for s in samples]).astype(np.float64)
    return float(g @ r / np.linalg.norm(g) / np.linalg.norm(r))


def _scales(model):
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    made = {o: n for n in model.graph.node for o in n.output}
    x_scale = next(float(inits[n.input[1]]) for n in model.graph.node
                   if n.op_type == "QuantizeLinear" and n.input[0] == "x")
    return inits, made, x_scale


def test_activation_scale_is_the_power_of_two_with_the_smaller_error(tmp_path):
    """With calibration samples, an activation's scale is the power of two whose
    quantize-dequantize error on them is smallest: here the finer one for the long-tailed input
    (2^ceil loses a bit on every value to keep one outlier), and the result is closer to float."""
    from kiln.partition.pow2 import is_power_of_two, pow2_ceil, to_power_of_two

    fp32, qdq, samples = _long_tail_qdq(tmp_path)
    _, _, s0 = _scales(qdq)
    assert 0.25 < s0 < 0.5 and float(pow2_ceil(np.float32(s0))) == 0.5
    ceil, mse = onnx.ModelProto(), onnx.ModelProto()
    ceil.CopyFrom(qdq)
    mse.CopyFrom(qdq)
    assert to_power_of_two(ceil) > 0 and to_power_of_two(mse, samples) > 0
    assert _scales(ceil)[2] == 0.5 and _scales(mse)[2] == 0.25
    for m in (ceil, mse):
        inits, made, _ = _scales(m)
        for n in m.graph.node:
            if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
                assert is_power_of_two(inits[n.input[1]]), n.name
    c_ceil, c_mse = _cosine(fp32, ceil, samples), _cosine(fp32, mse, samples)
    assert c_mse > c_ceil + 1e-3, (c_ceil, c_mse)   # measured 0.9955 -> 0.9980


def test_bias_scale_is_input_scale_times_weight_scale(tmp_path):
    """An int32 bias keeps the scale input_scale * weight_scale (of their power-of-two
    scales): integer Conv (ONNX Runtime's fused QLinearConv, the accelerators) reads the bias
    at that scale whatever its DequantizeLinear says. Rounding the bias scale up on its own
    took a SqueezeNet's simulated DPU cosine from 0.9999 to 0.963."""
    from kiln.partition.pow2 import to_power_of_two

    fp32, qdq, samples = _long_tail_qdq(tmp_path)
    for with_samples in (None, samples):
        m = onnx.ModelProto()
        m.CopyFrom(qdq)
        to_power_of_two(m, with_samples)
        inits, made, x_scale = _scales(m)
        conv = next(n for n in m.graph.node if n.op_type == "Conv")
        w_scale = float(inits[made[conv.input[1]].input[1]])
        b_dq = made[conv.input[2]]
        assert inits[b_dq.input[0]].dtype == np.int32
        assert np.ravel(inits[b_dq.input[1]]).tolist() == [x_scale * w_scale], inits[b_dq.input[1]]
        assert _cosine(fp32, m, samples) > 0.99
