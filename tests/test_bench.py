"""`kiln bench` and the shared harness (numbers are printed, never asserted against a clock)."""

from __future__ import annotations

import json
import os
import re

import numpy as np

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
    assert r["spin_ms"] == (float(os.environ["KILN_SPIN_MS"]) if "KILN_SPIN_MS" in os.environ
                            else 100.0)
    text = run_kiln("bench", art, "--repeat", "5", env={"KILN_NUM_THREADS": "2",
                                                        "KILN_SPIN_MS": "7.5"})
    assert text.returncode == 0 and "p99" in text.stdout, text.stderr
    assert "threads: 2, idle workers spin 7.5 ms" in text.stdout, text.stdout


def test_bench_profile_times_every_kernel_call(model_dir, tmp_path):
    """`kiln bench --profile`: every kernel call of a run is timed and attributed by name
    (the standalone runtime's kiln_model_profile); a TVM-runtime artifact is refused."""
    import kiln

    art = tmp_path / "m.tar.gz"
    assert run_kiln("compile", model_dir / "mlp.onnx", "--platform", "LINUX/X86_64", "-o",
                    art).returncode == 0
    res = run_kiln("bench", art, "--repeat", "6", "--profile", "--json")
    assert res.returncode == 0, res.stderr
    kernels = json.loads(res.stdout)["kernels"]
    model = kiln.load(art)
    calls = [line.split()[1] for line in (model._dir / "plan.txt").read_text().splitlines()
             if line.startswith("c ")]
    assert calls and sum(k["calls"] for k in kernels) == len(calls)
    assert {k["kernel"] for k in kernels} == set(calls)
    assert "fast_softmax" in calls and any(c.startswith("fused_matmul") for c in calls)
    assert all(k["mean_us"] > 0 for k in kernels)
    assert [k["mean_us"] for k in kernels] == sorted((k["mean_us"] for k in kernels), reverse=True)
    assert abs(sum(k["share"] for k in kernels) - 1.0) < 1e-9
    # profiling does not change the results, and stops afterwards
    x = np.random.default_rng(0).standard_normal(model.get_input_shapes()[0]).astype(np.float32)
    before = model.run(x)[0]
    assert len(model.profile(x, runs=2)) == len(kernels)
    np.testing.assert_array_equal(model.run(x)[0], before)
    text = run_kiln("bench", art, "--repeat", "3", "--profile", "--top", "2")
    assert text.returncode == 0 and f"{len(kernels)} kernels" in text.stdout
    # --top 2 lists two kernel rows (which two depends on this run's timings)
    rows = [line for line in text.stdout.splitlines() if re.search(r"\d%\s*│\s*$", line)]
    assert len(rows) == 2, text.stdout

    tvm_art = tmp_path / "tvm.tar.gz"
    assert run_kiln("compile", model_dir / "mlp.onnx", "--platform", "LINUX/X86_64", "-o",
                    tvm_art, "--compiler-options", '{"runtime": "tvm"}').returncode == 0
    res = run_kiln("bench", tvm_art, "--repeat", "2", "--profile")
    assert res.returncode == 18 and "profile_unsupported" in res.stderr, res.stderr


def _bench_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "run.py"
    spec = importlib.util.spec_from_file_location("kiln_bench_run", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_table_and_plot_show_every_runtime_relative_to_ort(tmp_path):
    bench = _bench_module()
    rows = [{"model": "mlp", "batch": b, "median_ms": {"onnxruntime": 2.0, "kiln": 3.0,
                                                       "pytorch_eager": 4.0},
             "ratio_to_ort": {"onnxruntime": 1.0, "kiln": 1.5, "pytorch_eager": 2.0},
             "kiln_compile_s": 4.2} for b in (1, 8)]
    text = bench.table(rows)
    assert "| kiln / ORT | pytorch_eager / ORT |" in text and "kiln_tuned" not in text
    assert "| mlp | 8 | 2.00 | **1.50x** | 2.00x | 4.2 |" in text
    png = bench.plot(rows, tmp_path / "r.png")
    if png is not None:   # matplotlib is a bench extra
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_torch_eager_runs_the_zoo_graph_like_onnxruntime():
    import numpy as np
    import pytest

    pytest.importorskip("torch")
    from kiln.examples.zoo import ZOO

    bench = _bench_module()
    model = ZOO["mlp"](2)
    x = np.random.default_rng(3).standard_normal((2, 784)).astype(np.float32)
    got = bench.torch_session(model, 2)({"x": x})
    import onnxruntime as ort

    ref = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-4)
