"""Kiln on an NVIDIA GPU, in one go: find the GPU, compile ResNet-50 and the BERT-style encoder
for it (float32 and float16), run them on the GPU, compare them with ONNX Runtime on the CPU,
and time Kiln against PyTorch eager (CUDA) and ONNX Runtime's CUDA provider when installed.

    python bench/gpu_check.py                       # on a machine with a GPU: everything
    python bench/gpu_check.py --build-only --arch sm_90 --out gpu-artifacts
                                                    # on the build host (no GPU needed)
    python bench/gpu_check.py --artifacts gpu-artifacts   # on an offline GPU machine: run only

With a GPU and the compiler here (not with --artifacts), it also tunes ResNet-50 float16 on the
GPU for --tune-seconds (KILN_GPU_TUNE_SECONDS, default 300; 0 skips it) into a database of its
own (<out>/tune-db), compiles it again with that database and records untuned vs tuned latency
under "tuning" in the JSON. Without the compiler (apache-tvm), tuning is skipped with a note.

Every stage reports its own error and the check goes on; the JSON (bench/results/
<date>-gpu-<arch>.json, or --results) holds every figure and every error. Exit status 0 when
every model that ran matched ONNX Runtime, 1 otherwise, 2 when no GPU was found.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))
MODELS = ("resnet50", "bert_encoder")
DTYPES = ("float32", "float16")
#: fp32 must match ONNX Runtime CPU within 1e-3; fp16 within the accuracy gate's fp16 defaults
FP32_TOL = (1e-3, 1e-3)


def stage(report: dict, name: str, fn, *args, **kwargs):
    """Run one stage; record its result or its error under ``report["stages"][name]``."""
    start = time.perf_counter()
    try:
        out = fn(*args, **kwargs)
        report["stages"][name] = {"ok": True, "s": round(time.perf_counter() - start, 2)}
        return out
    except Exception as exc:  # noqa: BLE001 - every stage reports and the check goes on
        code = getattr(exc, "code", type(exc).__name__)
        report["stages"][name] = {"ok": False, "error": f"{code}: {exc}"[:2000],
                                  "details": str(getattr(exc, "details", ""))[-3000:],
                                  "trace": traceback.format_exc()[-3000:]}
        print(f"[{name}] FAILED: {code}: {str(exc)[:300]}", file=sys.stderr, flush=True)
        return None


def find_gpu(arch: str | None) -> dict:
    from kiln.artifact.gpu import driver_loadable, host_gpus

    gpus = host_gpus()
    if not gpus and arch and driver_loadable():  # Jetson: a driver, no nvidia-smi
        return {"name": "unknown (no nvidia-smi)", "arch": arch, "driver": "unknown"}
    if not gpus or not driver_loadable():
        raise RuntimeError("no NVIDIA GPU / driver found (nvidia-smi lists none or libcuda.so.1 "
                           "does not load)")
    return gpus[0]


def save_models(out: Path) -> dict[str, Path]:
    import onnx

    from kiln.examples.zoo import ZOO

    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in MODELS:
        path = out / f"{name}.onnx"
        if not path.exists():
            onnx.save(ZOO[name](1), path)
        paths[name] = path
    return paths


def compile_one(path: Path, arch: str, dtype: str, out: Path) -> dict:
    import kiln

    plat = "LINUX/ARM64/NVIDIA" if platform.machine() in ("aarch64", "arm64") else \
        "LINUX/X86_64/NVIDIA"
    opts = {"gpu-code": arch, **({"dtype": dtype} if dtype != "float32" else {})}
    start = time.perf_counter()
    res = kiln.compile(path, platform=plat, compiler_options=opts,
                       output=out / f"{path.stem}-{arch}-{dtype}.tar.gz")
    return {"artifact": str(res.artifact), "compile_s": round(time.perf_counter() - start, 1),
            "verification": res.manifest.verification,
            "device_code": res.manifest.runtime.get("device", {}).get("device_code")}


def feed_for(path: Path) -> dict:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    return {model.graph.input[0].name:
            np.random.default_rng(0).standard_normal(dims).astype(np.float32)}


def ort_session(path: Path, provider: str):
    import onnxruntime as ort

    if provider not in ort.get_available_providers():
        raise RuntimeError(f"{provider} is not available in this onnxruntime "
                           "(pip install onnxruntime-gpu for the CUDA provider)")
    sess = ort.InferenceSession(str(path), providers=[provider])
    if sess.get_providers()[0] != provider:
        raise RuntimeError(f"onnxruntime fell back to {sess.get_providers()}")
    return lambda feed: sess.run(None, feed)


def torch_cuda_session(path: Path):
    import onnx
    import torch
    from torch_eager import torch_session

    if not torch.cuda.is_available():
        raise RuntimeError("torch has no CUDA here")
    run = torch_session(onnx.load(str(path)), threads=1, device="cuda")
    if run is None:
        raise RuntimeError("torch is not installed")
    return run


def accuracy(got: list, ref: list, dtype: str) -> dict:
    from kiln.options import Tolerance
    from kiln.verify.compare import compare

    tol = Tolerance(*FP32_TOL) if dtype == "float32" else Tolerance().filled_from("float16")
    rows = [compare(f"out{i}", g, r, tol) for i, (g, r) in enumerate(zip(got, ref))]
    return {"passed": all(r["passed"] for r in rows), "outputs": rows}


def median_ms(fn, feed: dict, seconds: float = 3.0) -> float:
    for _ in range(5):
        fn(feed)
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 10:
        t = time.perf_counter()
        fn(feed)
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def check_model(report: dict, name: str, path: Path, artifacts: dict[str, str]) -> dict:
    import kiln

    row: dict = {"model": name, "median_ms": {}, "accuracy": {}}
    feed = feed_for(path)
    ref = stage(report, f"{name}/onnxruntime_cpu", lambda: ort_session(path,
                "CPUExecutionProvider")(feed))
    runners = {}
    for dtype, artifact in artifacts.items():
        model = stage(report, f"{name}/kiln_{dtype}/load",
                      lambda a=artifact: kiln.load(a, device="gpu"))
        if model is None:
            continue
        runners[f"kiln_{dtype}"] = model.run
        got = stage(report, f"{name}/kiln_{dtype}/run", model.run, feed)
        if got is not None and ref is not None:
            row["accuracy"][f"kiln_{dtype}"] = accuracy(got, ref, dtype)
    for key, make in (("pytorch_eager_cuda_fp32", lambda: torch_cuda_session(path)),
                      ("onnxruntime_cuda_fp32", lambda: ort_session(path,
                                                                    "CUDAExecutionProvider"))):
        fn = stage(report, f"{name}/{key}", make)
        if fn is not None:
            runners[key] = fn
            if ref is not None:
                out = stage(report, f"{name}/{key}/run", fn, feed)
                if out is not None:
                    row["accuracy"][key] = accuracy(out, ref, "float32")
    for key, fn in runners.items():
        ms = stage(report, f"{name}/{key}/time", median_ms, fn, feed)
        if ms is not None:
            row["median_ms"][key] = round(ms, 3)
    med = row["median_ms"]
    if "kiln_float16" in med:
        if "pytorch_eager_cuda_fp32" in med:
            row["speedup_kiln_fp16_vs_torch_fp32"] = med["pytorch_eager_cuda_fp32"] / med["kiln_float16"]
        if "onnxruntime_cuda_fp32" in med:
            row["kiln_fp16_over_ort_cuda"] = med["kiln_float16"] / med["onnxruntime_cuda_fp32"]
    return row


TUNE_MODEL, TUNE_DTYPE = "resnet50", "float16"


def tuning_unavailable() -> str | None:
    """Why this host cannot tune (the offline GPU host has only the artifacts' runtime)."""
    import importlib.util

    missing = [m for m in ("tvm", "cuda.bindings", "xgboost", "psutil", "cloudpickle", "tornado")
               if importlib.util.find_spec(m.split(".")[0]) is None]
    if missing:
        return (f"tuning needs the compiler and the tune extra here (missing: "
                f"{', '.join(missing)}): pip install -e '.[cuda,tune]'")
    return None


def tune_and_time(report: dict, arch: str, out: Path, seconds: float,
                  untuned: str | None) -> dict:
    """Tune TUNE_MODEL on this GPU into <out>/tune-db, compile it with the database and time
    the untuned and the tuned artifact."""
    import kiln
    from kiln.compiler import tune_model
    from kiln.options import TuneOptions

    path = out / f"{TUNE_MODEL}.onnx"
    plat = "LINUX/ARM64/NVIDIA" if platform.machine() in ("aarch64", "arm64") else \
        "LINUX/X86_64/NVIDIA"
    opts = {"gpu-code": arch, "dtype": TUNE_DTYPE}
    saved = os.environ.get("KILN_TUNE_DIR")
    os.environ["KILN_TUNE_DIR"] = str(out / "tune-db")
    try:
        tuned_report = tune_model(path, TuneOptions(time_budget_s=seconds), platform=plat,
                                  compiler_options=opts,
                                  progress=lambda msg: print(f"[tune] {msg}", file=sys.stderr))
        res = kiln.compile(path, platform=plat, compiler_options=opts,
                           output=out / f"{TUNE_MODEL}-{arch}-{TUNE_DTYPE}-tuned.tar.gz")
    finally:
        os.environ.pop("KILN_TUNE_DIR") if saved is None else \
            os.environ.update(KILN_TUNE_DIR=saved)
    row = {"model": TUNE_MODEL, "dtype": TUNE_DTYPE, "budget_s": seconds,
           "report": tuned_report.to_dict(), "pipeline": res.manifest.compile_options["pipeline"],
           "verification": res.manifest.verification, "median_ms": {}}
    feed = feed_for(path)
    for key, artifact in (("untuned", untuned), ("tuned", str(res.artifact))):
        if artifact is not None:
            model = kiln.load(artifact, device="gpu")
            row["median_ms"][key] = round(median_ms(model.run, feed), 3)
    if len(row["median_ms"]) == 2:
        row["speedup_tuned_vs_untuned"] = row["median_ms"]["untuned"] / row["median_ms"]["tuned"]
    return row


def tuning_step(report: dict, args, arch: str, folder: Path, built: dict) -> None:
    """The optional tuning step: skipped (with the reason in the JSON) rather than failed."""
    why = ("--tune-seconds is 0" if not args.tune_seconds else
           "offline run (--artifacts): the compiler is on the build host" if args.artifacts
           else tuning_unavailable())
    if why:
        print(f"[tune] skipped: {why}", file=sys.stderr)
        report["tuning"] = {"skipped": why}
        return
    untuned = built.get(TUNE_MODEL, {}).get(TUNE_DTYPE)
    report["tuning"] = stage(report, f"{TUNE_MODEL}/kiln_tune", tune_and_time, report, arch,
                             folder, args.tune_seconds,
                             None if untuned is None else str(folder / Path(untuned).name))
    if report["tuning"] is not None:
        print(json.dumps({k: v for k, v in report["tuning"].items() if k != "report"}),
              file=sys.stderr, flush=True)


def build(report: dict, arch: str, out: Path) -> dict[str, dict[str, str]]:
    """Models and artifacts in ``out`` (the compile runs the accuracy gate on the GPU if any)."""
    paths = stage(report, "save_models", save_models, out) or {}
    built: dict[str, dict[str, str]] = {}
    for name, path in paths.items():
        for dtype in DTYPES:
            res = stage(report, f"{name}/compile_{dtype}", compile_one, path, arch, dtype, out)
            if res is not None:
                report.setdefault("compiles", {})[f"{name}/{dtype}"] = res
                built.setdefault(name, {})[dtype] = Path(res["artifact"]).name  # relative: the
                # folder may be copied to an offline GPU machine
    (out / "built.json").write_text(json.dumps({"arch": arch, "artifacts": built}, indent=1))
    return built


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", help="GPU arch to build for (default: the GPU found; needed on "
                    "Jetson boards, which have no nvidia-smi)")
    ap.add_argument("--out", type=Path, default=Path("gpu-artifacts"))
    ap.add_argument("--build-only", action="store_true", help="compile, do not run (no GPU)")
    ap.add_argument("--artifacts", type=Path, help="run the artifacts --build-only made")
    ap.add_argument("--results", type=Path, help="the JSON to write")
    ap.add_argument("--tune-seconds", type=float, default=float(
        os.environ.get("KILN_GPU_TUNE_SECONDS", "300")), help="seconds of GPU tuning of "
        f"{TUNE_MODEL} {TUNE_DTYPE} (default $KILN_GPU_TUNE_SECONDS or 300; 0: no tuning)")
    args = ap.parse_args()
    report: dict = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "host": platform.machine(), "stages": {}, "models": []}
    gpu = None if args.build_only else stage(report, "find_gpu", find_gpu, args.arch)
    report["gpu"] = gpu
    arch = args.arch or (gpu or {}).get("arch")
    if arch is None:
        print("no GPU found and no --arch given", file=sys.stderr)
        return _finish(report, args, "none", 2)
    if args.artifacts:
        meta = json.loads((args.artifacts / "built.json").read_text())
        built, arch, folder = meta["artifacts"], meta["arch"], args.artifacts
    else:
        built, folder = build(report, arch, args.out), args.out
    if not args.build_only and gpu is not None:
        for name in MODELS:
            paths = {dtype: str(folder / Path(file).name)
                     for dtype, file in built.get(name, {}).items()}
            row = stage(report, f"{name}/check", check_model, report, name,
                        folder / f"{name}.onnx", paths)
            if row is not None:
                report["models"].append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
        tuning_step(report, args, arch, folder, built)
    failed = [k for k, v in report["stages"].items() if not v["ok"] and "kiln" in k] or \
        [f"{r['model']}/{k}" for r in report["models"] for k, a in r["accuracy"].items()
         if k.startswith("kiln") and not a["passed"]]
    report["kiln_failures"] = failed
    return _finish(report, args, arch, 1 if failed else 0)


def _finish(report: dict, args, arch: str, status: int) -> int:
    out = args.results or HERE / "results" / f"{dt.date.today()}-gpu-{arch}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str))
    print(f"wrote {out}; exit status {status}", file=sys.stderr)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
