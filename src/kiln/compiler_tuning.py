"""Tuning checked in the whole model: each hot kernel keeps the candidate that ran fastest in
the compiled model, not the one that measured fastest alone.

MetaSchedule measures every candidate kernel on its own, a few runs each. On a shared 2-core
machine those times vary by up to 2x from one batch to the next (ResNet-50's 3x3 conv over 256
channels: Kiln's default schedule measured 1386, 1826 and 2728 us in three batches), so the
fastest record of a kernel is often a worse schedule measured at a quiet moment: ResNet-50
tuned for 900 s ran 1.21x ONNX Runtime's latency against 1.11x without tuning. So when the
target runs on this machine, tuning ends by building the model with Kiln's default schedules
and with the first (second, ...) other record of each hot kernel, timing every kernel inside
those models (the standalone runtime's per-kernel profile, in a fresh process, in rounds that
visit every build), and recording the winner of each kernel in the database's selection, which
a later compile applies first. A candidate replaces the default only when the median over the
rounds of its time divided by the default's in the same round is at most ``1 - MIN_GAIN``:
the machine's speed drifts by up to 20% over seconds, which comparing each build's fastest
round does not cancel (two builds of the same schedules then differed by up to 15%).
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from kiln.errors import KilnError
from kiln.options import CompileOptions, TuneOptions
from kiln.targets import TargetSpec

Progress = Callable[[str], None]
#: Models built per hot kernel's candidates: Kiln's default and the two best other records.
CANDIDATES = 3
#: A candidate must beat Kiln's default schedule in the model by this share (the median of
#: its round-by-round ratios to the default) to replace it.
MIN_GAIN = 0.05
#: Interleaved profiling rounds, and model runs per build in each round.
ROUNDS, RUNS = 16, 2
#: Shortest search worth keeping once the candidate builds are set aside (seconds).
MIN_SEARCH_S = 60.0


def runs_here(spec: TargetSpec, tuning: TuneOptions) -> bool:
    """Whether the candidates can be timed in the model on this machine: measured locally
    (no ``--rpc``), a standalone CPU target this host can run."""
    from kiln.artifact.compat import native_problem
    from kiln.standalone.runtime import check_standalone_buildable

    if tuning.rpc is not None or spec.accelerator is not None:
        return False
    try:
        check_standalone_buildable(spec)
    except KilnError:
        return False
    return native_problem(spec.to_dict()) is None


def tune_in_model(imported, spec: TargetSpec, tuning: TuneOptions, dtype: str,
                  progress: Progress | None = None):
    """Tune ``imported``'s kernels for ``spec`` (:func:`kiln.optimize.tuning.tune_model`),
    then choose each hot kernel's schedule by timing the candidates in the whole model."""
    from kiln.optimize.tuning import candidate_database, candidates, tune_model, write_selection

    say = progress or (lambda _msg: None)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kiln-tune-model-") as tmp:
        root = Path(tmp)
        say("building the model with Kiln's default schedules")
        builds = [_build(imported, spec, dtype, root / "m0", database=None,
                         winograd=tuning.winograd)]
        build_s = time.perf_counter() - start
        count, search = _plan(tuning, build_s)
        report = tune_model(imported.mod, spec, search, dtype=dtype, progress=progress)
        cands = candidates(spec, report, count)
        for j in range(1, count):
            if not candidate_database(root / f"db{j}", spec, cands, j):
                break
            say(f"building the model with candidate {j} of each tuned kernel")
            try:
                builds.append(_build(imported, spec, dtype, root / f"m{j}",
                                     database=root / f"db{j}", winograd=tuning.winograd))
            except KilnError as exc:  # a record that does not build: the others still count
                say(f"candidate {j} did not build ({exc.message}); left out")
                break
        say(f"timing the kernels of {len(builds)} builds in the model")
        try:
            rounds = _profile(builds)
        except KilnError as exc:
            # the search's records stay; compiles apply the fastest measured alone
            say(f"{exc.message}; no kernel's choice was checked in the model")
            report.in_model = {"error": exc.message}
        else:
            chosen, report.in_model = _choose(cands, rounds)
            write_selection(spec, report, cands, chosen)
    report.seconds = time.perf_counter() - start
    return report


def _plan(tuning: TuneOptions, build_s: float) -> tuple[int, TuneOptions]:
    """How many candidate builds (default included) and the search's share of the budget:
    the builds after the first are set aside (at the first one's time); fewer (at least two)
    when that leaves the search under :data:`MIN_SEARCH_S`."""
    if tuning.time_budget_s is None:
        return CANDIDATES, tuning
    left = tuning.time_budget_s - build_s
    for count in range(CANDIDATES, 2, -1):
        search = left - (count - 1) * build_s * 1.2 - 10
        if search >= MIN_SEARCH_S:
            return count, dataclasses.replace(tuning, time_budget_s=search)
    return 2, dataclasses.replace(tuning, time_budget_s=max(1.0, left - build_s * 1.2 - 10))


def _build(imported, spec: TargetSpec, dtype: str, out: Path, database: Path | None,
           winograd: bool = True) -> Path:
    """The standalone model built into ``out`` with ``database`` (None: Kiln's default
    schedules), ready to load."""
    from kiln.compiler import _manifest
    from kiln.artifact import MANIFEST_NAME
    from kiln.optimize.tune_db import tune_root_at
    from kiln.standalone.lower import build_standalone
    from kiln.standalone.runtime import write_standalone_bundle

    out.mkdir(parents=True)
    options = CompileOptions(use_tuning_db=database is not None, verify=False,
                             winograd=winograd)
    with tune_root_at(database) if database is not None else contextlib.nullcontext():
        built = build_standalone(imported, spec, options, out, dtype=dtype)
    runtime = write_standalone_bundle(out, spec, imported.signature, built)
    manifest = _manifest(spec, {}, imported, options, runtime, {}, built.pipeline, out,
                         dtype=dtype)
    (out / MANIFEST_NAME).write_text(manifest.to_json())
    return out


def _profile(folders: list[Path]) -> list[list[dict[str, float]]]:
    """Per build, per round, each kernel's time (us per run) over :data:`ROUNDS` interleaved
    rounds, timed in a fresh process (:mod:`kiln.bench.kernels`): nothing the tuning left
    running shares the cores (timed inside the tuning process, ResNet-50's kernels ran up to
    1.5x slower than in a fresh one, unevenly, and a 33% slower candidate was chosen)."""
    import json
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "kiln.bench.kernels", "--rounds", str(ROUNDS),
                          "--runs", str(RUNS), *map(str, folders)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise KilnError("tuning_failed", "timing the candidates in the model failed: "
                        f"{(res.stderr.strip().splitlines() or ['no output'])[-1][:300]}",
                        hint="the search's records are kept; `kiln tune` again redoes the choice")
    return json.loads(res.stdout)


def _choose(cands: dict[str, list], rounds: list[list[dict[str, float]]]):
    """Per kernel: (candidate index, seconds per run) of the candidate whose time in the model,
    divided by the default's in the same round, has the lowest median over the rounds; the
    default unless that median is at most ``1 - MIN_GAIN``. And the report's summary (with
    ``best_ratio``, that lowest median, whether or not it was enough)."""
    import statistics

    chosen, summary = {}, {}
    for name, picks in cands.items():
        base = [r.get(name) for r in rounds[0]] if rounds else []
        if not base or None in base:
            continue
        default_us = statistics.median(base)
        best, tried = (0, float("inf"), default_us), 1
        for j in range(1, min(len(picks), len(rounds))):
            times = [r.get(name) for r in rounds[j]]
            if None in times:
                continue
            tried += 1
            ratio = statistics.median(t / b for t, b in zip(times, base))
            if ratio < best[1]:
                best = (j, ratio, statistics.median(times))
        j, _, us = best if best[1] <= 1 - MIN_GAIN else (0, 1.0, default_us)
        chosen[name] = (j, us * 1e-6)
        summary[name] = {"chosen": "default" if j == 0 else f"candidate {j}",
                         "us": round(us, 1), "default_us": round(default_us, 1),
                         "best_ratio": round(best[1], 3) if tried > 1 else None,
                         "candidates": tried}
    return chosen, summary
