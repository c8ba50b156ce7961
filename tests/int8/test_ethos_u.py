"""Arm Ethos-U (imx93: Cortex-A55 + Ethos-U65): an int8 TFLite model compiles for the A55 cores
(verified under qemu) and Vela's NPU model and estimate travel in the artifact."""

from __future__ import annotations

import csv
import io
import tarfile

import numpy as np
import pytest
from conftest import requires_qemu

pytest.importorskip("ethosu.vela")
tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def int8_tflite(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3), batch_size=1, name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
    x = keras.layers.MaxPooling2D()(keras.layers.Conv2D(16, 1)(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(10, name="logits")(x))

    def representative():
        rng = np.random.default_rng(0)
        for _ in range(16):
            yield [rng.uniform(0, 1, (1, 16, 16, 3)).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    path = tmp_path_factory.mktemp("ethos") / "int8.tflite"
    path.write_bytes(conv.convert())
    return path


@requires_qemu
def test_imx93_vela_handoff(int8_tflite, tmp_path):
    from kiln.compiler import compile_model

    res = compile_model(int8_tflite, target="imx93", output=tmp_path / "imx93.tar.gz")
    m = res.manifest
    assert m.verification["verified"] and m.verification["passed"]  # the A55 part, in qemu
    p = m.partition
    assert p["accelerator"] == "Arm ethos-u65-256" and p["status"] == "codegen"
    assert p["npu_operators"] >= 5 and p["cpu_operators"] == 0
    est = p["estimate"]
    assert est["accelerator_configuration"] == "Ethos_U65_256"
    # conv 3x3x3->8, depthwise 3x3, 1x1 conv 8->16 on 16x16, then Vela also counts the
    # 2x2 max pool and the 8x8 global average as MACs, and the 16->10 dense
    macs = 256 * 8 * 27 + 256 * 8 * 9 + 256 * 16 * 8 + 64 * 16 * 4 + 64 * 16 + 16 * 10
    assert est["nn_macs"] == macs
    assert 0 < est["inference_time"] < 1 and est["cycles_total"] > 0
    with tarfile.open(res.artifact) as tar:
        names = set(tar.getnames())
        assert {"accelerator/model_vela.tflite", "accelerator/vela_summary.csv",
                "accelerator/README.md", "model.so"} <= names
        vela = tar.extractfile("accelerator/model_vela.tflite").read()
        rows = list(csv.DictReader(io.StringIO(
            tar.extractfile("accelerator/vela_summary.csv").read().decode())))
    assert vela[4:8] == b"TFL3" and len(rows) == 1


def test_onnx_for_ethos_u_says_what_vela_needs(tmp_path):
    from kiln.partition.vela import vela_handoff

    r = vela_handoff(tmp_path / "m.onnx", "onnx", "imx93", tmp_path, tmp_path)
    assert r["status"] == "codegen" and "int8 .tflite" in r["skipped"]
