"""Host-less Arm Ethos-U55 (corstone300, alias ethos-u55: Cortex-M55 without an OS + Ethos-U55-256):
a float Keras CNN with --quantize int8 --calibration becomes an int8 TFLite (gated against the
float model under LiteRT) and Vela's model and estimate; no CPU library, and run/load refuse it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from kiln.errors import ERROR_CODES, KilnError
from kiln.options import CompileOptions, QuantizeOptions

pytest.importorskip("ethosu.vela")
pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

KILN = Path(sys.executable).parent / "kiln"


def _keras_model(path: Path, size: int, body) -> Path:
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((size, size, 3), batch_size=1, name="image")
    x = keras.layers.GlobalAveragePooling2D()(body(keras, inp))
    keras.Model(inp, keras.layers.Dense(10, name="logits")(x)).save(path)
    return path


def _cnn(keras, inp):
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
    return keras.layers.MaxPooling2D()(keras.layers.Conv2D(16, 1)(x))


def _calibration(path: Path, size: int, n: int = 16) -> Path:
    rng = np.random.default_rng(1)
    np.savez(path, image=rng.uniform(0, 1, (n, 1, size, size, 3)).astype(np.float32))
    return path


def _int8(calib: Path) -> CompileOptions:
    return CompileOptions(quantize=QuantizeOptions(mode="int8", calibration=str(calib)))


@pytest.fixture(scope="module")
def u55(tmp_path_factory):
    from kiln.compiler import compile_model

    root = tmp_path_factory.mktemp("u55")
    model = _keras_model(root / "cnn.keras", 16, _cnn)
    calib = _calibration(root / "calib.npz", 16)
    res = compile_model(model, target="ethos-u55", options=_int8(calib),
                        output=root / "cnn-u55.tar.gz")
    return res, model, calib


def test_u55_artifact_is_vela_only(u55):
    res, _, _ = u55
    with tarfile.open(res.artifact) as tar:
        names = set(tar.getnames()) - {"."}
        vela = tar.extractfile("accelerator/model_vela.tflite").read()
        readme = tar.extractfile("accelerator/README.md").read().decode()
    assert names - {"accelerator"} == {"manifest.json", "model_int8.tflite",
                     "accelerator/model_vela.tflite", "accelerator/vela_summary.csv",
                     "accelerator/README.md"}
    assert not any(n.endswith(".so") or n == "kiln_run" for n in names)
    assert vela[4:8] == b"TFL3"
    assert "TensorFlow Lite Micro" in readme and "ethos_u_init" in readme
    m = res.manifest
    assert m.target["name"] == "corstone300" and m.target["spec"]["os"] == "none"
    assert m.runtime["kind"] == "none" and m.runtime["library"] is None
    assert [t.dtype for t in m.signature.inputs] == ["int8"]  # what the firmware feeds


def test_u55_manifest_has_vela_estimate(u55):
    p = u55[0].manifest.partition
    assert p["accelerator"] == "Arm ethos-u55-256" and p["status"] == "codegen"
    est = p["estimate"]
    assert est["accelerator_configuration"] == "Ethos_U55_256"
    assert est["system_config"] == "Ethos_U55_High_End_Embedded"
    assert est["memory_mode"] == "Shared_Sram" and est["core_clock"] == 500_000_000
    # conv 3x3x3->8, depthwise 3x3, 1x1 conv 8->16 on 16x16; Vela also counts the 2x2 max pool
    # and the 8x8 global average as MACs, and the 16->10 dense (as in the imx93 test)
    macs = 256 * 8 * 27 + 256 * 8 * 9 + 256 * 16 * 8 + 64 * 16 * 4 + 64 * 16 + 16 * 10
    assert est["nn_macs"] == macs
    assert est["cycles_total"] > 0 and 0 < est["inference_time"] < 0.01
    assert est["inference_time"] == pytest.approx(est["cycles_total"] / 500e6, rel=1e-3)
    assert est["sram_memory_used"] > 0 and est["off_chip_flash_memory_used"] > 0
    assert p["npu_operators"] >= 5 and p["cpu_operators"] == 0
    assert p["npu_operator_share"] == 1.0 and p["cpu_fallback"] == []


def test_u55_gate_runs_the_int8_tflite_not_the_npu(u55):
    ver = u55[0].manifest.verification
    assert ver["verified"] is False and ver["npu_run"] is False and ver["passed"] is True
    assert "NPU was not run" in ver["reason"] and "LiteRT" in ver["runtime"]
    (out,) = ver["outputs"]
    assert out["cosine"] >= 0.99 and out["passed"]
    assert out["max_abs_error"] <= 0.1 * out["max_abs_reference"]
    assert 0 <= out["top1_agreement"] <= 1
    q = u55[0].manifest.quantization
    assert q["source"] == "quantized by Kiln" and q["calibration_samples"] == 16


def test_u55_reports_ops_left_to_the_cortex_m(tmp_path):
    from kiln.compiler import compile_model

    def body(keras, inp):  # SQRT has no int8 TFLite kernel: it stays float, on the CPU
        x = keras.layers.Conv2D(8, 3, padding="same")(inp)
        return keras.ops.sqrt(keras.ops.abs(x) + 1.0)

    model = _keras_model(tmp_path / "sqrt.keras", 8, body)
    np.savez(tmp_path / "x.npz", image=np.full((1, 8, 8, 3), 0.5, np.float32))
    res = compile_model(model, target="ethos-u55", output=tmp_path / "sqrt.tar.gz",
                        options=_int8(_calibration(tmp_path / "c.npz", 8)),
                        sample_inputs=tmp_path / "x.npz")
    p = res.manifest.partition
    assert p["cpu_operators"] >= 1 and 0 < p["npu_operator_share"] < 1
    ops = {c["op"] for c in p["cpu_fallback"]}
    assert "SQRT" in ops and all(c["reason"] for c in p["cpu_fallback"])
    ver = res.manifest.verification  # the gate ran the given inputs, not the calibration set
    assert ver["outputs"][0]["cosine"] >= 0.99 and ver["inputs"] == "input(s) from x.npz"


def test_u55_float_compile_and_onnx_fail_with_codes(u55, tmp_path):
    from kiln.compiler import compile_model
    from kiln.examples.models import cnn

    _, model, calib = u55
    with pytest.raises(KilnError) as info:
        compile_model(model, target="ethos-u55", output=tmp_path / "f.tar.gz")
    assert info.value.code == "invalid_quantize_options"
    assert "--quantize int8 --calibration" in info.value.hint
    onnx_path = tmp_path / "cnn.onnx"
    onnx_path.write_bytes(cnn().SerializeToString())
    with pytest.raises(KilnError) as info:
        compile_model(onnx_path, target="corstone300", options=_int8(calib))
    assert info.value.code == "quantize_input_unsupported" and "int8 TFLite" in info.value.message


def _kiln(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "KILN_DEBUG"}
    return subprocess.run([str(KILN), *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_u55_run_and_load_refuse_inspect_works(u55, tmp_path):
    import kiln

    artifact = u55[0].artifact
    with pytest.raises(KilnError) as info:
        kiln.load(artifact)
    assert info.value.code == "target_mismatch" and "model_vela.tflite" in info.value.hint
    np.save(tmp_path / "x.npy", np.zeros((1, 16, 16, 3), np.int8))
    res = _kiln("run", artifact, "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npz",
                cwd=tmp_path)
    assert res.returncode == ERROR_CODES["target_mismatch"].exit_status, res.stderr
    assert res.stderr.startswith("error[target_mismatch]: ") and "Traceback" not in res.stderr
    shown = _kiln("inspect", artifact, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    assert "Arm ethos-u55-256 (codegen)" in text and "500 MHz" in text
    assert "NOT verified" in text and "no CPU library" in text
    data = json.loads(_kiln("inspect", artifact, "--json", cwd=tmp_path).stdout)
    assert data["partition"]["estimate"]["cycles_total"] > 0
    assert data["footprint"]["model_bytes"] == 0


def test_u55_takes_a_pre_quantized_int8_tflite(u55, tmp_path):
    from kiln.compiler import compile_model

    res, _, calib = u55
    with tarfile.open(res.artifact) as tar:
        (tmp_path / "q.tflite").write_bytes(tar.extractfile("model_int8.tflite").read())
    again = compile_model(tmp_path / "q.tflite", target="ethos-u55", output=tmp_path / "q.tar.gz")
    m = again.manifest
    assert m.quantization["source"] == "pre-quantized int8 TFLite"
    assert m.partition["estimate"]["nn_macs"] == res.manifest.partition["estimate"]["nn_macs"]
    assert m.verification["passed"] is None and "no float model" in m.verification["reason"]
    with pytest.raises(KilnError) as info:
        compile_model(tmp_path / "q.tflite", target="ethos-u55", options=_int8(calib))
    assert info.value.code == "invalid_quantize_options"


def test_u55_cli_float_compile_and_bad_calibration(u55, tmp_path):
    _, model, _ = u55
    res = _kiln("compile", model, "--target", "ethos-u55", cwd=tmp_path)
    assert res.returncode == ERROR_CODES["invalid_quantize_options"].exit_status, res.stderr
    assert res.stderr.startswith("error[invalid_quantize_options]: ")
    assert "--quantize int8 --calibration" in " ".join(res.stderr.split())
    from kiln.compiler import compile_model

    np.savez(tmp_path / "bad.npz", pixels=np.zeros((2, 16, 16, 3), np.float32))
    with pytest.raises(KilnError) as info:  # the existing calibration checks, by input name
        compile_model(model, target="ethos-u55", options=_int8(tmp_path / "bad.npz"))
    assert info.value.code == "invalid_calibration" and "'image'" in info.value.hint


def test_u55_gate_fails_below_the_threshold(u55, tmp_path):
    from kiln.compiler import compile_model
    from kiln.options import Tolerance

    _, model, calib = u55
    strict = CompileOptions(quantize=_int8(calib).quantize,
                            tolerance=Tolerance(atol=1e-9, rtol=0.0, min_cosine=0.99))
    with pytest.raises(KilnError) as info:  # int8 rounding is far above 1e-9
        compile_model(model, target="ethos-u55", options=strict, output=tmp_path / "s.tar.gz")
    assert info.value.code == "accuracy_regression" and "Vela" in info.value.message
