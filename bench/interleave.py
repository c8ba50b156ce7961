"""How the order of runs changes a Kiln / ONNX Runtime comparison in one process.

    .venv/bin/python bench/interleave.py [--models resnet18,mobilenet_v2,bert_encoder]
                                         [--batch 1] [--threads 2] [--seconds 6]
                                         [--spin-ms MS]

Both pools keep a worker spinning after a run: ONNX Runtime's for 100-200 ms here
(``session.intra_op.allow_spinning``, on by default), Kiln's for its block time
(``KILN_SPIN_MS``, default 100 ms; ``--spin-ms`` sets it for this run). On 2 cores, a run that
starts while the other runtime's worker spins takes about twice as long. This script measures,
per model, Kiln and ONNX Runtime:

* ``alone``: runs back to back, the other runtime idle;
* ``alternating``: one run of each in turn (ORT, Kiln, ORT, Kiln, ...), so every run starts
  while the other runtime's worker spins (Kiln's only if its block time covers ORT's run);
* ``alternating_no_spin``: the same with ORT's spinning turned off (Kiln's as set).

Writes bench/results/<date>-<arch>-interleave.json; medians in milliseconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import SETTLE_S, _once, ort_session  # noqa: E402


def _loop(fns, feed: dict, seconds: float) -> list[list[float]]:
    """Run ``fns`` in turn on ``feed`` for ``seconds``; each one's times (ms)."""
    out: list[list[float]] = [[] for _ in fns]
    end = time.time() + seconds
    while time.time() < end:
        for i, fn in enumerate(fns):
            out[i].append(_once(fn, feed))
    return out


def measure(name: str, batch: int, threads: int, seconds: float, workdir: Path) -> dict:
    import numpy as np
    import onnx

    import kiln
    from kiln.examples.zoo import ZOO

    model_proto = ZOO[name](batch)
    path = workdir / f"{name}-b{batch}.onnx"
    onnx.save(model_proto, path)
    res = kiln.compile(path, platform="LINUX/X86_64", output=workdir / f"{name}-b{batch}.tar.gz")
    model = kiln.load(res.artifact)
    inp = model_proto.graph.input[0]
    dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    feed = {inp.name: np.random.default_rng(0).standard_normal(dims).astype(np.float32)}
    k = model.run
    o, q = ort_session(path, threads), ort_session(path, threads, spin=False)
    for fn in (k, o, q):
        for _ in range(3):
            fn(feed)
    med = lambda v: round(statistics.median(v), 3)  # noqa: E731
    (kiln_alone,) = _loop([k], feed, seconds / 4)
    time.sleep(SETTLE_S)  # the pools of both settle (ORT's spins for 100-200 ms after a run)
    (ort_alone,) = _loop([o], feed, seconds / 4)
    ort_alt, kiln_alt = _loop([o, k], feed, seconds / 2)
    time.sleep(SETTLE_S)
    quiet_alt, kiln_quiet = _loop([q, k], feed, seconds / 2)
    model.close()
    row = {"model": name, "batch": batch,
           "alone": {"kiln": med(kiln_alone), "onnxruntime": med(ort_alone)},
           "alternating": {"kiln": med(kiln_alt), "onnxruntime": med(ort_alt)},
           "alternating_no_spin": {"kiln": med(kiln_quiet), "onnxruntime": med(quiet_alt)}}
    for key in ("alone", "alternating", "alternating_no_spin"):
        row[key]["ratio"] = round(row[key]["kiln"] / row[key]["onnxruntime"], 3)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="resnet18,mobilenet_v2,bert_encoder")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--spin-ms", default=None,
                    help="KILN_SPIN_MS for this run (Kiln's block time; default: as set, 100)")
    args = ap.parse_args()
    if args.spin_ms is not None:
        os.environ["KILN_SPIN_MS"] = args.spin_ms
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="kiln-interleave-") as tmp:
        os.environ["KILN_TUNE_DIR"] = str(Path(tmp) / "tuning")  # never the user's databases
        for name in args.models.split(","):
            row = measure(name, args.batch, args.threads, args.seconds, Path(tmp))
            rows.append(row)
            print(json.dumps(row), flush=True)
    import kiln

    result = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "host": platform.node(), "kiln": kiln.__version__, "threads": args.threads,
              "kiln_spin_ms": os.environ.get("KILN_SPIN_MS", "100 (default)"),
              "rows": rows}
    out = HERE / "results" / f"{dt.date.today()}-{platform.machine()}-interleave.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
