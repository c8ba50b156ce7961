"""Bad input through the real ``kiln`` console script: one ``error[code]`` line, the code's exit
status, a hint, and never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from kiln.errors import ERROR_CODES
from kiln.examples.models import cnn

KILN = Path(sys.executable).parent / "kiln"


def kiln(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "KILN_DEBUG"}
    return subprocess.run([str(KILN), *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def assert_error(res: subprocess.CompletedProcess, code: str, *, hint: bool = True,
                 one_line: bool = True) -> str:
    """Check the contract of a failing command; return stderr with soft wraps undone."""
    expected = ERROR_CODES[code].exit_status
    assert expected != 0
    assert res.returncode == expected, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr + res.stdout, res.stderr
    assert res.stdout.strip() == "", res.stdout
    err = res.stderr.strip()
    assert err.startswith(f"error[{code}]: "), err
    assert err.count(f"error[{code}]") == 1 and err.count("error[") == 1, err
    if one_line:
        assert "\n" not in err, f"more than one line on stderr:\n{err}"
    text = " ".join(err.split())
    if hint:
        assert "(hint: " in text and text.endswith(")"), text
    return text


def hint_of(text: str) -> str:
    return text.split("(hint: ", 1)[1]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    assert KILN.is_file(), f"the kiln console script is not installed at {KILN}"
    root = tmp_path_factory.mktemp("cli")
    onnx.save(cnn(), root / "cnn.onnx")
    return root


@pytest.fixture(scope="module")
def artifact(work) -> Path:
    res = kiln("compile", work / "cnn.onnx", "--platform", "LINUX/X86_64", "-o", work / "a.tar.gz",
               cwd=work)
    assert res.returncode == 0, res.stderr
    assert (work / "a.tar.gz").is_file()
    return work / "a.tar.gz"


def compile_(work: Path, model, *args) -> subprocess.CompletedProcess:
    return kiln("compile", model, *args, "-o", work / "out.tar.gz", cwd=work)


# ---- the model file -----------------------------------------------------------------------------
def test_missing_model_file(work):
    text = assert_error(compile_(work, work / "nope.onnx", "--platform", "LINUX/X86_64"),
                        "file_not_found")
    assert "nope.onnx" in text
    assert not (work / "out.tar.gz").exists()


@pytest.mark.parametrize("kind", ["text", "truncated", "empty"])
def test_unreadable_model(work, tmp_path, kind):
    path = tmp_path / "m.onnx"
    if kind == "text":
        path.write_text("hello world")
    elif kind == "truncated":
        data = cnn().SerializeToString()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(b"")
    text = assert_error(compile_(work, path, "--platform", "LINUX/X86_64"), "invalid_model")
    assert "m.onnx" in text


# ---- targets and platforms ----------------------------------------------------------------------
def test_unknown_target_suggests_the_closest_name(work):
    text = assert_error(compile_(work, work / "cnn.onnx", "--target", "raspi4"), "unknown_target")
    assert "raspi4" in text and "rasp4b" in hint_of(text)


def test_unknown_platform_arch(work):
    text = assert_error(compile_(work, work / "cnn.onnx", "--platform", "LINUX/SPARC"),
                        "unknown_target")
    assert "SPARC" in text


def test_target_and_platform_together(work):
    res = compile_(work, work / "cnn.onnx", "--target", "rasp4b", "--platform", "LINUX/ARM64")
    text = assert_error(res, "unknown_target")
    assert "--target" in text and "--platform" in text


@pytest.mark.parametrize("target, arch", [("x86_win64", "windows"), ("ml_p3", "nvidia")])
def test_target_not_yet_supported(work, target, arch):
    text = assert_error(compile_(work, work / "cnn.onnx", "--target", target),
                        "target_not_yet_supported")
    assert target in text and arch in text and "kiln targets" in hint_of(text)
    assert not (work / "out.tar.gz").exists()


def test_unknown_compiler_option(work):
    res = compile_(work, work / "cnn.onnx", "--platform", "LINUX/X86_64",
                   "--compiler-options", '{"mcpus": "x"}')
    text = assert_error(res, "invalid_compiler_options")
    assert "mcpus" in text and "mcpu" in hint_of(text)


# ---- input shapes -------------------------------------------------------------------------------
def test_malformed_shape_json(work):
    res = compile_(work, work / "cnn.onnx", "--platform", "LINUX/X86_64",
                   "--input-shape", "{x: [1,3")
    text = assert_error(res, "invalid_input_shape")
    assert "JSON" in text


@pytest.mark.parametrize("shape, needle", [
    ('{"nope": [1, 3, 32, 32]}', "nope"),     # no such input
    ('{"x": [1, 4, 32, 32]}', "[1, 4, 32, 32]"),  # contradicts the fixed channel dim
    ('{"x": [1, 3, 32]}', "[1, 3, 32]"),      # wrong rank
], ids=["unknown-name", "fixed-dim", "rank"])
def test_shape_mismatch(work, shape, needle):
    res = compile_(work, work / "cnn.onnx", "--platform", "LINUX/X86_64", "--input-shape", shape)
    text = assert_error(res, "shape_mismatch")
    assert needle in text


# ---- operators ----------------------------------------------------------------------------------
def unsupported_model() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu_in"),
        helper.make_node("Frobnicate", ["a"], ["b"], name="frob_1", domain="com.example"),
        helper.make_node("Celu", ["b"], ["c"], name="celu_1"),
        helper.make_node("Frobnicate", ["c"], ["d"], name="frob_2", domain="com.example"),
        helper.make_node("Det", ["d"], ["e"], name="det_1"),
        helper.make_node("Abs", ["e"], ["y"], name="abs_out"),
    ]
    graph = helper.make_graph(nodes, "unsupported", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.example", 1)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_unsupported_ops_are_all_named_in_one_error(work, tmp_path):
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    known = _get_convert_map()
    assert {"Relu", "Abs"} <= set(known) and not {"Celu", "Det"} & set(known)
    path = tmp_path / "unsup.onnx"
    onnx.save(unsupported_model(), path)
    text = assert_error(compile_(work, path, "--platform", "LINUX/X86_64"), "unsupported_operator")
    for needle in ("Frobnicate", "com.example", "Celu", "Det", "frob_1", "frob_2", "celu_1",
                   "det_1"):
        assert needle in text, needle
    for supported in ("Relu", "relu_in", "Abs", "abs_out"):
        assert supported not in text, supported


# ---- kiln run / kiln inspect --------------------------------------------------------------------
def test_run_missing_artifact(work, tmp_path):
    res = kiln("run", tmp_path / "nope.tar.gz", "-i", "x=x.npy", "-o", tmp_path / "o.npz",
               cwd=tmp_path)
    assert "nope.tar.gz" in assert_error(res, "file_not_found")


@pytest.fixture
def not_a_tar(tmp_path) -> Path:
    path = tmp_path / "junk.tar.gz"
    path.write_text("this is not an artifact\n")
    return path


@pytest.mark.parametrize("command", ["run", "inspect"])
def test_non_tar_artifact(tmp_path, not_a_tar, command):
    args = ["-i", "x=x.npy", "-o", tmp_path / "o.npz"] if command == "run" else []
    res = kiln(command, not_a_tar, *args, cwd=tmp_path)
    assert "junk.tar.gz" in assert_error(res, "invalid_artifact")
    assert not (tmp_path / "o.npz").exists()


def test_run_missing_input_file(artifact, tmp_path):
    res = kiln("run", artifact, "--input", "x=missing.npy", "-o", tmp_path / "o.npz", cwd=tmp_path)
    assert "missing.npy" in assert_error(res, "file_not_found")
    assert not (tmp_path / "o.npz").exists()


def test_run_input_of_wrong_shape(artifact, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 16, 16), np.float32))
    res = kiln("run", artifact, "--input", "x=x.npy", "-o", tmp_path / "o.npz", cwd=tmp_path)
    text = assert_error(res, "invalid_input")
    assert "[1, 3, 16, 16]" in text and "[1, 3, 32, 32]" in text
    assert not (tmp_path / "o.npz").exists()


def test_run_good_input_succeeds(artifact, tmp_path):
    """The control: the same artifact with a well-shaped input runs and writes the outputs."""
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 32, 32), np.float32))
    res = kiln("run", artifact, "--input", "x=x.npy", "-o", tmp_path / "o.npz", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "error[" not in res.stderr
    assert np.load(tmp_path / "o.npz")["y"].shape == (1, 10)


@pytest.mark.parametrize("args, fragment", [
    (["run", "a.tar.gz", "--input", "x=x.npy"], "Missing option '--output'"),
    (["compile"], "Missing argument 'model'"),
    (["compile", "m.onnx", "--bogus"], "No such option: --bogus"),
])
def test_usage_errors_are_one_line_with_exit_status_2(tmp_path, args, fragment):
    # typer vendors its own click: its usage errors are not click.ClickException subclasses
    res = kiln(*args, cwd=tmp_path)
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr and "internal_error" not in res.stderr, res.stderr
    assert res.stderr.strip() == f"error[usage]: {fragment}." or \
        res.stderr.strip().startswith(f"error[usage]: {fragment}"), res.stderr
