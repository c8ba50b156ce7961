"""Each kernel's time in several builds of one model, round by round.

    python -m kiln.bench.kernels [--rounds R] [--runs N] FOLDER_OR_ARTIFACT ...

prints a JSON list with, per build, one ``{kernel: microseconds per run}`` per round (kernel
names without the ``_prepacked`` suffix). Each round runs every build ``N`` times, in
alternating order, so that a kernel's times in two builds can be compared round by round: the
machine's speed drifts over seconds (by up to 20% on a shared 2-core VM), which a comparison
of each build's fastest round does not cancel. Tuning runs it in a fresh process
(:mod:`kiln.compiler_tuning`), so that nothing the tuning process left running shares the
cores with the timed kernels.
"""

from __future__ import annotations

import argparse
import json
import sys


def kernel_times(paths: list[str], rounds: int = 16,
                 runs: int = 2) -> list[list[dict[str, float]]]:
    """Per build, per round, each kernel's time (us per run, all its calls); the rounds visit
    the builds in alternating order."""
    from kiln.bench.harness import seeded_inputs
    from kiln.runtime import Model

    models = [Model(p) for p in paths]
    try:
        feed = seeded_inputs(models[0])
        for m in models:
            m.run(feed)
        out: list[list[dict[str, float]]] = [[] for _ in models]
        for rnd in range(rounds):
            order = range(len(models)) if rnd % 2 == 0 else reversed(range(len(models)))
            for i in order:
                out[i].append({k["kernel"].removesuffix("_prepacked"): k["mean_us"]
                               for k in models[i].profile(feed, runs=runs, warmup=1)})
        return out
    finally:
        for m in models:
            m.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=16)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("paths", nargs="+")
    args = ap.parse_args(argv)
    print(json.dumps(kernel_times(args.paths, args.rounds, args.runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
