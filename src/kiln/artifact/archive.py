"""Pack an artifact folder into a .tar.gz and unpack one safely.

Unpacking refuses absolute paths, ``..``, links, device files and anything that is not a
plain file or folder, and stops archives that expand past a size limit; nothing is written
outside the destination, and nothing at all when a check fails.
"""

from __future__ import annotations

import io
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from kiln.errors import KilnError

#: Refuse archives that would expand past this many bytes (4 GiB) or members.
MAX_EXPANDED_BYTES = 4 << 30
MAX_MEMBERS = 10_000


def pack(folder: Path, output: Path) -> Path:
    """Write every file of ``folder`` into ``output`` (.tar.gz), sorted, with fixed owners."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".partial")
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = tar.gettarinfo(str(path), arcname=path.relative_to(folder).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
            with open(path, "rb") as f:
                tar.addfile(info, f)
    tmp.replace(output)
    return output


def _check_member(m: tarfile.TarInfo) -> str | None:
    path = PurePosixPath(m.name)
    if m.name.startswith(("/", "\\")) or path.is_absolute() or (len(m.name) > 1 and m.name[1] == ":"):
        return f"{m.name!r} has an absolute path"
    if ".." in path.parts:
        return f"{m.name!r} climbs out of the destination with '..'"
    if m.issym() or m.islnk():
        return f"{m.name!r} is a link"
    if not (m.isfile() or m.isdir()):
        return f"{m.name!r} is a device, fifo or other special file"
    return None


def unpack(archive: Path, dest: Path) -> Path:
    """Extract ``archive`` into ``dest`` after checking every member."""
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise KilnError("invalid_artifact", f"{archive} is not a tar.gz artifact: "
                        f"{_first_line(exc)}", hint="give a file written by `kiln compile`") from None
    with tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, EOFError, OSError, io.UnsupportedOperation) as exc:
            raise KilnError("invalid_artifact", f"{archive} is truncated or damaged: "
                            f"{_first_line(exc)}",
                            hint="fetch the artifact again") from None
        problems = [p for p in map(_check_member, members) if p]
        if problems:
            raise KilnError("unsafe_archive", f"{archive.name} was not extracted: "
                            + "; ".join(problems[:5]), hint="only accept artifacts from a "
                            "trusted `kiln compile`; nothing was written")
        total = sum(m.size for m in members)
        if len(members) > MAX_MEMBERS or total > MAX_EXPANDED_BYTES:
            raise KilnError("unsafe_archive", f"{archive.name} would expand to {total} bytes in "
                            f"{len(members)} members, past the limit of {MAX_EXPANDED_BYTES} bytes "
                            f"/ {MAX_MEMBERS} members", hint="nothing was written")
        dest.mkdir(parents=True, exist_ok=True)
        # extract beside dest first, so that a failure half-way leaves nothing behind
        staging = Path(tempfile.mkdtemp(prefix=".kiln-unpack-", dir=dest.parent))
        try:
            tar.extractall(staging, filter="data")
            for entry in staging.iterdir():
                entry.rename(dest / entry.name)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise KilnError("invalid_artifact", f"{archive} could not be extracted: "
                            f"{_first_line(exc)}", hint="fetch the artifact again") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return dest


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__
