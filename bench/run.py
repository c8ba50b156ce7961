"""Kiln (default and tuned) against ONNX Runtime, PyTorch eager and OpenVINO (each when
installed: pip install 'kilnml[bench]' and the torch CPU wheel) on the benchmark models.

    .venv/bin/python bench/run.py [--models resnet18,mlp] [--batches 1,8] [--threads 2]
                                  [--tune-budget 900 | --tuned-db DIR] [--tag tuned]

Every runtime runs in this one process with the same thread count, each interleaved round by
round with ONNX Runtime alone (pairs, so that idle pools of the others do not steal the cores);
the headline is the ratio of medians (X / ONNX Runtime; below 1.0 means X is faster).
Writes bench/results/<date>-<arch>.json and .png (the plot) and prints a markdown table.
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

sys.path.insert(0, str(Path(__file__).parent))
from torch_eager import torch_session  # noqa: E402

HERE = Path(__file__).resolve().parent


def ort_session(path: Path, threads: int, spin: bool = True):
    """``spin=False``: the intra-op pool does not spin after a run (ORT spins by default)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    if not spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
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


def kiln_session(path: Path, workdir: Path, tune_budget: float | None = None,
                 tuned_db: Path | None = None):
    """Kiln's default compile (no tuning database), a compile that first tunes for
    ``tune_budget`` seconds into a database of its own, or one that applies the database
    ``tuned_db`` made earlier (``kiln tune --time-budget 900`` into $KILN_TUNE_DIR)."""
    import kiln
    from kiln.options import CompileOptions

    start = time.perf_counter()
    tag = "tuned" if tune_budget or tuned_db else "default"
    if tuned_db:
        os.environ["KILN_TUNE_DIR"] = str(tuned_db)
        options = CompileOptions()
    else:
        options = CompileOptions(tune_time_budget=tune_budget) if tune_budget else \
            CompileOptions(use_tuning_db=False)
    res = kiln.compile(path, platform="LINUX/X86_64", output=workdir / f"{path.stem}-{tag}.tar.gz",
                       options=options)
    compile_s = time.perf_counter() - start
    model = kiln.load(res.artifact)
    return (lambda feed: model.run(feed)), compile_s, model


#: Seconds between two runtimes' blocks of runs. ONNX Runtime's pool spins on its cores for
#: 100-200 ms after a run (bench/interleave.py): ResNet-18 b1 on Kiln took 58 ms started right
#: after it, 44 ms after 50 ms, 42 ms after 100 ms and 33 ms after 200 ms (2026-11-29); with the
#: 50 ms used before, most of a 200 ms block of Kiln runs shared a core with that spinner.
SETTLE_S = 0.3
#: Seconds of untimed runs that start each block. After the pause a runtime's first runs are
#: slow (this VM's cores ramp up over a few ms: the batch-8 MLP on Kiln took 1.6, 1.0, 0.8 ...
#: 0.45 ms in its first ten runs), and a block of 20 runs of a 0.5 ms model was mostly ramp.
WARM_S = 0.05


def interleaved(runners: dict, feed: dict, rounds: int, per_round: int) -> dict:
    times = {k: [] for k in runners}
    for fn in runners.values():
        for _ in range(3):
            fn(feed)
    for _ in range(rounds):
        for name, fn in runners.items():
            start = time.perf_counter()
            while True:  # untimed: the cores ramp back up after the settling pause
                fn(feed)
                if time.perf_counter() - start >= WARM_S:
                    break
            for _ in range(per_round):
                t = time.perf_counter()
                fn(feed)
                times[name].append((time.perf_counter() - t) * 1e3)
            time.sleep(SETTLE_S)  # let spinning worker threads settle before the next runtime
    return {k: float(np.median(v)) for k, v in times.items()}


def bench_model(name: str, batch: int, threads: int, workdir: Path, rounds: int,
                tune_budget: float = 0.0, tuned_db: Path | None = None) -> dict:
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
    torch_run = torch_session(model, threads)
    if torch_run:
        runners["pytorch_eager"] = torch_run
    kiln_run, compile_s, kmodel = kiln_session(path, workdir)
    runners["kiln"] = kiln_run
    extra = {}
    if tune_budget or tuned_db:
        tuned_run, tuned_s, tuned_model = kiln_session(path, workdir, tune_budget, tuned_db)
        runners["kiln_tuned"] = tuned_run
        extra = {"kiln_tuned_compile_s": tuned_s,
                 "kiln_tuned_pipeline": tuned_model.manifest.compile_options["pipeline"]}
    ref = runners["onnxruntime"](feed)[0]
    errors = {k: float(np.abs(fn(feed)[0] - ref).max()) for k, fn in runners.items()}
    err = errors["kiln"]
    per_round = max(2, min(20, int(200 / max(1.0, _once(runners["onnxruntime"], feed)))))
    # each runtime against ONNX Runtime on its own: four thread pools spinning in one process
    # slow each other down (ORT ran 2-10x slower beside torch and OpenVINO on 2 cores)
    med, ratio = {}, {"onnxruntime": 1.0}
    for other in sorted((k for k in runners if k != "onnxruntime"), key=lambda k: k != "kiln"):
        pair = interleaved({"onnxruntime": runners["onnxruntime"], other: runners[other]},
                           feed, rounds, per_round)
        med.setdefault("onnxruntime", pair["onnxruntime"])
        med[other], ratio[other] = pair[other], pair[other] / pair["onnxruntime"]
    return {"model": name, "batch": batch, "threads": threads, "median_ms": med,
            "ratio_to_ort": ratio,
            "kiln_compile_s": compile_s, "kiln_max_abs_error": err,
            "kiln_pipeline": kmodel.manifest.compile_options["pipeline"],
            "kiln_library": kmodel.library, "max_abs_error_vs_ort": errors, **extra}


def _once(fn, feed) -> float:
    t = time.perf_counter()
    fn(feed)
    return (time.perf_counter() - t) * 1e3


COLUMNS = ("kiln", "kiln_tuned", "pytorch_eager", "openvino_fp32")


def table(rows: list[dict]) -> str:
    """Markdown: ORT's median latency, then each runtime's latency as a ratio to it."""
    cols = [c for c in COLUMNS if any(c in r["median_ms"] for r in rows)]
    lines = ["| model | batch | ONNX Runtime ms | " + " | ".join(f"{c} / ORT" for c in cols)
             + " | Kiln compile s |", "|---" * (len(cols) + 4) + "|"]
    for r in rows:
        ratios = [f"{r['ratio_to_ort'][c]:.2f}x" if c in r["ratio_to_ort"] else "-" for c in cols]
        if ratios:
            ratios[0] = f"**{ratios[0]}**"
        lines.append(f"| {r['model']} | {r['batch']} | {r['median_ms']['onnxruntime']:.2f} | "
                     + " | ".join(ratios) + f" | {r['kiln_compile_s']:.1f} |")
    return "\n".join(lines)


def plot(rows: list[dict], out: Path) -> Path | None:
    """A bar chart of every runtime's latency relative to ONNX Runtime (1.0 = as fast)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    cols = [c for c in COLUMNS if any(c in r["ratio_to_ort"] for r in rows)]
    labels = [f"{r['model']}\nb{r['batch']}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows)), 4))
    width = 0.8 / max(1, len(cols))
    for i, c in enumerate(cols):
        ax.bar([j + i * width for j in range(len(rows))],
               [r["ratio_to_ort"].get(c, 0) for r in rows], width, label=c)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axhline(2.0, color="red", linewidth=0.8, linestyle="--", label="2x ORT (goal limit)")
    ax.set_xticks([j + width * (len(cols) - 1) / 2 for j in range(len(rows))], labels, fontsize=8)
    ax.set_ylabel("latency / ONNX Runtime (lower is faster)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mlp,bert_encoder,mobilenet_v2,resnet18,resnet50")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tune-budget", type=float, default=0.0,
                    help="seconds of tuning per model and batch for the kiln_tuned column (0: none)")
    ap.add_argument("--tuned-db", type=Path, default=None,
                    help="a tuning-database folder made earlier with `KILN_TUNE_DIR=DIR kiln tune "
                         "MODEL --platform LINUX/X86_64 --time-budget 900`: the kiln_tuned column "
                         "applies it instead of tuning in this run (so the timing runs on an idle "
                         "machine even when the tuning did not)")
    ap.add_argument("--tag", default="",
                    help="suffix of the results file, so a partial run (e.g. the tuned column) "
                         "does not replace the full one")
    args = ap.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as tmp:
        os.environ["KILN_TUNE_DIR"] = str(Path(tmp) / "tuning")  # never the user's databases
        for name in args.models.split(","):
            for batch in map(int, args.batches.split(",")):
                row = bench_model(name, batch, args.threads, Path(tmp), args.rounds,
                                  args.tune_budget, args.tuned_db)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    import kiln

    result = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "host": platform.node(), "cpu": _cpu_name(), "kiln": kiln.__version__,
              "threads": args.threads, "rows": rows}
    out = HERE / "results" / f"{dt.date.today()}-{platform.machine()}{'-' + args.tag if args.tag else ''}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    picture = plot(rows, out.with_suffix(".png"))
    print(table(rows))
    print(f"\nwrote {out}" + (f" and {picture}" if picture else ""))
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
