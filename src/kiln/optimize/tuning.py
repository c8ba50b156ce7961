"""Tuning once per device: MetaSchedule search, seeded with Kiln's default schedules.

Every fused kernel (a MetaSchedule *task*) first gets Kiln's default schedule measured and
recorded in the target's database, with its trace, exactly like a candidate MetaSchedule found.
The kernels that take most of the time then get variants of Kiln's schedule measured (other
register tiles and loop orders, :data:`TILE_SHAPES`, up to half of the trials or the budget) and
MetaSchedule's search for the rest; a later compile applies the fastest record of each kernel.
Tuning can therefore only replace a default schedule by one that measured faster on the device.
Candidates run with the weights flushed from the caches, as in a whole model.

Databases live under :func:`kiln.optimize.tune_db.database_dir` (one per target fingerprint) and
are reused by every later compile for that target.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import tvm
import tvm_ffi
from tvm import relax
from tvm.s_tir import meta_schedule as ms

from kiln.errors import KilnError
from kiln.optimize.cpu_schedule import (CPUScheduleConfig, _constant_params, _Scheduler, lanes_for,
                                       overlap_annotated_tiles)
from kiln.optimize.tune_db import RECORDS, SELECTED, database_dir, replace_records, write_info
from kiln.options import TuneOptions
from kiln.targets import TargetSpec

Progress = Callable[[str], None]
#: Variants of Kiln's own schedule that tuning measures for each hot kernel before
#: MetaSchedule's search (which rarely beats the default schedule: ResNet-50, 900 s, 1.3 %):
#: register tiles (vectors side by side x most rows) and the two loop orders (weights' blocks
#: outermost, or activations' tiles outermost). Each won on some ResNet-50 convs; the best of
#: them summed to 67.7 ms against 81.5 ms for the defaults (one measurement each).
TILE_SHAPES = ({"tile_vectors": 4, "max_rows": 3}, {"tile_vectors": 4, "max_rows": 2},
               {"tile_vectors": 2, "max_rows": 6}, {"tile_vectors": 2, "max_rows": 4},
               {"tile_vectors": 1, "max_rows": 8}, {"cache_bytes": 0, "pixels_outer_ratio": 0},
               {"cache_bytes": 1 << 40})
#: The search covers the kernels that together take this share of the default schedule's time.
TIME_SHARE = 0.9


@dataclass
class TaskReport:
    name: str
    weight: int
    default_us: float | None
    best_us: float | None = None

    @property
    def speedup(self) -> float | None:
        if not self.default_us or not self.best_us:
            return None
        return self.default_us / self.best_us


@dataclass
class TuneReport:
    database: Path
    tasks: list[TaskReport] = field(default_factory=list)
    tuned: list[str] = field(default_factory=list)
    trials: int = 0
    seconds: float = 0.0
    #: the whole-model check (kiln.compiler_tuning): per kernel, the chosen candidate's
    #: label and its time in the model and that of Kiln's default schedule (us per run)
    in_model: dict = field(default_factory=dict)
    #: the hot kernels' MetaSchedule tasks and the traces of Kiln's default schedules, by name
    hot: list = field(default_factory=list, repr=False)
    default_traces: dict = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        return {"database": str(self.database), "trials": self.trials,
                "seconds": round(self.seconds, 1), "tuned_tasks": self.tuned,
                "tasks": [{"name": t.name, "weight": t.weight, "default_us": t.default_us,
                           "best_us": t.best_us} for t in self.tasks],
                "in_model": self.in_model}


def tuning_target(spec: TargetSpec) -> tvm.target.Target:
    """The TVM target MetaSchedule tunes for: the spec's, with ``num-cores`` always set."""
    target = dict(spec.tvm_target())
    target.setdefault("num-cores", spec.num_cores or os.cpu_count() or 1)
    return tvm.target.Target(target)


def extract_tasks(mod: tvm.IRModule, target: tvm.target.Target, *, dtype: str = "float32",
                  winograd: bool = True):
    """The fused module right before scheduling, and its MetaSchedule tasks."""
    from kiln.optimize.pipeline import pre_schedule_passes

    with target:
        fused = tvm.transform.Sequential(pre_schedule_passes(target, opt_level=2, dtype=dtype,
                                                             winograd=winograd))(mod)
    return fused, ms.relax_integration.extract_tasks(fused, target)


def _cpu_tensor_intrinsics(arch: str) -> None:
    """Register only the CPU tensor intrinsics MetaSchedule's rules may ask for.

    ``TuneContext`` imports ``tvm.s_tir.tensor_intrin``, whose CUDA, ROCm and Hexagon modules
    take 20-90 s to import on 2 cores; a CPU target never uses them."""
    import importlib
    import importlib.util
    import sys
    import types

    import tvm.s_tir

    name = "tvm.s_tir.tensor_intrin"
    if name not in sys.modules:
        found = importlib.util.find_spec(name)
        package = types.ModuleType(name)
        package.__path__ = list(found.submodule_search_locations)
        package.__spec__, package.__file__ = found, found.origin
        sys.modules[name] = package
        tvm.s_tir.tensor_intrin = package
    sub = {"x86_64": "x86", "aarch64": "arm_cpu", "riscv64": "riscv_cpu"}.get(arch)
    if sub:
        importlib.import_module(f"{name}.{sub}")


def _check_extras() -> None:
    import importlib.util

    missing = [m for m in ("xgboost", "psutil", "cloudpickle", "tornado")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise KilnError("missing_dependency", f"tuning needs {', '.join(missing)}",
                        hint="pip install 'kilnml[tune]'")


def tune_model(mod: tvm.IRModule, spec: TargetSpec, options: TuneOptions, *,
               dtype: str = "float32", progress: Progress | None = None) -> TuneReport:
    """Tune the kernels of ``mod`` (an imported Relax module) for ``spec`` into its database,
    computing in ``dtype``."""
    say = progress or (lambda _msg: None)
    start = time.perf_counter()
    _check_extras()
    _cpu_tensor_intrinsics(spec.arch)
    target = tuning_target(spec)
    workdir = database_dir(spec, create=True)
    write_info(workdir, spec)
    fused, tasks = extract_tasks(mod, target, dtype=dtype, winograd=options.winograd)
    if not tasks:
        raise KilnError("invalid_model", "the model has no kernels to tune")
    database = ms.database.JSONDatabase(work_dir=str(workdir))
    builder, runner = _builder(spec, options), _runner(options)
    report = TuneReport(database=workdir)
    consts = _constant_params(fused)
    say(f"measuring Kiln's default schedule of {len(tasks)} kernels")
    lanes = lanes_for(spec.simd, dtype)
    defaults = _record_defaults(tasks, target, consts, lanes, database, builder, runner,
                                report.default_traces)

    def tile_shapes(hot) -> int:
        say(f"measuring {len(TILE_SHAPES)} variants of Kiln's schedule (register tiles, loop "
            f"orders) for {len(hot)} kernels")
        return _record_tile_shapes(hot, target, consts, lanes, database, builder, runner,
                                   _tile_shape_limit(options, len(hot)))

    search_tasks(tasks, defaults, spec, options, workdir, database, builder, runner, report, say,
                 pre_search=tile_shapes)
    report.seconds = time.perf_counter() - start
    return report


def search_tasks(tasks, defaults: list[float | None], spec: TargetSpec, options: TuneOptions,
                 workdir: Path, database, builder, runner, report: TuneReport,
                 say: Progress, pre_search: Callable[[list], int] | None = None) -> None:
    """After the defaults were measured (``defaults``: seconds per task): search the hot
    kernels and fill ``report`` with every kernel's default and best time. ``pre_search``
    measures candidates of its own for the hot kernels first and returns how many; they count
    against the trials and the time budget."""
    if all(secs is None for secs in defaults):
        raise KilnError("tuning_failed", f"no kernel of the model could be built and measured "
                        f"for {spec.name}", hint="check that the device (or --rpc tracker) "
                        "is reachable; run with KILN_DEBUG=1 for the full log")
    for task, secs in zip(tasks, defaults):
        report.tasks.append(TaskReport(task.task_name, int(task.weight),
                                       None if secs is None else secs * 1e6))
    chosen = _hot_tasks(tasks, report.tasks)
    report.tuned = [t.task_name for t in chosen]
    report.hot = chosen
    # MetaSchedule logs its progress tables to stdout; keep stdout for results (--json)
    with contextlib.redirect_stdout(sys.stderr):
        if pre_search is not None:
            started = time.perf_counter()
            used = pre_search(chosen)
            report.trials += used
            options = _remaining(options, used, time.perf_counter() - started)
        if options is not None:
            _search(chosen, options, workdir, database, builder, runner, report, say)
    for task, entry in zip(tasks, report.tasks):
        best = database.get_top_k(database.commit_workload(task.dispatched[0]), 1)
        if best:
            entry.best_us = _mean(best[0].run_secs) * 1e6


def _search(tasks, options: TuneOptions, workdir: Path, database, builder, runner,
            report: TuneReport, say: Progress) -> None:
    """MetaSchedule's evolutionary search, in rounds until the trials or the time run out."""
    if not tasks:
        return
    budget = options.time_budget_s
    total = options.trials if options.trials else None
    if total is not None and total < len(tasks):
        tasks = tasks[:total]          # the hottest kernels, one trial each
    per_round = _per_task_round(options, len(tasks))
    if budget is not None:
        # fit the first round into the budget (the later ones are sized by the measured one)
        while per_round > 2 and _round_estimate(len(tasks), per_round) > budget:
            per_round //= 2
        while len(tasks) > 1 and _round_estimate(len(tasks), per_round) > budget:
            tasks = tasks[:-1]
    started, last, done, last_per_task = time.perf_counter(), 0.0, 0, per_round
    while True:
        if total is not None:
            if done >= total:
                return
            # fewer trials left than kernels: the hottest ones get one each (a round of one
            # trial per kernel ran past --trials)
            tasks = tasks[:total - done]
        per_task = per_round if total is None else min(per_round, max(1, (
            total - done) // len(tasks)))
        elapsed = time.perf_counter() - started
        if budget is not None and done:
            per_task = _fitting_round(len(tasks), per_task, budget - elapsed, last,
                                      last_per_task)
            if per_task is None:
                return
        last_per_task = per_task
        say(f"searching {len(tasks)} kernels, {per_task} trials each")
        t0 = time.perf_counter()
        # a smaller population for small budgets: the search, not the measuring, dominates
        strategy = ms.search_strategy.EvolutionarySearch(
            population_size=min(512, max(128, 16 * per_task)),
            genetic_num_iters=3 if per_task <= 32 else 4)
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            tasks, str(workdir), strategy=strategy, num_threads=os.cpu_count() or 1,
            seed=options.seed)
        ms.tune.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(workdir),
                           max_trials_global=per_task * len(tasks), max_trials_per_task=per_task,
                           num_trials_per_iter=min(per_task, 64), builder=builder,
                           runner=runner, database=database)
        report.trials += per_task * len(tasks)
        done += per_task * len(tasks)
        last = time.perf_counter() - t0
        if budget is None and total is None:
            return


def _remaining(options: TuneOptions, trials: int, seconds: float) -> TuneOptions | None:
    """``options`` less ``trials`` and ``seconds`` already spent (None: nothing is left)."""
    left_trials = options.trials - trials if options.trials is not None else None
    left_s = options.time_budget_s - seconds if options.time_budget_s is not None else None
    if (left_trials is not None and left_trials < 1) or (left_s is not None and left_s <= 1):
        return None
    return dataclasses.replace(options, trials=left_trials, time_budget_s=left_s)


def _fitting_round(n_tasks: int, per_task: int, left_s: float, last_s: float,
                   last_per_task: int) -> int | None:
    """Trials per kernel for the next round given ``left_s`` seconds: ``per_task`` when a round
    like the last one (``last_s`` for ``last_per_task`` each) fits, else the most that fit
    (the search's fixed cost per kernel stays), None below 4."""
    if last_s <= left_s:
        return per_task
    scale = last_s / _round_estimate(n_tasks, last_per_task)
    fits = [p for p in range(per_task - 1, 3, -1)
            if scale * _round_estimate(n_tasks, p) <= left_s]
    return fits[0] if fits else None


def _round_estimate(n_tasks: int, per_task: int) -> float:
    """Seconds of one search round on 2 cores: ~10 s of evolutionary search per kernel plus
    ~0.7 s to build and measure each candidate (measured with TVM 0.27)."""
    return n_tasks * (10.0 + 0.7 * per_task)


def _per_task_round(options: TuneOptions, n_tasks: int) -> int:
    """Trials per kernel in one search round: all of ``--trials`` at once, else rounds of 16."""
    if options.trials and options.time_budget_s is None:
        return max(1, options.trials // n_tasks)
    return 16


def _hot_tasks(tasks, reports: list[TaskReport]):
    """The kernels that take :data:`TIME_SHARE` of the default time (weight x latency)."""
    cost = [(t.weight * (r.default_us if r.default_us is not None else 1e9), t)
            for t, r in zip(tasks, reports)]
    cost.sort(key=lambda c: -c[0])
    total, acc, chosen = sum(c for c, _ in cost), 0.0, []
    for c, task in cost:
        if chosen and acc >= TIME_SHARE * total:
            break
        chosen.append(task)
        acc += c
    return chosen


def _tile_shape_limit(options: TuneOptions, n_tasks: int) -> int:
    """Most tile-shape candidates to measure: half of the trials or of the time budget (the
    rest is MetaSchedule's), at about 0.7 s each."""
    limits = [n_tasks * len(TILE_SHAPES)]
    if options.trials is not None:
        limits.append(max(1, options.trials // 2))
    if options.time_budget_s is not None:
        limits.append(max(1, int(options.time_budget_s / 2 / 0.7)))
    return min(limits)


def _record_tile_shapes(tasks, target, constants: dict, lanes: int, database, builder, runner,
                        limit: int) -> int:
    """Measure Kiln's schedule of each of ``tasks`` (hottest first) with the variants of
    :data:`TILE_SHAPES` (those that differ from the default and from each other), at most
    ``limit`` candidates, and commit them as records; how many were measured."""
    tasks_out, scheds = [], []
    for task in tasks:
        func = task.dispatched[0]["main"]
        consts = constants.get(task.task_name, frozenset())
        seen = set()
        for cfg in [CPUScheduleConfig(vector_lanes=lanes)] + [
                CPUScheduleConfig(vector_lanes=lanes, **variant) for variant in TILE_SHAPES]:
            scheduler = _Scheduler(func, cfg, consts)
            if scheduler.run() is None:
                continue
            key = tvm_ffi.structural_hash(scheduler.sch.mod)
            if key not in seen:
                if seen:  # the first is the default, measured already
                    tasks_out.append(task)
                    scheds.append(scheduler.sch)
                seen.add(key)
    tasks_out, scheds = tasks_out[:limit], scheds[:limit]
    if scheds:
        record_schedules(tasks_out, scheds, target, database, builder, runner, "cpu")
    return len(scheds)


def _record_defaults(tasks, target, constants: dict, lanes: int, database, builder,
                     runner, traces: dict) -> list[float | None]:
    """Schedule every task with Kiln's default rules, measure them in one batch and commit
    each measured one as a tuning record; their mean seconds (None where it failed). The
    traces of the scheduled ones go into ``traces`` by task name."""
    scheds = []
    for task in tasks:
        scheduler = _Scheduler(task.dispatched[0]["main"], CPUScheduleConfig(vector_lanes=lanes),
                               constants.get(task.task_name, frozenset()))
        if scheduler.run() is not None:
            traces[task.task_name] = scheduler.sch.trace
        scheds.append(scheduler.sch)
    return record_schedules(tasks, scheds, target, database, builder, runner, "cpu")


def record_schedules(tasks, scheds, target, database, builder, runner,
                     device: str) -> list[float | None]:
    """Build and measure one schedule per task (None: the task has none) in one batch and
    commit each measured one, with its trace, as a tuning record; their mean seconds."""
    picked = [i for i, s in enumerate(scheds) if s is not None]
    secs: list[float | None] = [None] * len(tasks)
    if not picked:
        return secs
    tasks, scheds = [tasks[i] for i in picked], [scheds[i] for i in picked]
    built = builder.build([ms.builder.BuilderInput(s.mod, target) for s in scheds])
    # the builder drops weight-repacking blocks, so kernels take the packed weights
    args = [ms.arg_info.ArgInfo.from_entry_func(s.mod, remove_preproc=True) for s in scheds]
    ok = [i for i, b in enumerate(built) if not b.error_msg]
    measured: list[float | None] = [None] * len(tasks)
    try:
        futures = runner.run([ms.runner.RunnerInput(built[i].artifact_path, device, args[i])
                              for i in ok])
        for i, future in zip(ok, futures):
            result = future.result()
            if not result.error_msg:
                measured[i] = _mean(result.run_secs)
    finally:
        for b in built:
            _remove(b.artifact_path)
    for task, sch, arg, sec in zip(tasks, scheds, args, measured):
        if sec is not None:
            workload = database.commit_workload(task.dispatched[0])
            database.commit_tuning_record(ms.database.TuningRecord(
                sch.trace, workload, [sec], target, arg))
    for i, sec in zip(picked, measured):
        secs[i] = sec
    return secs


def _mean(values) -> float:
    vals = [float(v) for v in values]
    return sum(vals) / len(vals)


def _remove(path: str | None) -> None:
    """Delete a built candidate and the temporary directory :func:`_export_shared` made."""
    if path:
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)


# ---- builder and runner ----------------------------------------------------------------

def _builder(spec: TargetSpec, options: TuneOptions):
    workers = max(1, min(options.build_workers, os.cpu_count() or 1))
    return ms.builder.LocalBuilder(max_workers=workers, timeout_sec=120.0, f_build=_fast_build,
                                   f_export=partial(_export_shared, spec.arch, spec.triple))


def _runner(options: TuneOptions):
    # every run starts with the caches flushed of all arguments but the first (the input):
    # in a whole model the input comes warm from the previous kernel and the weights cold from
    # memory (ResNet-50 does not fit in the cache). Measured warm, a conv's time was 0.6-0.8 of
    # its time in the model, the classifier's 0.3, and the ranking of the candidates differed:
    # ResNet-50 tuned this way ran 82.0 ms, tuned warm 84.3 ms, untuned 89.2 ms (one process)
    evaluator = ms.runner.EvaluatorConfig(number=1, repeat=5, min_repeat_ms=0,
                                          enable_cpu_cache_flush=True)
    if options.rpc is None:
        # the runner's workers inherit this; TVM's own default is half the cores
        os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))
        return ms.runner.LocalRunner(timeout_sec=60.0, evaluator_config=evaluator)
    host, port = options.rpc_address()
    _check_tracker(host, port, options.rpc_key)
    config = ms.runner.RPCConfig(tracker_host=host, tracker_port=port,
                                 tracker_key=options.rpc_key, session_timeout_sec=120)
    return ms.runner.RPCRunner(rpc_config=config, evaluator_config=evaluator,
                               max_workers=1)


def _check_tracker(host: str, port: int, key: str) -> None:
    """Fail in seconds, not after every candidate timed out, when the tracker or the device
    is not there."""
    import socket

    from tvm import rpc

    hint = ("start one with `python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port PORT` and, on "
            "the device, `python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY`")
    try:
        socket.create_connection((host, port), timeout=5).close()
        servers = rpc.connect_tracker(host, port).summary().get("server_info", [])
    except (OSError, RuntimeError) as exc:
        raise KilnError("tuning_failed", f"no TVM RPC tracker answers at {host}:{port} "
                        f"({exc})", hint=hint) from None
    keys = sorted({str(s.get("key", "")).split(":", 1)[-1] for s in servers})
    if key not in keys:
        raise KilnError("tuning_failed", f"the tracker at {host}:{port} has no device with key "
                        f"{key!r} (it has: {', '.join(keys) or 'none'})", hint=hint)


def _fast_build(mod, target, _params):
    """MetaSchedule's default build without ``import tvm.s_tir.tensor_intrin`` (~25 s per
    fresh builder worker in TVM 0.27, which made every candidate time out)."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return tvm_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


def _export_shared(arch: str, triple: str, rt_mod) -> str:
    """Link a candidate into a shared library for the device with Kiln's zig toolchain (no C
    compiler is needed on the device, unlike MetaSchedule's default tar export)."""
    import tempfile

    from kiln.codegen.runtime_bundle import tvm_runtime_libs
    from kiln.codegen.toolchain import ZigSharedLinker

    path = os.path.join(tempfile.mkdtemp(prefix="kiln-tune-"), "candidate.so")
    rt_mod.export_library(path, fcompile=ZigSharedLinker(arch, triple, tvm_runtime_libs(arch)))
    return path


def apply_database(spec: TargetSpec, applied: list[str]):
    """A module pass applying the target's database to each kernel it knows (the schedule
    chosen in the whole model, else the fastest record measured alone); the names of the
    kernels it scheduled are appended to ``applied``."""
    workdir = database_dir(spec)
    if workdir is None:
        return None
    database = ms.database.JSONDatabase(work_dir=str(workdir), allow_missing=False)
    if (workdir / SELECTED / RECORDS).is_file():
        database = ms.database.OrderedUnionDatabase(ms.database.JSONDatabase(
            work_dir=str(workdir / SELECTED), allow_missing=False), database)

    @tvm.transform.module_pass(opt_level=0, name="KilnApplyTuningDatabase")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        with database:
            out = relax.transform.MetaScheduleApplyDatabase()(mod)
        for gv, func in out.functions_items():
            if isinstance(func, tvm.tirx.PrimFunc) and func.attrs.get("tirx.is_scheduled", False):
                applied.append(gv.name_hint)
                # a record of Kiln's own schedule replays its trace, which marks the register
                # tiles but cannot carry their overlapping last tile: repeat that rewrite
                out[gv] = overlap_annotated_tiles(func)
        return out

    return _pass


# ---- candidates for the whole-model check (kiln.compiler_tuning) ------------------------

def candidates(spec: TargetSpec, report: TuneReport, per_kernel: int) -> dict[str, list]:
    """Per hot kernel of ``report``, up to ``per_kernel - 1`` records of the target's database
    other than Kiln's default schedule, fastest first (as measured alone), after ``None`` (the
    default): candidate ``j`` of every kernel goes into the model built for :func:`candidate
    _database` ``j``."""
    workdir = database_dir(spec)
    if workdir is None:
        return {}
    database = ms.database.JSONDatabase(work_dir=str(workdir), allow_missing=False)
    out = {}
    for task in report.hot:
        default = report.default_traces.get(task.task_name)
        seen = {str(default)} if default is not None else set()
        picks: list = [None]
        workload = database.commit_workload(task.dispatched[0])
        for rec in database.get_top_k(workload, 64):
            key = str(rec.trace)
            if key not in seen and len(picks) < per_kernel:
                seen.add(key)
                picks.append(rec)
        out[task.task_name] = picks
    return out


def candidate_database(root: Path, spec: TargetSpec, cands: dict[str, list], j: int) -> bool:
    """Write under ``root`` a database of ``spec`` holding candidate ``j`` of each kernel
    that has one; False when none has."""
    records = [picks[j] for picks in cands.values() if j < len(picks) and picks[j] is not None]
    if not records:
        return False
    from kiln.optimize.tune_db import tune_root_at

    with tune_root_at(root):
        workdir = database_dir(spec, create=True)
    write_info(workdir, spec)
    replace_records(workdir, records)
    return True


def write_selection(spec: TargetSpec, report: TuneReport, cands: dict[str, list],
                    chosen: dict[str, tuple[int, float]]) -> None:
    """Record the candidate chosen for each kernel (``chosen``: name -> (index, seconds per
    run in the model)) as the kernel's selected schedule in the target's database: a later
    compile applies it before any record measured alone."""
    workdir = database_dir(spec, create=True)
    database = ms.database.JSONDatabase(work_dir=str(workdir))
    target = tuning_target(spec)
    records = []
    for task in report.hot:
        name = task.task_name
        if name not in chosen or name not in cands:
            continue
        j, secs = chosen[name]
        rec = cands[name][j]
        trace = rec.trace if rec is not None else report.default_traces.get(name)
        if trace is None:
            continue
        workload = database.commit_workload(task.dispatched[0])
        args = ms.arg_info.ArgInfo.from_prim_func(task.dispatched[0]["main"])
        records.append(ms.database.TuningRecord(trace, workload, [secs], target, args))
    if records:
        replace_records(workdir / SELECTED, records)
