"""Per-target tuning databases on disk: where they live, list, export, import.

One directory per target fingerprint under ``$KILN_TUNE_DIR`` (else ``<cache>/tuning``), holding
MetaSchedule's JSON database (``database_workload.json``, ``database_tuning_record.json``) and
``kiln-target.json`` (the target it was tuned for). Listing and exporting never import TVM.
"""

from __future__ import annotations

import contextlib
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kiln.cache import cache_dir
from kiln.errors import KilnError
from kiln.targets import TargetSpec

INFO = "kiln-target.json"
WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
#: The sub-directory of a database holding the schedule chosen for each kernel by timing the
#: candidates in the whole model (:mod:`kiln.compiler_tuning`); it comes before the records
#: the search measured kernel by kernel.
SELECTED = "selected"
_HINT = "`kiln tune-db list` shows the databases on this machine"
_ROOTS: list[Path] = []


def tune_root() -> Path:
    root = _ROOTS[-1] if _ROOTS else \
        Path(os.environ.get("KILN_TUNE_DIR") or cache_dir() / "tuning")
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextlib.contextmanager
def tune_root_at(path: Path):
    """Within the block, databases live under ``path`` (a candidate's database while tuning)."""
    _ROOTS.append(Path(path))
    try:
        yield Path(path)
    finally:
        _ROOTS.pop()


def _dir_name(spec: TargetSpec) -> str:
    return f"{spec.name}-{spec.fingerprint().split(':')[1][:12]}"


def database_dir(spec: TargetSpec, *, create: bool = False) -> Path | None:
    """The database directory of ``spec``; None when it holds no records and ``create`` is off."""
    path = tune_root() / _dir_name(spec)
    if create:
        path.mkdir(parents=True, exist_ok=True)
        return path
    return path if _count_lines(path / RECORDS) else None


def write_info(path: Path, spec: TargetSpec) -> None:
    info = {"target": spec.name, "fingerprint": spec.fingerprint(), "spec": spec.to_dict()}
    (path / INFO).write_text(json.dumps(info, indent=1) + "\n")


@dataclass(frozen=True)
class DatabaseInfo:
    name: str
    target: str
    fingerprint: str
    workloads: int
    records: int
    path: Path

    def to_dict(self) -> dict:
        return {"name": self.name, "target": self.target, "fingerprint": self.fingerprint,
                "workloads": self.workloads, "records": self.records, "path": str(self.path)}


def _count_lines(path: Path) -> int:
    if not path.is_file():
        return 0
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def _info(path: Path) -> DatabaseInfo:
    try:
        meta = json.loads((path / INFO).read_text())
        target, fingerprint = str(meta["target"]), str(meta["fingerprint"])
    except (OSError, ValueError, KeyError, TypeError):
        raise KilnError("invalid_tuning_database", f"{path} is not a Kiln tuning database "
                        f"(missing or unreadable {INFO})", hint=_HINT) from None
    return DatabaseInfo(path.name, target, fingerprint, _count_lines(path / WORKLOADS),
                        _count_lines(path / RECORDS), path)


def list_databases() -> list[DatabaseInfo]:
    out = []
    for path in sorted(tune_root().iterdir()):
        if path.is_dir() and (path / INFO).is_file():
            out.append(_info(path))
    return out


def find_database(name: str) -> DatabaseInfo:
    """A database by directory name or target name (the newest of that target)."""
    dbs = list_databases()
    exact = [d for d in dbs if d.name == name] or [d for d in dbs if d.target == name]
    if not exact:
        raise KilnError("invalid_tuning_database", f"no tuning database named {name!r}",
                        hint=_HINT + (": " + ", ".join(d.name for d in dbs) if dbs else
                                      "; `kiln tune MODEL --target NAME` makes one"))
    return max(exact, key=lambda d: (d.path / RECORDS).stat().st_mtime
               if (d.path / RECORDS).exists() else 0)


def export_database(name: str, output: Path) -> DatabaseInfo:
    """Write the database as a ``.tar.gz`` that :func:`import_database` reads on another machine."""
    info = find_database(name)
    with tarfile.open(output, "w:gz") as tar:
        for member in (INFO, WORKLOADS, RECORDS, f"{SELECTED}/{WORKLOADS}",
                       f"{SELECTED}/{RECORDS}"):
            if (info.path / member).is_file():
                tar.add(info.path / member, arcname=f"{info.name}/{member}")
    return info


def import_database(archive: Path) -> DatabaseInfo:
    """Unpack an exported database safely and merge its records into this machine's copy."""
    from kiln.artifact.archive import unpack

    with tempfile.TemporaryDirectory(prefix="kiln-tunedb-") as tmp:
        unpack(archive, Path(tmp))
        dirs = [p for p in Path(tmp).iterdir() if p.is_dir()]
        if len(dirs) != 1:
            raise KilnError("invalid_tuning_database", f"{archive} holds {len(dirs)} databases, "
                            "expected exactly one", hint="make it with `kiln tune-db export`")
        src = _info(dirs[0])
        dest = tune_root() / src.name
        dest.mkdir(parents=True, exist_ok=True)
        (dest / INFO).write_text((src.path / INFO).read_text())
        _merge(src.path, dest)
        if _count_lines(src.path / SELECTED / RECORDS):
            # the imported choices replace this machine's for the same kernels
            _merge(src.path / SELECTED, dest / SELECTED, replace=True)
    return _info(dest)


def _merge(src: Path, dest: Path, *, replace: bool = False) -> None:
    """Commit every record of ``src`` into ``dest`` through MetaSchedule's own database
    (``replace``: as :func:`replace_records`)."""
    from tvm.s_tir import meta_schedule as ms

    try:
        source = ms.database.JSONDatabase(work_dir=str(src), allow_missing=False)
        records = source.get_all_tuning_records()
    except Exception as exc:  # noqa: BLE001 - corrupt JSON, unknown workload index ...
        raise KilnError("invalid_tuning_database", f"cannot read the imported database: "
                        f"{str(exc).strip().splitlines()[-1][:300]}",
                        hint="export it again with `kiln tune-db export`") from None
    if replace:
        replace_records(dest, records)
        return
    _commit(ms.database.JSONDatabase(work_dir=str(dest)), records)


def _commit(database, records) -> None:
    """Commit ``records`` (of any database) into ``database``, workloads included."""
    from tvm.s_tir import meta_schedule as ms

    for rec in records:
        workload = database.commit_workload(rec.workload.mod)
        database.commit_tuning_record(ms.database.TuningRecord(
            rec.trace, workload, rec.run_secs, rec.target, rec.args_info))


def replace_records(dest: Path, records) -> None:
    """Make ``records`` the only records in ``dest`` of their kernels (workloads), keeping
    those of other kernels: a selection holds one record per kernel."""
    import tvm_ffi
    from tvm.s_tir import meta_schedule as ms

    dest.mkdir(parents=True, exist_ok=True)
    new = {tvm_ffi.structural_hash(r.workload.mod) for r in records}
    kept = []
    if _count_lines(dest / RECORDS):
        old = ms.database.JSONDatabase(work_dir=str(dest), allow_missing=False)
        kept = [r for r in old.get_all_tuning_records()
                if tvm_ffi.structural_hash(r.workload.mod) not in new]
    with tempfile.TemporaryDirectory(prefix="kiln-tunedb-", dir=dest) as tmp:
        _commit(ms.database.JSONDatabase(work_dir=tmp), [*kept, *records])
        for name in (WORKLOADS, RECORDS):
            os.replace(Path(tmp) / name, dest / name)
