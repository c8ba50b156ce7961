"""--quantize int8 with a calibration set: the artifact against the float model (ONNX Runtime),
for an x86_64 target (native) and rasp4b (qemu-aarch64); a pre-quantized QDQ model as input."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from conftest import requires_qemu
from int8_models import calibration, write_fixture
from kiln.compiler import compile_model
from kiln.options import CompileOptions, QuantizeOptions


@pytest.fixture(scope="module")
def int8_dir(tmp_path_factory):
    return write_fixture(tmp_path_factory.mktemp("int8"))


# an x86_64 target with no AVX2/AVX-512 twin library: one build per compile (half the time)
HOST = "deeplens"


def _cosine(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _float(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.fixture(scope="module")
def host_int8(int8_dir):
    opts = CompileOptions(quantize=QuantizeOptions(calibration=str(int8_dir / "calib.npz")))
    return compile_model(int8_dir / "cnn.onnx", target=HOST, options=opts,
                         output=int8_dir / "cnn-int8-host.tar.gz")


def test_host_int8_matches_float(host_int8, int8_dir):
    import kiln

    m = host_int8.manifest
    q = m.quantization
    assert q["format"] == "QDQ" and q["calibration_samples"] == 16
    assert q["activations"] == "uint8 asymmetric" and q["weights"] == "int8 symmetric per-channel"
    assert {"Conv", "Gemm", "Add", "MaxPool"} <= set(q["quantized_ops"])
    assert "float32" in q["arithmetic"]  # honest: int8 rounding, float kernels
    row = m.verification["outputs"][0]
    assert m.verification["passed"] and row["metric"] == "int8" and row["min_cosine"] == 0.99
    assert row["cosine"] >= 0.99 and row["top1_agreement"] == 1.0
    sim = q["onnxruntime_int8_vs_fp32"]["outputs"][0]
    assert sim["cosine"] >= 0.99 and sim["top1_agreement"] == 1.0
    # held-out inputs, run through the Python runtime, against the float model
    x = np.random.default_rng(5).uniform(0, 1, (1, 3, 16, 16)).astype(np.float32)
    got = kiln.load(host_int8.artifact).run({"x": x})[0]
    ref = _float(int8_dir / "cnn.onnx", x)
    assert _cosine(got, ref) >= 0.99
    assert np.abs(got - ref).max() <= 0.1 * np.abs(ref).max()
    assert np.argmax(got) == np.argmax(ref)
    # and it differs from the float model: the quantization really happened
    assert np.abs(got - ref).max() > 1e-6


def test_prequantized_qdq_input(host_int8, int8_dir, tmp_path):
    """A QDQ ONNX file (here quantized by ORT directly) compiles without --quantize and is
    judged by the int8 gate against ONNX Runtime running the same QDQ file."""
    from kiln.quantize.ort_quant import quantize_onnx

    cal = calibration(8)
    q = quantize_onnx(int8_dir / "cnn.onnx", [{"x": a} for a in cal["x"]],
                      QuantizeOptions(calibration="-"), tmp_path)
    res = compile_model(q.path, target=HOST, output=tmp_path / "qdq.tar.gz",
                        options=CompileOptions())
    m = res.manifest
    assert m.quantization["source"] == "pre-quantized QDQ ONNX"
    row = m.verification["outputs"][0]
    assert row["metric"] == "int8" and row["cosine"] >= 0.999  # same QDQ model both sides
    assert m.source["file"] == "model.int8.onnx"


@requires_qemu
def test_rasp4b_int8_under_qemu(int8_dir, tmp_path):
    opts = CompileOptions(quantize=QuantizeOptions(calibration=str(int8_dir / "calib.npz"),
                                                   method="percentile"))
    res = compile_model(int8_dir / "cnn.onnx", target="rasp4b", options=opts,
                        output=tmp_path / "rasp4b.tar.gz")
    v = res.manifest.verification
    assert v["verified"] and v["mode"].startswith("qemu-aarch64") and v["passed"]
    assert v["inputs"] == "calibration sample 0"
    assert v["outputs"][0]["cosine"] >= 0.99
    assert res.manifest.quantization["calibration_method"] == "percentile"
    part = res.manifest.partition  # no accelerator on a Raspberry Pi: all on the CPU
    assert part["status"] == "cpu" and part["nodes_offloaded"] == 0 and part["mac_share"] == 0.0
    assert part["nodes"] > 0 and part["macs"] > 0 and "no neural accelerator" in part["reason"]
    assert part["simulated_accuracy"]["outputs"][0]["cosine"] >= 0.99
