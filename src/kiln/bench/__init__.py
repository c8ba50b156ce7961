"""Latency / throughput / memory measurement shared by `kiln bench` and bench/."""

from kiln.bench.harness import BenchResult, bench_artifact, measure, summarize

__all__ = ["BenchResult", "bench_artifact", "measure", "summarize"]
