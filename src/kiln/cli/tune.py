"""``kiln tune`` and ``kiln tune-db list|export|import``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

out = Console()
err = Console(stderr=True)
db_app = typer.Typer(no_args_is_help=True, help="Move tuning databases between machines.")


def tune_cmd(
    model: Annotated[Path, typer.Argument(help="the model file")],
    target: Annotated[Optional[str], typer.Option("--target", "-t", help="a device name")] = None,
    platform: Annotated[Optional[str], typer.Option(help="Neo TargetPlatform OS/ARCH")] = None,
    compiler_options: Annotated[Optional[str], typer.Option(help="Neo CompilerOptions JSON")] = None,
    input_shape: Annotated[Optional[str], typer.Option(help="Neo DataInputConfig JSON")] = None,
    trials: Annotated[Optional[int], typer.Option(help="measured candidates in all")] = None,
    time_budget: Annotated[Optional[float], typer.Option(help="seconds of tuning")] = None,
    rpc: Annotated[Optional[str], typer.Option(help="HOST:PORT of a TVM RPC tracker that "
                                               "has the device")] = None,
    rpc_key: Annotated[Optional[str], typer.Option(help="the device's key on the tracker")] = None,
    winograd: Annotated[bool, typer.Option(help="tune the build with Winograd 3x3 convs (as "
                                           "`kiln compile` makes by default)")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Tune MODEL's kernels on the device once; every later compile for the target uses them."""
    from kiln.compiler import tune_model
    from kiln.options import TuneOptions, parse_input_shapes

    tuning = TuneOptions(trials=trials, time_budget_s=time_budget, rpc=rpc, rpc_key=rpc_key,
                         winograd=winograd)
    shapes = parse_input_shapes(input_shape)
    report = tune_model(model, tuning, target=target, platform=platform,
                        compiler_options=compiler_options,
                        input_shapes=None if shapes is None else {k: list(v) for k, v in shapes},
                        progress=lambda msg: err.print(msg, highlight=False))
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
        return
    table = Table("kernel", "weight", "default (us)", "tuned (us)", "speed-up",
                  "chosen in the model")
    for t in report.tasks:
        table.add_row(t.name, str(t.weight), _us(t.default_us), _us(t.best_us),
                      f"{t.speedup:.2f}x" if t.speedup else "", _in_model(report, t.name))
    out.print(table)
    if "error" in report.in_model:
        err.print(f"warning: {report.in_model['error']}", highlight=False)
    out.print(f"{report.trials} trials on {len(report.tuned)} of {len(report.tasks)} kernels in "
              f"{report.seconds:.0f} s; database {report.database}", highlight=False)


def _in_model(report, name: str) -> str:
    """The whole-model choice of a kernel: the candidate and the median of its round-by-round
    ratios to the default, the figure it was chosen by (the ratio of the two medians can
    disagree with it by a round's drift)."""
    entry = report.in_model.get(name)
    if not isinstance(entry, dict):
        return ""
    if entry["chosen"] == "default":
        return "default"
    return f"{entry['chosen']} ({entry['best_ratio']:.2f}x)"


def _us(value: float | None) -> str:
    return "failed" if value is None else f"{value:.1f}"


@db_app.command("list")
def db_list(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """List the tuning databases on this machine."""
    from kiln.optimize.tune_db import list_databases, tune_root

    dbs = list_databases()
    if as_json:
        print(json.dumps([d.to_dict() for d in dbs], indent=2))
        return
    table = Table("name", "target", "workloads", "records")
    for d in dbs:
        table.add_row(d.name, d.target, str(d.workloads), str(d.records))
    out.print(table)
    out.print(f"{len(dbs)} database(s) in {tune_root()}", highlight=False)


@db_app.command("export")
def db_export(
    name: Annotated[str, typer.Argument(help="database name or target name")],
    output: Annotated[Path, typer.Option("--output", "-o", help="where to write the .tar.gz")],
) -> None:
    """Write one database as a .tar.gz to import on another machine."""
    from kiln.optimize.tune_db import export_database

    info = export_database(name, output)
    err.print(f"exported {info.name} ({info.records} records)", highlight=False)
    out.print(str(output), highlight=False)


@db_app.command("import")
def db_import(archive: Annotated[Path, typer.Argument(help="a file from `kiln tune-db export`")]) -> None:
    """Merge an exported database into this machine's databases."""
    from kiln.errors import KilnError
    from kiln.optimize.tune_db import import_database

    if not archive.is_file():
        raise KilnError("file_not_found", f"{archive} does not exist",
                        hint="give a file written by `kiln tune-db export`")
    info = import_database(archive)
    out.print(f"imported into {info.name}: {info.records} records for target {info.target}",
              highlight=False)


def register(app: typer.Typer) -> None:
    app.command("tune")(tune_cmd)
    app.add_typer(db_app, name="tune-db")
