"""Reduced compute precision (`--compiler-options '{"dtype": "float16"}'`): native FP16
arithmetic on the Arm cores that have it, behind the accuracy gate, refused elsewhere."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from conftest import onnx_reference, requires_qemu, run_kiln

FP16 = '{"dtype": "float16"}'


def _asm(model: Path, target: str, dtype: str) -> str:
    import tvm

    from kiln.importers.from_onnx import import_onnx
    from kiln.optimize.pipeline import cpu_pipeline
    from kiln.targets import resolve_target

    spec, _ = resolve_target(target, None, None)
    tgt = tvm.target.Target(spec.tvm_target())
    with tgt:
        ex = tvm.compile(import_onnx(model).mod, tgt, relax_pipeline=cpu_pipeline(
            tgt, opt_level=2, simd=spec.simd, dtype=dtype))
    return ex.mod.imports[0].inspect_source("asm")


def test_float16_emits_half_precision_fma_on_neoverse(model_dir):
    """The FP16 build multiplies 8 halves per NEON instruction; float32 4 singles."""
    half = _asm(model_dir / "cnn.onnx", "ml_c6g", "float16")
    single = _asm(model_dir / "cnn.onnx", "ml_c6g", "float32")
    assert len(re.findall(r"fmla\s+v\d+\.8h", half)) > 20
    # the convolutions and matmuls: softmax stays float32 (ToMixedPrecision keeps it so), and
    # its polynomial exp is made of float32 FMAs
    kernels = _functions(half)
    compute = {n: body for n, body in kernels.items() if "conv2d" in n or "matmul" in n}
    assert compute and not any(re.findall(r"fmla\s+v\d+\.4s", b) for b in compute.values())
    assert not re.findall(r"fmla\s+v\d+\.8h", single)


def _functions(asm: str) -> dict[str, str]:
    """Assembly text by function (``name:`` labels of the kernels' global symbols)."""
    names = re.findall(r"^\t\.globl\t(\S+)$", asm, flags=re.M)
    out = {}
    for name in names:
        start = asm.find(f"\n{name}:")
        end = asm.find(".Lfunc_end", start)
        out[name] = asm[start:end] if start >= 0 else ""
    return out


@requires_qemu
@pytest.mark.parametrize("name", ["cnn", "transformer_block"])
def test_float16_artifact_runs_under_the_accuracy_gate(model_dir, tmp_path, name):
    model, x = model_dir / f"{name}.onnx", np.load(model_dir / f"{name}.x.npy")
    out = tmp_path / "m.tar.gz"
    res = run_kiln("compile", model, "--target", "rasp5", "--compiler-options", FP16, "-o", out)
    assert res.returncode == 0, res.stderr[-2000:]
    res = run_kiln("run", out, "--input", f"x={model_dir / f'{name}.x.npy'}", "--output",
                   tmp_path / "y.npz")
    assert res.returncode == 0, res.stderr[-2000:]
    got = np.load(tmp_path / "y.npz")
    ref = onnx_reference(model, {"x": x})
    for i, r in enumerate(ref):
        y = got[list(got.keys())[i]]
        err = float(np.abs(y - r).max())
        # half precision: within the float16 gate (1e-2 abs), and visibly not float32
        assert err < 1e-2 and err > 1e-6, (name, i, err)
    from kiln.artifact import read_manifest, unpack

    m = read_manifest(unpack(out, tmp_path / "unpacked"))
    assert m.compile_options["compute_dtype"] == "float16"
    assert m.compile_options["pipeline"].startswith("fused+schedules+float16")
    assert m.verification["verified"] is True
    assert m.compiler_options == {"dtype": "float16"}


@pytest.mark.parametrize("args, fragment", [
    (["--target", "rasp4b", "--compiler-options", FP16], "has no float16 arithmetic"),
    (["--platform", "LINUX/X86_64", "--compiler-options", FP16], "has no float16 arithmetic"),
    (["--target", "ml_c7g", "--compiler-options", '{"dtype": "bf16"}'], "bfloat16 compute"),
])
def test_reduced_precision_refused_without_native_support(model_dir, args, fragment):
    res = run_kiln("compile", model_dir / "cnn.onnx", *args)
    assert res.returncode == 24, res.stderr
    assert "error[dtype_not_supported]" in res.stderr and fragment in res.stderr
    assert "rasp5" in res.stderr    # the hint names targets that can
