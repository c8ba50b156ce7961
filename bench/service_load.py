"""Load figures of `kiln serve`: jobs per minute with 1 and 2 local workers for a small model, and
the API's latency (DescribeCompilationJob / ListCompilationJobs through boto3, SigV4 verified)
while those compiles run.

    .venv/bin/python bench/service_load.py [--jobs 6] [--workers 1 2] [--out bench/results/service-load.json]

Every job compiles the seeded MLP example (`kiln.examples.models.MODELS["mlp"]`) for
LINUX/X86_64, including Kiln's accuracy gate. Submitted all at once; throughput is jobs
divided by the time from the first create to the last COMPLETED.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "service"))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def run(workers: int, jobs: int, root: Path) -> dict:
    import onnx

    from kiln.examples.models import MODELS
    from kiln.service.auth import new_key
    from live import LiveServer  # tests/service/live.py: uvicorn in a thread

    onnx.save(MODELS["mlp"](), root / "mlp.onnx")
    key = new_key("bench")
    with LiveServer(root / f"state-{workers}", [key], workers=workers) as srv:
        client, probe = srv.client(key), srv.client(key)
        latencies: dict[str, list[float]] = {"describe": [], "list": []}
        stop = threading.Event()

        def poll() -> None:  # a steady client beside the compiles
            while not stop.is_set():
                for op, call in (("describe", lambda: probe.describe_compilation_job(
                        CompilationJobName="load-0")), ("list", lambda: probe.list_compilation_jobs(
                        MaxResults=100))):
                    t = time.perf_counter()
                    call()
                    latencies[op].append((time.perf_counter() - t) * 1000)
                time.sleep(0.05)

        start = time.time()
        for i in range(jobs):
            client.create_compilation_job(
                CompilationJobName=f"load-{i}", RoleArn="arn:aws:iam::1:role/bench",
                InputConfig={"S3Uri": str(root / "mlp.onnx"), "Framework": "ONNX"},
                OutputConfig={"S3OutputLocation": str(root / f"out-{workers}"),
                              "TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}},
                StoppingCondition={"MaxRuntimeInSeconds": 900})
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        while True:
            rows = client.list_compilation_jobs(MaxResults=100)["CompilationJobSummaries"]
            if all(r["CompilationJobStatus"] in ("COMPLETED", "FAILED") for r in rows):
                break
            time.sleep(1)
        elapsed = time.time() - start
        stop.set()
        poller.join()
    failed = [r["CompilationJobName"] for r in rows if r["CompilationJobStatus"] != "COMPLETED"]
    return {"workers": workers, "jobs": jobs, "failed": failed, "elapsed_s": round(elapsed, 1),
            "jobs_per_minute": round(jobs / elapsed * 60, 2),
            "api_latency_ms": {op: {"n": len(v), "p50": round(statistics.median(v), 2),
                                    "p99": round(percentile(v, 99), 2), "max": round(max(v), 2)}
                               for op, v in latencies.items() if v}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=6)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    import os

    results = []
    with tempfile.TemporaryDirectory(prefix="kiln-load-") as tmp:
        for w in args.workers:
            r = run(w, args.jobs, Path(tmp))
            print(json.dumps(r), flush=True)
            results.append(r)
    doc = {"host": {"machine": platform.machine(), "cpus": os.cpu_count(),
                    "note": "shared 2-core VM; other work ran beside it"},
           "model": "kiln.examples mlp (64-128-128-8), LINUX/X86_64, accuracy gate on",
           "results": results}
    if args.out:
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
