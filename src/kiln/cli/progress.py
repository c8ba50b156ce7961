"""A rich progress display for the compile steps."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

STEPS = ("import", "compile", "bundle", "verify", "pack")
_LABELS = {"import": "importing the model", "compile": "compiling with TVM",
           "bundle": "building the runtime bundle", "verify": "running the accuracy gate",
           "pack": "packing the artifact"}


@contextmanager
def steps(console: Console) -> Iterator:
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True,
                  disable=not console.is_terminal) as bar:
        task = bar.add_task("starting", total=len(STEPS))
        seen: list[str] = []

        def advance(name: str) -> None:
            if seen:
                bar.advance(task)
            seen.append(name)
            bar.update(task, description=_LABELS.get(name, name))

        yield advance
        bar.update(task, completed=len(STEPS))
