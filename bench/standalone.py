"""Standalone executor vs TVM runtime: latency, runtime footprint and peak memory.

    PYTHONPATH=src python bench/standalone.py [--target ml_m4] [--rounds 5] [--repeat 30]

Each example model is compiled twice for ``--target`` (``{"runtime": "tvm"}`` and
``{"runtime": "standalone"}``; same kernels, same schedules) and run natively through
``kiln.load`` in one process, the two interleaved round by round; peak memory is the max RSS of
one ``kiln_run`` process per artifact. Only native timings mean anything: under qemu-user
(aarch64, armv7, riscv64 on this x86 host) the emulator's cost dominates, so cross targets are
reported for footprint only. Results go to ``bench/results/<date>-<arch>-standalone.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from kiln.bench.harness import measure, summarize
from kiln.compiler import compile_model
from kiln.examples.models import MODELS
from kiln.runtime import load

RESULTS = Path(__file__).resolve().parent / "results"


def _peak_rss_kb(artifact: Path, x: np.ndarray, work: Path) -> int:
    """Peak RSS (VmHWM, KiB) of one kiln_run process on ``artifact``, read from /proc while it
    runs (ru_maxrss would count the Python image the child had before exec)."""
    folder = work / artifact.name.replace(".tar.gz", "")
    with tarfile.open(artifact) as tar:
        tar.extractall(folder, filter="data")
    np.save(work / "x.npy", x)
    proc = subprocess.Popen([str(folder / "kiln_run"), str(folder), "--input",
                             f"x={work / 'x.npy'}", "--output-dir", str(work), "--repeat", "300"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peak = max(peak, int(status.split("VmHWM:")[1].split()[0]))
        except (OSError, IndexError, ValueError):
            pass
        time.sleep(0.002)
    return peak


def bench_model(name: str, target: str, work: Path, rounds: int, repeat: int) -> dict:
    path = work / f"{name}.onnx"
    onnx.save(MODELS[name](), path)
    row: dict = {"model": name}
    arts = {}
    for runtime in ("tvm", "standalone"):
        res = compile_model(path, target=target, compiler_options={"runtime": runtime},
                            output=work / f"{name}-{runtime}.tar.gz")
        arts[runtime] = res
        row[f"{runtime}_footprint_bytes"] = res.manifest.runtime["footprint_bytes"]
        row[f"{runtime}_model_so_bytes"] = res.manifest.files["model.so"]["size"]
        row[f"{runtime}_verified"] = res.verified
    models = {rt: load(a.artifact) for rt, a in arts.items()}
    shape = models["tvm"].get_input_shapes()[0]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    feeds = {models["tvm"].get_input_names()[0]: x}
    times: dict[str, list[float]] = {"tvm": [], "standalone": []}
    for _ in range(rounds):  # interleaved, so load changes on this shared host hit both
        for rt, model in models.items():
            times[rt] += measure(lambda m=model: m.run(feeds), warmup=3, repeat=repeat)
    for rt in models:
        row[f"{rt}_p50_ms"] = summarize(times[rt])["p50_ms"]
        row[f"{rt}_peak_rss_kb"] = _peak_rss_kb(arts[rt].artifact, x, work)
        models[rt].close()
    row["standalone_over_tvm_latency"] = row["standalone_p50_ms"] / row["tvm_p50_ms"]
    row["standalone_weights_bytes"] = arts["standalone"].manifest.runtime["weights_bytes"]
    row["standalone_arena_bytes"] = arts["standalone"].manifest.runtime["arena_bytes"]
    return row


def cross_footprints(work: Path) -> dict:
    """Runtime footprint of the standalone bundle per cross arch (compiled, not timed)."""
    path = work / "mlp.onnx"
    onnx.save(MODELS["mlp"](), path)
    out = {}
    for target in ("rasp4b", "rasp3b", "riscv64"):
        res = compile_model(path, target=target, compiler_options={"runtime": "standalone"},
                            output=work / f"mlp-{target}.tar.gz")
        out[target] = {"arch": res.manifest.target["spec"]["arch"],
                       "footprint_bytes": res.manifest.runtime["footprint_bytes"],
                       "verified": res.manifest.verification.get("mode", "not verified")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="ml_m4")
    ap.add_argument("--models", default="mlp,cnn,depthwise_separable,transformer_block")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--no-cross", action="store_true", help="skip the cross-arch footprints")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kiln-bench-sa-") as tmp:
        rows = [bench_model(m, args.target, Path(tmp), args.rounds, args.repeat)
                for m in args.models.split(",")]
        cross = {} if args.no_cross else cross_footprints(Path(tmp))
    print(f"{'model':20} {'tvm ms':>8} {'sa ms':>8} {'sa/tvm':>7} {'tvm rt KB':>10} "
          f"{'sa rt KB':>9} {'tvm RSS KB':>11} {'sa RSS KB':>10}")
    for r in rows:
        print(f"{r['model']:20} {r['tvm_p50_ms']:8.3f} {r['standalone_p50_ms']:8.3f} "
              f"{r['standalone_over_tvm_latency']:7.2f} {r['tvm_footprint_bytes'] / 1e3:10.0f} "
              f"{r['standalone_footprint_bytes'] / 1e3:9.0f} {r['tvm_peak_rss_kb']:11d} "
              f"{r['standalone_peak_rss_kb']:10d}")
    for target, c in cross.items():
        print(f"standalone runtime footprint {target} ({c['arch']}): {c['footprint_bytes']:,} B")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{dt.date.today()}-{platform.machine()}-standalone.json"
    out.write_text(json.dumps({"host": platform.machine(), "target": args.target,
                               "note": "native timings; qemu timings are not meaningful for "
                                       "speed, cross targets give footprints only",
                               "models": rows, "cross_footprints": cross}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
