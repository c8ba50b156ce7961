"""Time a callable: warm-up excluded, percentiles, throughput, load time and peak memory."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


def measure(fn: Callable[[], object], *, warmup: int = 3, repeat: int = 20) -> list[float]:
    """Latencies of ``repeat`` calls in milliseconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def summarize(times_ms: list[float], batch: int = 1) -> dict:
    t = np.asarray(times_ms)
    p50 = float(np.percentile(t, 50))
    return {"p50_ms": p50, "p90_ms": float(np.percentile(t, 90)),
            "p99_ms": float(np.percentile(t, 99)), "mean_ms": float(t.mean()),
            "min_ms": float(t.min()), "runs": len(t),
            "throughput_per_s": batch * 1e3 / p50 if p50 > 0 else float("inf")}


@dataclass(frozen=True)
class BenchResult:
    artifact: str
    target: str
    threads: str
    load_ms: float
    peak_rss_mb: float
    batch: int
    latency: dict
    #: how long the standalone runtime's idle workers spin before they sleep (``KILN_SPIN_MS``);
    #: ``None`` for a TVM-runtime artifact
    spin_ms: float | None = None
    #: with ``profile=True``: per kernel (slowest first) ``kernel``, ``calls``, ``mean_us``,
    #: ``share`` (:meth:`kiln.runtime.Model.profile`), timed after the latency runs
    kernels: list | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def seeded_inputs(model, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs for a loaded model: normal floats, integers in [0, 4); a dimension of -1
    (any row count: tree-ensemble artifacts) gets one row."""
    rng = np.random.default_rng(seed)
    inputs = {}
    shapes = [tuple(d if d >= 0 else 1 for d in s) for s in model.get_input_shapes()]
    for name, shape, dtype in zip(model.get_input_names(), shapes, model.get_input_dtypes()):
        arr = rng.standard_normal(shape) if np.dtype(dtype).kind == "f" else rng.integers(0, 4, shape)
        inputs[name] = arr.astype(dtype)
    return inputs


def bench_artifact(path: str | Path, *, warmup: int = 3, repeat: int = 50,
                   seed: int = 0, profile: bool = False) -> BenchResult:
    """Load an artifact for this machine and time ``run`` on seeded inputs (and, with
    ``profile``, every kernel in further runs: standalone artifacts only)."""
    from kiln.runtime import load

    start = time.perf_counter()
    model = load(path)
    load_ms = (time.perf_counter() - start) * 1e3
    inputs = seeded_inputs(model, seed)
    shapes = [a.shape for a in inputs.values()]
    times = measure(lambda: model.run(inputs), warmup=warmup, repeat=repeat)
    kernels = model.profile(inputs, runs=repeat, warmup=0) if profile else None
    batch = shapes[0][0] if shapes and shapes[0] else 1
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    pool = model.thread_pool()  # the standalone pool after the runs: its real thread count
    threads = str(pool["threads"]) if pool and pool["threads"] else \
        os.environ.get("TVM_NUM_THREADS", "all usable CPUs")
    return BenchResult(artifact=str(path), target=model.manifest.target["name"],
                       threads=threads, load_ms=load_ms, peak_rss_mb=peak_kb / 1024,
                       batch=int(batch), latency=summarize(times, int(batch)),
                       spin_ms=pool["spin_ms"] if pool else None, kernels=kernels)
