"""Kiln against ONNX Runtime (and OpenVINO when installed) on the benchmark models.

    .venv/bin/python bench/run.py [--models resnet18,mlp] [--batches 1,8] [--threads 2]

Every runtime runs in this one process, interleaved round by round, with the same thread count;
the headline is the ratio of medians (Kiln / ONNX Runtime; below 1.0 means Kiln is faster).
Writes bench/results/<date>-<host>.json and prints a markdown table for the README.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return lambda feed: sess.run(None, feed)


def openvino_session(path: Path, threads: int):
    try:
        import openvino as ov
    except ImportError:
        return None
    core = ov.Core()
    compiled = core.compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                      "INFERENCE_PRECISION_HINT": "f32"})
    return lambda feed: compiled(feed)


def kiln_session(path: Path, workdir: Path, opt_level: int = 2):
    import kiln
    from kiln.options import CompileOptions

    start = time.perf_counter()
    res = kiln.compile(path, platform="LINUX/X86_64", output=workdir / f"{path.stem}-{opt_level}.tar.gz",
                       options=CompileOptions(opt_level=opt_level))
    compile_s = time.perf_counter() - start
    model = kiln.load(res.artifact)
    return (lambda feed: model.run(feed)), compile_s, model


def interleaved(runners: dict, feed: dict, rounds: int, per_round: int) -> dict:
    times = {k: [] for k in runners}
    for fn in runners.values():
        for _ in range(3):
            fn(feed)
    for _ in range(rounds):
        for name, fn in runners.items():
            for _ in range(per_round):
                t = time.perf_counter()
                fn(feed)
                times[name].append((time.perf_counter() - t) * 1e3)
            time.sleep(0.05)  # let spinning worker threads settle before the next runtime
    return {k: float(np.median(v)) for k, v in times.items()}


def bench_model(name: str, batch: int, threads: int, workdir: Path, rounds: int) -> dict:
    import onnx

    from kiln.examples.zoo import ZOO

    model = ZOO[name](batch)
    path = workdir / f"{name}-b{batch}.onnx"
    onnx.save(model, path)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    feed = {"x": np.random.default_rng(0).standard_normal(dims).astype(np.float32)}
    runners = {"onnxruntime": ort_session(path, threads)}
    ov_run = openvino_session(path, threads)
    if ov_run:
        runners["openvino_fp32"] = ov_run
    kiln_run, compile_s, kmodel = kiln_session(path, workdir)
    runners["kiln"] = kiln_run
    ref = runners["onnxruntime"](feed)[0]
    err = float(np.abs(kiln_run(feed)[0] - ref).max())
    per_round = max(2, min(20, int(200 / max(1.0, _once(runners["onnxruntime"], feed)))))
    med = interleaved(runners, feed, rounds, per_round)
    return {"model": name, "batch": batch, "threads": threads, "median_ms": med,
            "ratio_to_ort": {k: v / med["onnxruntime"] for k, v in med.items()},
            "kiln_compile_s": compile_s, "kiln_max_abs_error": err,
            "kiln_pipeline": kmodel.manifest.compile_options["pipeline"],
            "kiln_library": kmodel.library}


def _once(fn, feed) -> float:
    t = time.perf_counter()
    fn(feed)
    return (time.perf_counter() - t) * 1e3


def table(rows: list[dict]) -> str:
    lines = ["| model | batch | ONNX Runtime ms | Kiln ms | Kiln / ORT | compile s |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        m = r["median_ms"]
        lines.append(f"| {r['model']} | {r['batch']} | {m['onnxruntime']:.2f} | {m['kiln']:.2f} | "
                     f"**{r['ratio_to_ort']['kiln']:.2f}x** | {r['kiln_compile_s']:.1f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mlp,bert_encoder,mobilenet_v2,resnet18,resnet50")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as tmp:
        for name in args.models.split(","):
            for batch in map(int, args.batches.split(",")):
                row = bench_model(name, batch, args.threads, Path(tmp), args.rounds)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    import kiln

    result = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "host": platform.node(), "cpu": _cpu_name(), "kiln": kiln.__version__,
              "threads": args.threads, "rows": rows}
    out = HERE / "results" / f"{dt.date.today()}-{platform.machine()}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(rows))
    print(f"\nwrote {out}")
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
