"""`kiln bench` and the shared harness (numbers are printed, never asserted against a clock)."""

from __future__ import annotations

import json

from kiln.bench import summarize
from conftest import run_kiln


def test_summarize_percentiles_and_throughput():
    s = summarize([1.0, 2.0, 3.0, 4.0, 100.0], batch=8)
    assert s["p50_ms"] == 3.0 and s["min_ms"] == 1.0 and s["runs"] == 5
    assert s["p90_ms"] > s["p50_ms"] and s["p99_ms"] >= s["p90_ms"]
    assert abs(s["throughput_per_s"] - 8 * 1000 / 3.0) < 1e-9


def test_bench_command_reports_latency_load_and_memory(model_dir, tmp_path):
    art = tmp_path / "m.tar.gz"
    assert run_kiln("compile", model_dir / "mlp.onnx", "--platform", "LINUX/X86_64", "-o",
                    art).returncode == 0
    res = run_kiln("bench", art, "--repeat", "7", "--warmup", "2", "--json")
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    assert r["target"] == "linux_x86_64" and r["batch"] == 1 and r["latency"]["runs"] == 7
    assert 0 < r["latency"]["p50_ms"] <= r["latency"]["p99_ms"]
    assert r["load_ms"] > 0 and r["peak_rss_mb"] > 10
    text = run_kiln("bench", art, "--repeat", "5", env={"TVM_NUM_THREADS": "2"})
    assert text.returncode == 0 and "p99" in text.stdout and "threads: 2" in text.stdout
