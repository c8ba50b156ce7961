"""``kiln compile | run | inspect | bench | targets | tune | tune-db``. Every KilnError becomes one line and its exit status."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from kiln.cli.tune import register as register_tune
from kiln.errors import ERROR_CODES, KilnError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Compile a model for a named device, prove it runs there, run it.")
out = Console()
err = Console(stderr=True)


@app.command("compile")
def compile_cmd(
    model: Annotated[Path, typer.Argument(help="the model: .onnx, .pt2, TorchScript .pt, .tflite, "
                                          ".keras/.h5, SavedModel folder, XGBoost .json/.ubj, "
                                          "LightGBM .txt, skops, or Neo model.tar.gz")],
    target: Annotated[Optional[str], typer.Option("--target", "-t", help="a device name from "
                                                  "`kiln targets`, e.g. rasp4b")] = None,
    platform: Annotated[Optional[str], typer.Option(help="Neo TargetPlatform OS/ARCH\\[/ACCEL], "
                                                    "e.g. LINUX/ARM64")] = None,
    input_shape: Annotated[Optional[str], typer.Option(help="Neo DataInputConfig JSON, "
                                                       'e.g. \'{"x": [1,3,224,224]}\'')] = None,
    compiler_options: Annotated[Optional[str], typer.Option(help="Neo CompilerOptions JSON, "
                                                            'e.g. \'{"mcpu": "cortex-a72"}\'')] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="artifact path "
                                                   "(.tar.gz)")] = None,
    sample_inputs: Annotated[Optional[Path], typer.Option(help=".npz of inputs for the "
                                                          "accuracy gate")] = None,
    atol: Annotated[Optional[float], typer.Option(help="accuracy gate: max abs error")] = None,
    rtol: Annotated[Optional[float], typer.Option(help="accuracy gate: max rel error")] = None,
    opt_level: Annotated[int, typer.Option(help="0: TVM's plain pipeline, 1: fusion, "
                                           "2: fusion + default CPU schedules")] = 2,
    verify: Annotated[bool, typer.Option(help="run the accuracy gate")] = True,
    winograd: Annotated[bool, typer.Option(help="stride-1 3x3 float32 convs as Winograd "
                                           "transforms around a matmul (opt level 2)")] = True,
    tune_trials: Annotated[Optional[int], typer.Option(help="tune first: measured candidates "
                                                       "(see `kiln tune`)")] = None,
    tune_time_budget: Annotated[Optional[float], typer.Option(help="tune first: seconds")] = None,
    tuning_db: Annotated[bool, typer.Option(help="apply the target's tuning database")] = True,
    framework: Annotated[Optional[str], typer.Option(help="Neo Framework (PYTORCH, TFLITE, "
                                                     "XGBOOST, SKLEARN, ...; any case); detected "
                                                     "when omitted")] = None,
    framework_version: Annotated[Optional[str], typer.Option(help="Neo FrameworkVersion, "
                                                             "recorded in the manifest")] = None,
    trust_pickle: Annotated[bool, typer.Option("--trust-pickle", help="allow a pickle/joblib "
                                               "model file (loading it runs its code)")] = False,
    quantize: Annotated[Optional[str], typer.Option(help="post-training quantization: int8 "
                                                    "(needs --calibration)")] = None,
    calibration: Annotated[Optional[Path], typer.Option(help=".npz of representative inputs, "
                                                        "[samples, *shape] per input")] = None,
    calibration_method: Annotated[str, typer.Option(help="minmax, entropy or percentile")] = "minmax",
    per_channel: Annotated[bool, typer.Option(help="int8 weights per output channel")] = True,
    symmetric: Annotated[bool, typer.Option(help="int8 activations symmetric (int8, zero point "
                                            "0) instead of asymmetric uint8")] = False,
) -> None:
    """Compile MODEL into a self-describing artifact for one target, and verify it."""
    from kiln.cli.progress import steps
    from kiln.compiler import compile_model
    from kiln.options import CompileOptions, Tolerance, parse_input_shapes

    options = CompileOptions(input_shapes=parse_input_shapes(input_shape), opt_level=opt_level,
                             verify=verify, tolerance=Tolerance(atol=atol, rtol=rtol),
                             tune_trials=tune_trials, tune_time_budget=tune_time_budget,
                             use_tuning_db=tuning_db, winograd=winograd,
                             quantize=_quantize_options(quantize, calibration, calibration_method,
                                                        per_channel, symmetric))
    with steps(err) as progress:
        result = compile_model(model, target=target, platform=platform,
                               compiler_options=compiler_options, output=output,
                               options=options, sample_inputs=sample_inputs, progress=progress,
                               framework=framework, framework_version=framework_version,
                               trust_pickle=trust_pickle)
    src = result.manifest.source
    err.print(f"framework: {result.manifest.framework}"
              f"{'' if framework else ' (detected)'}"
              + (f", {src['member']} from {src['package']}" if src.get("package") else ""),
              highlight=False)
    report = result.manifest.verification
    if report.get("verified"):
        worst = max((r["max_abs_error"] for r in report["outputs"]), default=0.0)
        err.print(f"verified ({report['mode']}) against {report['reference']}: "
                  f"max abs error {worst:.3g}")
    else:
        err.print(f"[bold yellow]NOT VERIFIED[/]: {report.get('reason')}")
    why = result.manifest.runtime.get("chosen_because", "")
    if why.startswith("standalone_unsupported"):
        err.print(f"runtime: {result.manifest.runtime['kind']} ({why})", highlight=False)
    _print_int8(result.manifest)
    out.print(str(result.artifact), highlight=False)


def _quantize_options(mode, calibration, method, per_channel, symmetric):
    from kiln.options import QuantizeOptions

    if mode is None and calibration is None:
        return None
    if mode is None:
        raise KilnError("invalid_quantize_options", "--calibration needs --quantize int8",
                        hint="add --quantize int8, or drop --calibration")
    return QuantizeOptions(mode=mode, calibration=str(calibration or ""), method=method,
                           per_channel=per_channel, symmetric=symmetric)


def _print_int8(manifest) -> None:
    q = manifest.quantization
    sim = q.get("onnxruntime_int8_vs_fp32") if q else None
    for row in (sim or {}).get("outputs", []):
        top1 = f", top-1 agreement {row['top1_agreement']:.3f}" if "top1_agreement" in row else ""
        err.print(f"int8 {row['name']} vs float32 (ONNX Runtime, {sim['samples']} calibration "
                  f"samples): cosine {row['cosine']:.5f}, max abs error "
                  f"{row['max_abs_error']:.3g}{top1}", highlight=False)
    from kiln.cli.inspect import partition_line

    p = manifest.partition
    if p:
        err.print(partition_line(p), highlight=False)
    for row in (p or {}).get("simulated_accuracy", {}).get("outputs", []):
        err.print(f"simulated {p['accelerator']} int8 {row['name']} vs float32: cosine "
                  f"{row['cosine']:.5f}, max abs error {row['max_abs_error']:.3g}",
                  highlight=False)


@app.command("run")
def run_cmd(
    artifact: Annotated[Path, typer.Argument(help="artifact .tar.gz or folder")],
    input: Annotated[list[str], typer.Option("--input", "-i", help="NAME=FILE.npy, repeatable")],
    output: Annotated[Path, typer.Option("--output", "-o", help="where to write OUT.npz")],
    repeat: Annotated[int, typer.Option(help="run this many times, print the median")] = 1,
) -> None:
    """Run ARTIFACT natively, or under qemu-user when it was built for another arch."""
    from kiln.cli.run import run_artifact

    mode, run_ms, names = run_artifact(artifact, input, output, repeat=repeat)
    timing = f", median {run_ms:.3f} ms" if run_ms is not None else ""
    err.print(f"ran {mode}{timing}; wrote {', '.join(names)} to {output}", highlight=False)


@app.command("inspect")
def inspect_cmd(
    artifact: Annotated[Path, typer.Argument(help="artifact .tar.gz or folder")],
    as_json: Annotated[bool, typer.Option("--json", help="print the manifest as JSON")] = False,
) -> None:
    """Show an artifact's manifest, file sizes and runtime footprint."""
    from kiln.cli.inspect import inspect_artifact

    inspect_artifact(artifact, as_json=as_json, console=out)


@app.command("bench")
def bench_cmd(
    artifact: Annotated[Path, typer.Argument(help="artifact .tar.gz or folder (for this host)")],
    repeat: Annotated[int, typer.Option(help="timed runs")] = 50,
    warmup: Annotated[int, typer.Option(help="untimed runs first")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    profile: Annotated[bool, typer.Option("--profile", help="then time every kernel (standalone "
                                          "artifacts): the slowest first")] = False,
    top: Annotated[int, typer.Option(help="kernels to list with --profile")] = 15,
) -> None:
    """Latency p50/p90/p99, throughput, load time and peak memory of ARTIFACT on this host."""
    from kiln.bench import bench_artifact

    r = bench_artifact(artifact, warmup=warmup, repeat=repeat, profile=profile)
    if as_json:
        print(json.dumps(r.to_dict(), indent=2))
        return
    lat = r.latency
    spin = f", idle workers spin {r.spin_ms:g} ms (KILN_SPIN_MS)" if r.spin_ms is not None else ""
    out.print(f"{r.artifact} ({r.target}), batch {r.batch}, threads: {r.threads}{spin}",
              highlight=False)
    out.print(f"latency p50 {lat['p50_ms']:.3f} ms  p90 {lat['p90_ms']:.3f} ms  p99 "
              f"{lat['p99_ms']:.3f} ms  ({lat['runs']} runs after {warmup} warm-up)", highlight=False)
    out.print(f"throughput {lat['throughput_per_s']:.1f}/s  load {r.load_ms:.1f} ms  peak RSS "
              f"{r.peak_rss_mb:.1f} MB", highlight=False)
    if r.kernels is not None:
        from rich.table import Table

        total = sum(k["mean_us"] for k in r.kernels)
        table = Table("kernel", "calls", "us per run", "share",
                      title=f"{len(r.kernels)} kernels, {total / 1e3:.3f} ms per run in all")
        for k in r.kernels[:top]:
            table.add_row(k["kernel"], str(k["calls"]), f"{k['mean_us']:.1f}",
                          f"{100 * k['share']:.1f}%")
        out.print(table)


@app.command("targets")
def targets_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List every target device with its status (verified / codegen / unsupported) and why."""
    from kiln.targets import list_targets

    rows = list_targets()
    if as_json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    from rich.table import Table

    table = Table("name", "arch", "cpu", "accelerator", "status", "reason", show_lines=False)
    colour = {"verified": "green", "codegen": "yellow", "unsupported": "red"}
    for r in rows:
        accel = f"{r.accelerator} ({r.accelerator_status})" if r.accelerator_status else \
            r.accelerator or ""
        table.add_row(r.name, r.arch, r.mcpu or "", accel,
                      f"[{colour.get(r.status, 'white')}]{r.status}[/]", r.reason)
    out.print(table)


register_tune(app)

from kiln.cli.serve import jobs_app, keys_app, serve_cmd, worker_cmd  # noqa: E402  (service)

app.command("serve")(serve_cmd)
app.command("worker")(worker_cmd)
app.add_typer(keys_app, name="keys")
app.add_typer(jobs_app, name="jobs")


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning errors into one line and an exit status."""
    debug = bool(os.environ.get("KILN_DEBUG"))
    try:
        app(args=argv, standalone_mode=False)
    except KilnError as exc:
        err.print(exc.one_line(), highlight=False, markup=False, soft_wrap=True)
        if debug and exc.details:
            err.print(exc.details, highlight=False, markup=False)
        return exc.exit_status
    except Exception as exc:  # click usage errors and anything unexpected
        return _other_error(exc, debug)
    return 0


def _click_exceptions():
    """click's exception modules: typer >= 0.20 raises those of the click copy it vendors
    (``typer._click``), which are not subclasses of the installed click's."""
    import click.exceptions

    import typer

    modules = [click.exceptions, typer]  # typer.Exit / typer.Abort
    try:
        from typer._click import exceptions as vendored
    except ImportError:
        return modules
    return modules + [vendored]


def _other_error(exc: BaseException, debug: bool) -> int:
    kinds = _click_exceptions()

    def kind(name: str) -> tuple:
        return tuple(getattr(m, name) for m in kinds if hasattr(m, name))

    if isinstance(exc, kind("Exit")):
        return exc.exit_code
    if isinstance(exc, kind("Abort")):
        err.print("aborted")
        return 130
    if isinstance(exc, kind("ClickException")):
        err.print(f"error[usage]: {exc.format_message()}", highlight=False, markup=False)
        return 2
    if debug:
        raise exc
    err.print(f"error[internal_error]: {type(exc).__name__}: {exc} (hint: rerun with KILN_DEBUG=1 "
              "and report it)", highlight=False, markup=False, soft_wrap=True)
    return ERROR_CODES["internal_error"].exit_status


if __name__ == "__main__":
    sys.exit(main())
