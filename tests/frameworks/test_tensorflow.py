"""TFLite (float32 and int8) against the LiteRT interpreter, and TensorFlow / Keras (SavedModel,
.keras, .h5) against TensorFlow itself: compiled for the host and rasp4b (qemu), run, compared.

The models are built here with Keras and TF's TFLiteConverter (seeded), so these tests need
tensorflow-cpu (the ``test`` extra installs it: about 1 minute of pip).
"""

from __future__ import annotations

import json
import os
import tarfile

import numpy as np
import pytest

from conftest import requires_qemu, run_kiln

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
tf = pytest.importorskip("tensorflow", reason="tensorflow is not installed: pip install "
                         "'kilnml[tensorflow]' (needed to build the test models)")
pytest.importorskip("tflite", reason="the tflite package is not installed")
litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert is not installed")
import keras  # noqa: E402

ATOL = 1e-4


def _keras_model(batch=1):
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3), batch_size=batch, name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
    x = keras.layers.Conv2D(16, 1)(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(10, activation="softmax", name="probs")(x))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tf")
    model = _keras_model()
    model.save(root / "model.keras")
    model.save(root / "model.h5")
    _keras_model(batch=None).export(str(root / "saved"), verbose=False)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    (root / "f32.tflite").write_bytes(conv.convert())

    def representative():
        rng = np.random.default_rng(0)
        for _ in range(32):
            yield [rng.standard_normal((1, 16, 16, 3)).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    (root / "int8.tflite").write_bytes(conv.convert())
    return root, model


def _litert(path, x):
    interp = litert.Interpreter(model_path=str(path))
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"])


def _compile_and_run(tmp_path, model_path, target_args, x, extra=()):
    artifact, out, xp = tmp_path / "a.tar.gz", tmp_path / "y.npz", tmp_path / "x.npy"
    res = run_kiln("compile", model_path, *target_args, *extra, "-o", artifact)
    assert res.returncode == 0, res.stderr
    assert "(detected)" in res.stderr and "NOT VERIFIED" not in res.stderr
    with tarfile.open(artifact) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
    np.save(xp, x)
    res = run_kiln("run", artifact, "--input", f"{manifest['inputs'][0]['name']}={xp}",
                   "--output", out)
    assert res.returncode == 0, res.stderr
    with np.load(out) as y:
        return manifest, y[manifest["outputs"][0]["name"]], res.stderr


X = np.random.default_rng(9).standard_normal((1, 16, 16, 3)).astype(np.float32)


@requires_qemu  # the int8 test below compiles TFLite for the host
@pytest.mark.parametrize("target_args,mode", [(["--target", "rasp4b"], "qemu-aarch64")])
def test_tflite_float32_matches_litert(models, tmp_path, target_args, mode):
    root, _ = models
    manifest, y, log = _compile_and_run(tmp_path, root / "f32.tflite", target_args, X)
    assert mode in log
    np.testing.assert_allclose(y, _litert(root / "f32.tflite", X), rtol=0, atol=ATOL)
    assert manifest["framework"] == "tflite"
    assert manifest["verification"]["reference"].startswith("LiteRT")


def test_tflite_int8_matches_litert_exactly(models, tmp_path):
    root, _ = models
    xq = np.random.default_rng(10).integers(-128, 128, (1, 16, 16, 3)).astype(np.int8)
    manifest, y, _ = _compile_and_run(tmp_path, root / "int8.tflite",
                                      ["--platform", "LINUX/X86_64"], xq)
    ref = _litert(root / "int8.tflite", xq)
    assert y.dtype == np.int8 and manifest["inputs"][0]["dtype"] == "int8"
    # integer outputs: the gate demands equality; here at most one quantization step apart
    assert int(np.abs(y.astype(np.int32) - ref.astype(np.int32)).max()) <= 1
    assert manifest["source"]["quantized_io"] is True


@pytest.mark.parametrize("name,target_args,mode", [
    ("model.keras", ["--platform", "LINUX/X86_64"], "native"),
    pytest.param("model.h5", ["--target", "rasp4b"], "qemu-aarch64", marks=requires_qemu)])
def test_keras_files_match_keras(models, tmp_path, name, target_args, mode):
    root, model = models
    manifest, y, log = _compile_and_run(tmp_path, root / name, target_args, X)
    assert mode in log and manifest["framework"] == "keras"
    np.testing.assert_allclose(y, model(X).numpy(), rtol=0, atol=ATOL)
    assert manifest["verification"]["reference"].startswith("Keras")


def test_saved_model_dynamic_batch_bound_by_input_shape(models, tmp_path):
    root, model = models
    x4 = np.random.default_rng(11).standard_normal((4, 16, 16, 3)).astype(np.float32)
    res = run_kiln("compile", root / "saved", "--platform", "LINUX/X86_64")
    assert res.returncode == 13 and "error[invalid_input_shape]" in res.stderr, res.stderr
    manifest, y, _ = _compile_and_run(tmp_path, root / "saved", ["--platform", "LINUX/X86_64"],
                                      x4, extra=("--input-shape", '{"image": [4, 16, 16, 3]}'))
    assert manifest["framework"] == "tensorflow" and manifest["inputs"][0]["shape"] == [4, 16, 16, 3]
    np.testing.assert_allclose(y, model(x4).numpy(), rtol=0, atol=ATOL)


def test_keras_lambda_layers_are_refused_in_safe_mode(tmp_path):
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,), batch_size=1)
    model = keras.Model(inp, keras.layers.Lambda(lambda t: t * 2.0)(inp))
    model.save(tmp_path / "lambda.keras")
    from kiln.errors import KilnError
    from kiln.importers import import_model

    with pytest.raises(KilnError) as exc:
        import_model(tmp_path / "lambda.keras", workdir=tmp_path)
    assert exc.value.code == "invalid_model" and "safe mode" in exc.value.message
