"""Standalone executor vs TVM runtime on aarch64: guest instructions per inference under qemu.

    PYTHONPATH=src python bench/standalone_icount.py [--target rasp4b] [--runs 50]

No aarch64 hardware is here, only qemu-aarch64 (7.2, no TCG plugins), whose timings say nothing
about speed. So each example model is compiled twice for ``--target`` (``{"runtime": "tvm"}``
and ``{"runtime": "standalone"}``; same kernels) and each artifact's ``kiln_run`` is run under
qemu-aarch64 single-threaded (``TVM_NUM_THREADS=1``) with qemu's ``-d in_asm,exec,nochain``
log counted as it streams (:mod:`kiln.bench.icount`): once with ``--repeat 1`` and once with
``--repeat 1+N``. Per inference = (count(1+N) - count(1)) / N, so process start, dynamic
loading and model loading cancel out; the ``--repeat 1`` count is reported as the load cost.
The runner's own per-run work (two clock_gettime calls, the final sort of N times) is in both
columns alike. Instruction counts are a proxy for latency, not a timing: they ignore caches,
pipelines and SIMD width. Results go to ``bench/results/<date>-aarch64-standalone-icount.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from kiln.bench.icount import count_command
from kiln.compiler import compile_model
from kiln.examples.models import MODELS
from kiln.verify.emulate import emulator_for

RESULTS = Path(__file__).resolve().parent / "results"


def _inputs(model: onnx.ModelProto, work: Path) -> list[str]:
    """``--input name=file.npy`` arguments: seeded normal data for each (static) graph input."""
    rng = np.random.default_rng(0)
    args = []
    for i, inp in enumerate(model.graph.input):
        t = inp.type.tensor_type
        shape = [d.dim_value for d in t.shape.dim]
        path = work / f"{model.graph.name}_{i}.npy"
        np.save(path, rng.standard_normal(shape).astype(helper.tensor_dtype_to_np_dtype(t.elem_type)))
        args += ["--input", f"{inp.name}={path}"]
    return args


def _count(artifact: Path, inputs: list[str], repeat: int, work: Path) -> int:
    folder = work / artifact.name.replace(".tar.gz", "")
    if not folder.exists():
        with tarfile.open(artifact) as tar:
            tar.extractall(folder, filter="data")
    spec = json.loads((folder / "manifest.json").read_text())["target"]["spec"]
    prefix = emulator_for(spec)
    if not prefix:
        raise SystemExit(f"{spec.get('arch')}: needs qemu-user and its sysroot (and not native)")
    env = {**os.environ, "TVM_NUM_THREADS": "1", "KILN_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return count_command([*prefix, str(folder / "kiln_run"), str(folder), "--repeat",
                          str(repeat), *inputs, "--output-dir", str(work)], env=env)


def bench_model(name: str, target: str, work: Path, runs: int) -> dict:
    model = MODELS[name]()
    path = work / f"{name}.onnx"
    onnx.save(model, path)
    inputs = _inputs(model, work)
    row: dict = {"model": name}
    for runtime in ("tvm", "standalone"):
        res = compile_model(path, target=target, compiler_options={"runtime": runtime},
                            output=work / f"{name}-{runtime}.tar.gz")
        row[f"{runtime}_verified"] = res.verified
        load = _count(res.artifact, inputs, 1, work)
        more = _count(res.artifact, inputs, 1 + runs, work)
        row[f"{runtime}_load_insns"] = load  # process start + loading + one inference
        row[f"{runtime}_insns_per_inference"] = round((more - load) / runs)
    row["standalone_over_tvm"] = round(row["standalone_insns_per_inference"]
                                       / row["tvm_insns_per_inference"], 3)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="rasp4b")
    ap.add_argument("--models", default="mlp,cnn,depthwise_separable,transformer_block")
    ap.add_argument("--runs", type=int, default=50, help="N extra inferences (default 50)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kiln-bench-icount-") as tmp:
        rows = [bench_model(m, args.target, Path(tmp), args.runs) for m in args.models.split(",")]
    print(f"{'model':20} {'tvm insn/inf':>13} {'sa insn/inf':>12} {'sa/tvm':>7} "
          f"{'tvm load insn':>14} {'sa load insn':>13}")
    for r in rows:
        print(f"{r['model']:20} {r['tvm_insns_per_inference']:13,} "
              f"{r['standalone_insns_per_inference']:12,} {r['standalone_over_tvm']:7.3f} "
              f"{r['tvm_load_insns']:14,} {r['standalone_load_insns']:13,}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{dt.date.today()}-aarch64-standalone-icount.json"
    out.write_text(json.dumps({
        "host": "x86_64, qemu-aarch64 user mode", "target": args.target, "runs": args.runs,
        "emulator": subprocess.run(["qemu-aarch64", "--version"], capture_output=True,
                                   text=True).stdout.splitlines()[0],
        "method": "qemu -d in_asm,exec,nochain, guest instructions summed per executed TB; "
                  "per inference = (count(--repeat 1+runs) - count(--repeat 1)) / runs; "
                  "load = count(--repeat 1) (start, loading, one inference); one thread",
        "note": "instruction counts are a proxy for latency, not a timing",
        "models": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
