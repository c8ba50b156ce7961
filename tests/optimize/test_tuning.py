"""Tuning once per device: `kiln tune` (over TVM RPC on loopback, the host as the "device"),
`kiln compile --tune-trials` (measured on the host), the per-target database that later
compiles reuse, and `kiln tune-db list|export|import`.

Each tuning run costs 1-2 minutes on 2 cores, so the module runs two and shares them."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import run_kiln

pytestmark = pytest.mark.slow
PLATFORM = "LINUX/X86_64"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(predicate, seconds: float) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


@pytest.fixture(scope="module")
def rpc_device(tmp_path_factory):
    """A TVM RPC tracker and one RPC server registered under key ``loopback``, both local."""
    from tvm import rpc

    port, server_port = _free_port(), _free_port()
    logs = tmp_path_factory.mktemp("rpc")
    env = {"TVM_NUM_THREADS": "2"}
    import os

    tracker = subprocess.Popen(
        [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port",
         str(port), "--port-end", str(port + 1)], stdout=open(logs / "tracker.log", "w"),
        stderr=subprocess.STDOUT, env={**os.environ, **env})
    server = subprocess.Popen(
        [sys.executable, "-m", "tvm.exec.rpc_server", "--tracker", f"127.0.0.1:{port}",
         "--key", "loopback", "--host", "127.0.0.1", "--port", str(server_port), "--port-end",
         str(server_port + 1)], stdout=open(logs / "server.log", "w"),
        stderr=subprocess.STDOUT, env={**os.environ, **env})

    def registered() -> bool:
        try:
            info = rpc.connect_tracker("127.0.0.1", port).summary()
        except Exception:  # noqa: BLE001 - not up yet
            return False
        return any(s["key"].endswith("loopback") for s in info.get("server_info", []))

    try:
        assert _wait_for(registered, 60), (logs / "tracker.log").read_text() + \
            (logs / "server.log").read_text()
        yield f"127.0.0.1:{port}"
    finally:
        for proc in (server, tracker):
            proc.terminate()
            proc.wait(timeout=20)


@pytest.fixture(scope="module")
def mlp(model_dir) -> tuple[Path, np.ndarray]:
    return model_dir / "mlp.onnx", np.load(model_dir / "mlp.x.npy")


@pytest.fixture(scope="module")
def rpc_tuned(rpc_device, mlp, tmp_path_factory):
    """`kiln tune` over RPC into a fresh database directory; (report, env)."""
    env = {"KILN_TUNE_DIR": str(tmp_path_factory.mktemp("tunedb"))}
    res = run_kiln("tune", mlp[0], "--platform", PLATFORM, "--trials", "6", "--rpc", rpc_device,
                   "--rpc-key", "loopback", "--json", env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout), env


def test_tune_over_rpc_measures_every_kernel_and_never_keeps_a_slower_one(rpc_tuned):
    report, env = rpc_tuned
    tasks = report["tasks"]
    assert {t["name"] for t in tasks} >= {"fused_matmul_add_relu", "fast_softmax"}
    # Kiln's default schedule of every kernel is measured on the device and recorded ...
    assert all(t["default_us"] is not None and t["default_us"] > 0 for t in tasks)
    # ... so the best record of each kernel is at worst the default itself
    assert all(t["best_us"] <= t["default_us"] for t in tasks)
    assert 1 <= len(report["tuned_tasks"]) <= len(tasks) and report["trials"] >= 1
    db = Path(report["database"])
    assert db.parent == Path(env["KILN_TUNE_DIR"])
    records = (db / "database_tuning_record.json").read_text().splitlines()
    assert len(records) >= len(tasks) + 1    # the defaults plus what the search measured
    # half of the 6 trials went to variants of Kiln's own schedule (traces that sample
    # nothing), the other half to MetaSchedule's search
    unsampled = [r for r in records if '"Sample' not in r]
    assert len(unsampled) >= len(tasks) + 3, len(unsampled)
    assert report["trials"] == 6


def test_later_compiles_apply_the_database_and_agree_with_the_default(rpc_tuned, mlp, tmp_path):
    import kiln

    _, env = rpc_tuned
    tuned, plain = tmp_path / "tuned.tar.gz", tmp_path / "plain.tar.gz"
    res = run_kiln("compile", mlp[0], "--platform", PLATFORM, "-o", tuned, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    res = run_kiln("compile", mlp[0], "--platform", PLATFORM, "-o", plain, "--no-tuning-db",
                   env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    m_tuned, m_plain = kiln.load(tuned), kiln.load(plain)
    assert "tuned (4 kernels from the tuning database)" in \
        m_tuned.manifest.compile_options["pipeline"]
    assert "tuned" not in m_plain.manifest.compile_options["pipeline"]
    assert m_tuned.manifest.verification["verified"] is True
    x = mlp[1]
    from conftest import onnx_reference

    ref = onnx_reference(mlp[0], {"x": x})[0]
    a, b = m_tuned.run({"x": x})[0], m_plain.run({"x": x})[0]
    np.testing.assert_allclose(a, ref, atol=1e-4, rtol=1e-3)
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-3)


def test_tune_db_export_import_round_trip(rpc_tuned, tmp_path):
    _, env = rpc_tuned
    listed = json.loads(run_kiln("tune-db", "list", "--json", env=env).stdout)
    assert len(listed) == 1 and listed[0]["target"] == "linux_x86_64"
    archive = tmp_path / "db.tar.gz"
    res = run_kiln("tune-db", "export", "linux_x86_64", "-o", archive, env=env)
    assert res.returncode == 0, res.stderr
    other = {"KILN_TUNE_DIR": str(tmp_path / "other-machine")}
    res = run_kiln("tune-db", "import", archive, env=other)
    assert res.returncode == 0, res.stderr
    imported = json.loads(run_kiln("tune-db", "list", "--json", env=other).stdout)
    assert [(d["name"], d["workloads"], d["records"]) for d in imported] == \
        [(d["name"], d["workloads"], d["records"]) for d in listed]
    # importing twice merges: no duplicate workloads
    assert run_kiln("tune-db", "import", archive, env=other).returncode == 0
    again = json.loads(run_kiln("tune-db", "list", "--json", env=other).stdout)
    assert again[0]["workloads"] == listed[0]["workloads"]


def test_compile_with_tune_trials_tunes_on_the_host_first(mlp, tmp_path):
    import kiln

    env = {"KILN_TUNE_DIR": str(tmp_path / "db")}
    out = tmp_path / "m.tar.gz"
    res = run_kiln("compile", mlp[0], "--platform", PLATFORM, "--tune-trials", "4", "-o", out,
                   env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    model = kiln.load(out)
    opts = model.manifest.compile_options
    assert opts["tune_trials"] == 4 and "tuned (4 kernels" in opts["pipeline"]
    assert model.manifest.verification["verified"] is True
    assert len(list((tmp_path / "db").iterdir())) == 1


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("args, code, status", [
    (["--platform", PLATFORM], "invalid_options", 23),                       # no budget
    (["--platform", PLATFORM, "--trials", "0"], "invalid_options", 23),
    (["--platform", PLATFORM, "--trials", "2", "--rpc", "nohostport"], "invalid_options", 23),
    (["--platform", PLATFORM, "--trials", "2", "--rpc", "127.0.0.1:9"], "invalid_options", 23),
    (["--target", "rasp3b", "--trials", "2"], "target_not_yet_supported", 22),
])
def test_tune_errors(mlp, args, code, status):
    res = run_kiln("tune", mlp[0], *args)
    assert res.returncode == status and f"error[{code}]" in res.stderr, res.stderr


def test_tune_refuses_an_unreachable_tracker_quickly(mlp):
    port = _free_port()   # nothing listens there
    start = time.time()
    res = run_kiln("tune", mlp[0], "--platform", PLATFORM, "--trials", "2", "--rpc",
                   f"127.0.0.1:{port}", "--rpc-key", "pi")
    assert res.returncode == 33 and "error[tuning_failed]" in res.stderr
    assert "no TVM RPC tracker answers" in res.stderr and time.time() - start < 60


def test_tune_db_import_rejects_bad_archives(tmp_path):
    env = {"KILN_TUNE_DIR": str(tmp_path / "db")}
    evil = _tar(tmp_path / "evil.tar.gz", {"../escape/kiln-target.json": b"{}"})
    res = run_kiln("tune-db", "import", evil, env=env)
    assert res.returncode == 51 and "error[unsafe_archive]" in res.stderr
    assert not (tmp_path / "escape").exists()
    junk = _tar(tmp_path / "junk.tar.gz", {"x/readme.txt": b"hello"})
    res = run_kiln("tune-db", "import", junk, env=env)
    assert res.returncode == 57 and "error[invalid_tuning_database]" in res.stderr
    res = run_kiln("tune-db", "export", "nosuchtarget", "-o", tmp_path / "o.tar.gz", env=env)
    assert res.returncode == 57 and "error[invalid_tuning_database]" in res.stderr
    res = run_kiln("tune-db", "import", tmp_path / "missing.tar.gz", env=env)
    assert res.returncode == 10 and "error[file_not_found]" in res.stderr


def test_schedule_variants_are_distinct_and_compute_the_same():
    """The register tiles and loop orders tuning measures (TILE_SHAPES) are schedules of their
    own (the database would otherwise hold duplicates) and give the default's result."""
    import onnx
    import tvm
    import tvm_ffi
    from onnx import helper
    from tvm.relax.frontend.onnx import from_onnx

    from kiln.optimize.cpu_schedule import CPUScheduleConfig, _constant_params, _Scheduler
    from kiln.optimize.pipeline import pre_schedule_passes
    from kiln.optimize.tuning import TILE_SHAPES

    rng = np.random.default_rng(3)
    w = rng.standard_normal((64, 32, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"])], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 32, 12, 12])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 64, 12, 12])],
        [onnx.numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    target = tvm.target.Target({"kind": "llvm", "mcpu": "x86-64-v3"})
    with target:
        mod = tvm.transform.Sequential(pre_schedule_passes(target, opt_level=2, winograd=False))(
            from_onnx(model, keep_params_in_input=False))  # the direct conv kernel's variants
    consts = _constant_params(mod)
    name, func = next((gv.name_hint, f) for gv, f in mod.functions_items()
                      if isinstance(f, tvm.tirx.PrimFunc) and "conv2d" in gv.name_hint)
    from tvm.s_tir import meta_schedule as ms

    args = [rng.standard_normal([int(d) for d in info.shape]).astype(str(info.dtype))
            for info in ms.arg_info.ArgInfo.from_prim_func(func)]
    outputs, hashes = [], set()
    for variant in [{}, *TILE_SHAPES]:
        sch = _Scheduler(func, CPUScheduleConfig(vector_lanes=8, **variant),
                         consts.get(name, frozenset()))
        assert sch.run() is not None
        hashes.add(tvm_ffi.structural_hash(sch.sch.mod))
        scheduled = sch.sch.mod["main"].with_attr("global_symbol", "main")
        lib = tvm.tirx.build(tvm.IRModule({"main": scheduled}), target=target)
        bufs = [tvm.runtime.tensor(a) for a in args]
        lib["main"](*bufs)
        outputs.append(bufs[-1].numpy())
    assert len(hashes) >= 5, len(hashes)   # 12-wide map: some row caps give the same tile
    for out in outputs[1:]:
        np.testing.assert_allclose(out, outputs[0], rtol=1e-5, atol=1e-4)


def test_budget_accounting_leaves_no_round_unfitted():
    """The tile variants take up to half of the trials or the budget; the rest goes to
    MetaSchedule, whose last round shrinks to what is left instead of being dropped (a 900 s
    ResNet-50 tune stopped at 527 s)."""
    from kiln.options import TuneOptions
    from kiln.optimize.tuning import TILE_SHAPES, _fitting_round, _remaining, _tile_shape_limit

    assert _tile_shape_limit(TuneOptions(trials=6), 4) == 3
    assert _tile_shape_limit(TuneOptions(time_budget_s=900), 19) == 19 * len(TILE_SHAPES)
    assert _tile_shape_limit(TuneOptions(time_budget_s=14), 19) == 10
    left = _remaining(TuneOptions(trials=6, time_budget_s=100), 3, 40.0)
    assert (left.trials, left.time_budget_s) == (3, 60.0)
    assert _remaining(TuneOptions(trials=3), 3, 1.0) is None
    assert _remaining(TuneOptions(time_budget_s=50), 10, 50.0) is None
    # 19 kernels, the last round of 16 each took 400 s: 370 s left fit 13 each, 100 s none
    assert _fitting_round(19, 16, 500.0, 400.0, 16) == 16
    assert _fitting_round(19, 16, 370.0, 400.0, 16) == 13
    assert _fitting_round(19, 16, 100.0, 400.0, 16) is None


def test_candidates_are_measured_with_cold_weights():
    """Each measured run starts with every argument but the input flushed from the caches, as
    in a whole model (the weights come from memory): measured warm, ResNet-50's classifier took
    0.3 of its in-model time and the candidates ranked differently."""
    from kiln.options import TuneOptions
    from kiln.optimize.tuning import _runner

    config = _runner(TuneOptions(trials=1)).evaluator_config
    assert config.enable_cpu_cache_flush is True and config.number == 1


@pytest.fixture(scope="module")
def host_tuned(mlp, tmp_path_factory):
    """`kiln tune` measured on this machine, so each kernel is chosen in the whole model;
    (report, env)."""
    env = {"KILN_TUNE_DIR": str(tmp_path_factory.mktemp("hostdb"))}
    res = run_kiln("tune", mlp[0], "--platform", PLATFORM, "--trials", "8", "--json", env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "timing the kernels of" in res.stderr
    return json.loads(res.stdout), env


def test_host_tuning_chooses_each_kernel_in_the_whole_model(host_tuned, mlp, tmp_path):
    """Every tuned kernel gets a choice timed inside the compiled model: Kiln's default unless
    a candidate ran at least MIN_GAIN faster there; the choices are the database's selection
    (one record per kernel), which export and import carry, and a later compile applies."""
    import kiln
    from kiln.compiler_tuning import MIN_GAIN

    report, env = host_tuned
    chosen = report["in_model"]
    assert set(chosen) == set(report["tuned_tasks"]) and chosen
    for name, entry in chosen.items():
        assert entry["default_us"] > 0 and entry["candidates"] >= 1, (name, entry)
        if entry["chosen"] == "default":
            assert entry["us"] == entry["default_us"]
        else:
            # chosen by the median of its round-by-round ratios to the default (the medians
            # of the two kernels' times alone can disagree by a round's drift)
            assert entry["chosen"].startswith("candidate ")
            assert entry["best_ratio"] <= 1 - MIN_GAIN
    # MetaSchedule's records and Kiln's variants gave some kernel a second candidate
    assert any(e["candidates"] >= 2 for e in chosen.values())
    db = Path(report["database"])
    selected = (db / "selected" / "database_tuning_record.json").read_text().splitlines()
    assert len(selected) == len(chosen)
    archive = tmp_path / "db.tar.gz"
    assert run_kiln("tune-db", "export", "linux_x86_64", "-o", archive, env=env).returncode == 0
    other = {"KILN_TUNE_DIR": str(tmp_path / "other")}
    assert run_kiln("tune-db", "import", archive, env=other).returncode == 0
    copied = tmp_path / "other" / db.name / "selected" / "database_tuning_record.json"
    assert len(copied.read_text().splitlines()) == len(chosen)
    out = tmp_path / "tuned.tar.gz"
    res = run_kiln("compile", mlp[0], "--platform", PLATFORM, "-o", out, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    model = kiln.load(out)
    assert "tuned (4 kernels from the tuning database)" in \
        model.manifest.compile_options["pipeline"]
    from conftest import onnx_reference

    ref = onnx_reference(mlp[0], {"x": mlp[1]})[0]
    np.testing.assert_allclose(model.run({"x": mlp[1]})[0], ref, atol=1e-4, rtol=1e-3)


def test_the_selection_comes_before_faster_records_measured_alone(host_tuned, mlp, monkeypatch):
    """A kernel's selected schedule is applied even where the search measured another record
    faster alone; a new choice for the kernel replaces the old one."""
    from kiln.importers import import_model
    from kiln.optimize.cpu_schedule import (CPUScheduleConfig, _constant_params, _Scheduler,
                                           lanes_for)
    from kiln.optimize.tuning import (TuneReport, apply_database, candidates, extract_tasks,
                                      tuning_target, write_selection)
    from kiln.targets import resolve_target

    _, env = host_tuned
    monkeypatch.setenv("KILN_TUNE_DIR", env["KILN_TUNE_DIR"])
    spec, _ = resolve_target(None, PLATFORM, None)
    imported = import_model(mlp[0], input_shapes=None, framework=None, workdir=mlp[0].parent)
    target = tuning_target(spec)
    fused, tasks = extract_tasks(imported.mod, target)
    consts = _constant_params(fused)
    report = TuneReport(database=Path(env["KILN_TUNE_DIR"]))
    defaults = {}
    for task in tasks:
        sch = _Scheduler(task.dispatched[0]["main"], CPUScheduleConfig(vector_lanes=lanes_for(
            spec.simd)), consts.get(task.task_name, frozenset()))
        if sch.run() is not None:
            report.hot.append(task)
            report.default_traces[task.task_name] = sch.sch.trace
            defaults[task.task_name] = sch.sch.mod["main"]
    cands = candidates(spec, report, 3)
    name = next(n for n, picks in cands.items() if len(picks) >= 2)
    others = [n for n in cands if n != name]

    def body(func) -> str:   # the schedule, without the function's attributes
        return "\n".join(line for line in func.script().splitlines()
                         if "prim_func" not in line and "func_attr" not in line)

    def applied():
        with target:
            mod = apply_database(spec, [])(fused)
        return body(mod[name]) if mod[name].attrs.get("tirx.is_scheduled", False) else None

    default_body = body(defaults[name])
    # candidate 1 chosen, with a time far slower than anything measured alone
    write_selection(spec, report, cands, {name: (1, 10.0), **{n: (0, 10.0) for n in others}})
    first = applied()
    assert first is not None and first != default_body
    write_selection(spec, report, cands, {name: (0, 10.0)})
    assert applied() == default_body
    lines = (Path(report.database).glob("*/selected/database_tuning_record.json"))
    assert [len(p.read_text().splitlines()) for p in lines] == [len(cands)]


def test_a_candidate_needs_a_clear_gain_in_the_model_to_replace_the_default():
    """Candidates are compared with the default round by round (the machine's speed drifts
    between rounds); the median ratio must be at most 1 - MIN_GAIN."""
    from kiln.compiler_tuning import MIN_GAIN, _choose

    assert MIN_GAIN == 0.05
    cands = {"a": [None, "r1", "r2"], "b": [None, "r1"], "c": [None], "d": [None, "r1"]}
    # three rounds; the machine is twice as fast in the second one
    default = [{"a": 100.0, "b": 100.0, "c": 50.0, "d": 80.0},
               {"a": 50.0, "b": 50.0, "c": 25.0, "d": 40.0},
               {"a": 100.0, "b": 100.0, "c": 50.0, "d": 80.0}]
    first = [{"a": 90.0, "b": 98.0, "c": 10.0},
             {"a": 45.0, "b": 49.0, "c": 5.0},
             {"a": 90.0, "b": 98.0, "c": 10.0}]
    # candidate 2 of "a" takes 80 in every round: 0.8x the default in two rounds, 1.6x in
    # the fast one, median 0.8
    second = [{"a": 80.0, "b": 10.0, "c": 10.0},
              {"a": 80.0, "b": 10.0, "c": 10.0},
              {"a": 80.0, "b": 10.0, "c": 10.0}]
    chosen, summary = _choose(cands, [default, first, second])
    assert chosen["a"] == (2, pytest.approx(80e-6))     # median ratio 0.8 against 0.9
    assert chosen["b"] == (0, pytest.approx(100e-6))    # 2 % faster: noise, not a gain
    assert chosen["c"] == (0, pytest.approx(50e-6))     # no candidate but the default
    assert chosen["d"] == (0, pytest.approx(80e-6))     # candidate missing from the model
    assert summary["a"] == {"chosen": "candidate 2", "us": 80.0, "default_us": 100.0,
                            "best_ratio": 0.8, "candidates": 3}
    assert summary["b"]["chosen"] == "default" and summary["b"]["best_ratio"] == 0.98
    assert summary["c"]["best_ratio"] is None
    # a candidate faster only in a drifting round is not chosen
    drift = [{"a": 100.0}, {"a": 100.0}, {"a": 100.0}, {"a": 100.0}]
    lucky = [{"a": 60.0}, {"a": 101.0}, {"a": 102.0}, {"a": 99.0}]
    chosen, _ = _choose({"a": [None, "r1"]}, [drift, lucky])
    assert chosen["a"][0] == 0


def test_the_candidate_builds_come_out_of_the_time_budget():
    """Two more builds of the model (at the first one's time, plus a fifth) are set aside
    from a time budget; only one when that would leave the search under a minute."""
    from kiln.compiler_tuning import _plan
    from kiln.options import TuneOptions

    count, search = _plan(TuneOptions(time_budget_s=900), 30.0)
    assert count == 3 and search.time_budget_s == pytest.approx(900 - 30 - 72 - 10)
    count, search = _plan(TuneOptions(time_budget_s=100), 10.0)
    assert count == 2 and search.time_budget_s == pytest.approx(100 - 10 - 12 - 10)
    count, search = _plan(TuneOptions(trials=8), 30.0)
    assert count == 3 and search == TuneOptions(trials=8)


def test_a_failed_whole_model_check_keeps_the_search_and_says_so(mlp, tmp_path, monkeypatch):
    """When timing the builds fails (here: the timing process reports an error), the search's
    records stay, no selection is written, and the report says why instead of losing the
    tuning to a traceback."""
    import kiln.compiler_tuning as ct
    from kiln.compiler import tune_model
    from kiln.errors import KilnError
    from kiln.options import TuneOptions

    def broken(_folders):
        raise KilnError("tuning_failed", "timing the candidates in the model failed: boom")

    monkeypatch.setenv("KILN_TUNE_DIR", str(tmp_path / "db"))
    monkeypatch.setattr(ct, "_profile", broken)
    said = []
    report = tune_model(mlp[0], TuneOptions(trials=2), platform=PLATFORM, progress=said.append)
    assert report.in_model == {"error": "timing the candidates in the model failed: boom"}
    assert any("no kernel's choice was checked in the model" in s for s in said)
    db = Path(report.database)
    assert (db / "database_tuning_record.json").read_text().count("\n") >= len(report.tasks)
    assert not (db / "selected").exists()
