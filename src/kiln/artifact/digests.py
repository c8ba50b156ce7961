"""File digests, and the glibc an ELF file needs."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from kiln.errors import KilnError


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def digest_tree(root: Path, *, exclude: tuple[str, ...] = ()) -> dict[str, dict]:
    """``{relative path: {"sha256", "size"}}`` of every file under ``root``."""
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel not in exclude:
            out[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return out


def check_digests(root: Path, files: dict[str, dict], *, exclude: tuple[str, ...] = ()) -> None:
    """Raise ``artifact_corrupt`` if any file is missing, changed or not in the manifest."""
    actual = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    actual -= set(exclude)
    problems = [f"{n} is missing" for n in sorted(set(files) - actual)]
    problems += [f"{n} is not listed in the manifest" for n in sorted(actual - set(files))]
    for name in sorted(set(files) & actual):
        if sha256_file(root / name) != files[name]["sha256"]:
            problems.append(f"{name} does not match its sha256")
    if problems:
        raise KilnError("artifact_corrupt", "artifact failed its integrity check: "
                        + "; ".join(problems[:5]), hint="the artifact was modified or damaged; "
                        "compile it again or fetch an intact copy")


_GLIBC = re.compile(rb"GLIBC_2\.(\d+)")


def glibc_needed(paths: list[Path]) -> str:
    """The newest ``GLIBC_2.x`` symbol version referenced by any of ``paths``."""
    newest = 0
    for path in paths:
        newest = max([newest, *(int(m) for m in _GLIBC.findall(path.read_bytes()))])
    return f"2.{newest}" if newest else "none"
