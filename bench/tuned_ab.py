"""Whole-model latency of one model compiled with several tuning databases (and without),
against ONNX Runtime (2 threads, no spinning), in one process, interleaved round by round.

    .venv/bin/python bench/tuned_ab.py MODEL.onnx default warm=/work/tunedb3 cold=/work/tunedb5

Each argument after the model is ``default`` (no database), ``TAG=DIR`` (a ``KILN_TUNE_DIR``
that `kiln tune` filled) or ``TAG=ARTIFACT.tar.gz`` (an artifact compiled beforehand from the same
model, e.g. by an older commit: an A/B of two versions of the default schedules). Prints and
writes ``bench/results/<date>-<arch>-tuned-ab.json`` (``--tag NAME``: ``...-NAME.json``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np


def main(argv: list[str]) -> int:
    import onnx
    import onnxruntime as ort

    import kiln
    from kiln.options import CompileOptions

    tag_name = ""
    if "--tag" in argv:
        i = argv.index("--tag")
        tag_name, argv = "-" + argv[i + 1], argv[:i] + argv[i + 2:]
    path, variants = Path(argv[0]), argv[1:]
    model = onnx.load(path)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    name = model.graph.input[0].name
    x = np.random.default_rng(0).standard_normal(dims).astype(np.float32)
    out = Path(os.environ.get("TMPDIR", "/tmp"))
    fns, pipelines = {}, {}
    for v in variants:
        tag, _, db = v.partition("=")
        if db.endswith(".tar.gz"):
            m = kiln.load(db)
            pipelines[tag] = f"prebuilt {Path(db).name}"
            fns[tag] = (lambda mm=m: mm.run({name: x}))
            continue
        if db:
            os.environ["KILN_TUNE_DIR"] = db
        opts = CompileOptions() if db else CompileOptions(use_tuning_db=False)
        res = kiln.compile(path, platform="LINUX/X86_64", output=out / f"ab-{tag}.tar.gz",
                           options=opts)
        m = kiln.load(res.artifact)
        pipelines[tag] = res.manifest.compile_options["pipeline"]
        fns[tag] = (lambda mm=m: mm.run({name: x}))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    fns["onnxruntime"] = lambda: sess.run(None, {name: x})
    times = {k: [] for k in fns}
    order = list(fns)
    for rnd in range(8):
        for k in order if rnd % 2 == 0 else order[::-1]:
            fns[k]()
            for _ in range(6):
                t = time.perf_counter()
                fns[k]()
                times[k].append((time.perf_counter() - t) * 1e3)
    med = {k: float(np.median(v)) for k, v in times.items()}
    result = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "model": path.name, "median_ms": med,
              "ratio_to_ort": {k: v / med["onnxruntime"] for k, v in med.items()},
              "databases": variants, "pipelines": pipelines}
    print(json.dumps(result, indent=2))
    dest = Path(__file__).parent / "results" / \
        f"{dt.date.today().isoformat()}-{platform.machine()}-tuned-ab{tag_name}.json"
    dest.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
