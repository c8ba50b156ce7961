"""Bad int8 input through the real ``kiln`` command: each gets its own code, exit status and
hint, one line, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from int8_models import no_quantizable_op, write_fixture

from kiln.errors import ERROR_CODES

KILN = Path(sys.executable).parent / "kiln"


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    root = write_fixture(tmp_path_factory.mktemp("int8err"))
    onnx.save(no_quantizable_op(), root / "noq.onnx")
    np.savez(root / "noq.npz", x=np.ones((4, 1, 10), np.float32))
    good = np.random.default_rng(0).uniform(0, 1, (4, 1, 3, 16, 16)).astype(np.float32)
    np.savez(root / "wrong_name.npz", image=good)
    np.savez(root / "wrong_shape.npz", x=good[:, :, :, :8])
    np.savez(root / "wrong_dtype.npz", x=good.astype(np.float64))
    np.savez(root / "empty.npz", x=good[:0])
    bad = good.copy()
    bad[2, 0, 1, 3, 3] = np.nan
    bad[3, 0, 0, 0, 0] = np.inf
    np.savez(root / "nan.npz", x=bad)
    np.save(root / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    os.replace(root / "objects.npy", root / "pickled.npz")
    (root / "fake.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 64)
    return root


def kiln(work: Path, *args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "KILN_DEBUG"}
    return subprocess.run([str(KILN), "compile", *map(str, args), "--target", "ml_c5",
                           "-o", str(work / "out.tar.gz")], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)


CASES = [
    (["cnn.onnx", "--quantize", "int8", "--calibration", "wrong_name.npz"],
     "invalid_calibration", "missing ['x'], unknown ['image']"),
    (["cnn.onnx", "--quantize", "int8", "--calibration", "wrong_shape.npz"],
     "invalid_calibration", "expected [N, 1, 3, 16, 16] or [N, 3, 16, 16]"),
    (["cnn.onnx", "--quantize", "int8", "--calibration", "wrong_dtype.npz"],
     "invalid_calibration", "dtype float64, the model expects float32"),
    (["cnn.onnx", "--quantize", "int8", "--calibration", "pickled.npz"],
     "invalid_calibration", "not a readable .npz"),
    (["cnn.onnx", "--quantize", "int8", "--calibration", "empty.npz"],
     "empty_calibration", "holds no samples"),
    (["cnn.onnx", "--quantize", "int8", "--calibration", "nan.npz"],
     "calibration_not_finite", "holds 2 NaN or Inf value(s)"),
    (["noq.onnx", "--quantize", "int8", "--calibration", "noq.npz"],
     "nothing_to_quantize", "its ops: Exp, Sqrt"),
    (["cnn.onnx", "--calibration", "calib.npz"],
     "invalid_quantize_options", "--calibration needs --quantize int8"),
    (["cnn.onnx", "--quantize", "int8"],
     "invalid_quantize_options", "needs --calibration"),
    (["cnn.onnx", "--quantize", "int4", "--calibration", "calib.npz"],
     "invalid_quantize_options", "got 'int4'"),
    (["cnn.onnx", "--quantize", "int8", "--calibration", "calib.npz",
      "--calibration-method", "kl"], "invalid_quantize_options", "got 'kl'"),
    (["fake.tflite", "--quantize", "int8", "--calibration", "calib.npz"],
     "quantize_input_unsupported", "takes an ONNX model"),
    (["cnn.onnx", "--quantize", "int8", "--calibration", "missing.npz"],
     "file_not_found", "calibration file"),
]


@pytest.mark.parametrize("args,code,text", CASES, ids=[f"{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_int8_bad_input(work, args, code, text):
    res = kiln(work, *args)
    assert res.returncode == ERROR_CODES[code].exit_status, (res.returncode, res.stderr)
    err = " ".join(res.stderr.split())
    assert "Traceback" not in res.stderr and res.stdout.strip() == ""
    assert err.startswith(f"error[{code}]: ") and err.count("error[") == 1, err
    assert text in err and "(hint: " in err, err


def test_already_quantized_with_quantize(work, tmp_path):
    from int8_models import calibration

    from kiln.options import QuantizeOptions
    from kiln.quantize.ort_quant import quantize_onnx

    q = quantize_onnx(work / "cnn.onnx", [{"x": a} for a in calibration(4)["x"]],
                      QuantizeOptions(calibration="-"), tmp_path)
    res = kiln(work, q.path, "--quantize", "int8", "--calibration", "calib.npz")
    assert res.returncode == ERROR_CODES["invalid_quantize_options"].exit_status, res.stderr
    assert "already quantized" in res.stderr


def test_new_codes_use_the_reserved_exit_statuses():
    new = ("invalid_calibration", "empty_calibration", "calibration_not_finite",
           "nothing_to_quantize", "invalid_quantize_options", "quantization_failed",
           "quantize_input_unsupported")
    assert [ERROR_CODES[c].exit_status for c in new] == [26, 27, 28, 29, 46, 47, 48]
