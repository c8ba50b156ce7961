"""``kiln.artifact.archive``: deterministic packing and safe, all-or-nothing unpacking."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

import kiln.artifact.archive as archive
from kiln.artifact.archive import pack, unpack
from kiln.errors import KilnError

BENIGN = b"harmless\n"


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    return info, data


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, 0o644
    if kind == tarfile.CHRTYPE:
        info.devmajor, info.devminor = 1, 3  # /dev/null's numbers
    return info, None


def make_tar(path: Path, members) -> Path:
    """A tar.gz whose first member is an innocent file, so a partial extraction would show.
    Callers extract into ``tmp_path/deep/dest``, so ``../../../evil`` lands in tmp_path's parent."""
    with tarfile.open(path, "w:gz") as tar:
        for info, data in [_file("ok.txt", BENIGN), *members]:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def evil_files(tmp_path: Path) -> list[Path]:
    """Every file or link named ``evil`` on disk near the test (the archive itself is opaque)."""
    near = [p for p in tmp_path.parent.iterdir() if p.name == "evil"]
    under = [p for p in tmp_path.rglob("*") if "evil" in p.name and p.suffixes != [".tar", ".gz"]]
    return near + under


def assert_nothing_written(dest: Path, tmp_path: Path) -> None:
    assert not dest.exists() or not any(dest.iterdir()), sorted(dest.rglob("*"))
    assert evil_files(tmp_path) == []


def _unsafe(tmp_path: Path, members, dest_name: str = "dest") -> KilnError:
    arc = make_tar(tmp_path / "evil-archive.tar.gz", members)
    dest = tmp_path / "deep" / dest_name
    with pytest.raises(KilnError) as info:
        unpack(arc, dest)
    assert info.value.code == "unsafe_archive", info.value
    assert "nothing was written" in info.value.hint
    assert_nothing_written(dest, tmp_path)
    return info.value


# ---- members that would escape ------------------------------------------------------------------
def test_absolute_path_etc(tmp_path):
    etc_evil = Path("/etc/evil")
    existed = etc_evil.exists()
    try:
        err = _unsafe(tmp_path, [_file("/etc/evil", b"pwned\n")])
    finally:
        written = not existed and etc_evil.exists()
        if written:  # a regression run as root: clean up before failing
            etc_evil.unlink()
    assert not written, "/etc/evil was written"
    assert "absolute" in err.message


def test_absolute_path_into_tmp(tmp_path):
    target = tmp_path / "outside" / "evil"
    err = _unsafe(tmp_path, [_file(str(target), b"pwned\n")])
    assert "absolute" in err.message and not target.exists()


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "../../../evil", "./a/../../../evil"])
def test_dotdot(tmp_path, name):
    err = _unsafe(tmp_path, [_file(name, b"pwned\n")])
    assert "'..'" in err.message and name in err.message


def test_symlink_then_write_through_it(tmp_path):
    # the classic two-step escape: a link to the parent, then a file "through" the link
    err = _unsafe(tmp_path, [_special("lnk", tarfile.SYMTYPE, ".."), _file("lnk/evil", b"x")])
    assert "'lnk' is a link" in err.message


def test_symlink_to_absolute_file(tmp_path):
    (tmp_path / "secret").write_text("secret\n")
    err = _unsafe(tmp_path, [_special("evil", tarfile.SYMTYPE, str(tmp_path / "secret"))])
    assert "link" in err.message


def test_hard_link(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("secret\n")
    err = _unsafe(tmp_path, [_special("evil", tarfile.LNKTYPE, str(secret))])
    assert "link" in err.message
    assert secret.stat().st_nlink == 1


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE],
                         ids=["chr", "blk", "fifo"])
def test_special_files(tmp_path, kind):
    err = _unsafe(tmp_path, [_special("evil", kind)])
    assert "special file" in err.message


def test_every_problem_is_reported_up_to_five(tmp_path):
    members = [_file(f"../evil{i}", b"x") for i in range(7)]
    err = _unsafe(tmp_path, members)
    assert err.message.count("'..'") == 5


# ---- size limits --------------------------------------------------------------------------------
def test_declared_size_past_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(archive, "MAX_EXPANDED_BYTES", 1000)
    arc = make_tar(tmp_path / "big.tar.gz", [_file("big.bin", b"\0" * 2000)])
    dest = tmp_path / "dest"
    with pytest.raises(KilnError) as info:
        unpack(arc, dest)
    assert info.value.code == "unsafe_archive"
    assert "1000" in info.value.message and str(2000 + len(BENIGN)) in info.value.message
    assert not dest.exists()


def test_size_under_limit_is_fine(tmp_path, monkeypatch):
    monkeypatch.setattr(archive, "MAX_EXPANDED_BYTES", 1000)
    arc = make_tar(tmp_path / "small.tar.gz", [_file("small.bin", b"\1" * 900)])
    dest = unpack(arc, tmp_path / "dest")
    assert (dest / "small.bin").read_bytes() == b"\1" * 900


def test_too_many_members(tmp_path, monkeypatch):
    monkeypatch.setattr(archive, "MAX_MEMBERS", 3)
    arc = make_tar(tmp_path / "many.tar.gz", [_file(f"f{i}", b"x") for i in range(3)])
    with pytest.raises(KilnError) as info:
        unpack(arc, tmp_path / "dest")
    assert info.value.code == "unsafe_archive"
    assert not (tmp_path / "dest").exists()


# ---- not an archive -----------------------------------------------------------------------------
def _artifact_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    (root / "sub").mkdir(parents=True)
    (root / "manifest.json").write_text('{"schema_version": 1}\n')
    (root / "model.so").write_bytes(rng.bytes(40_000))
    (root / "sub" / "data.bin").write_bytes(rng.bytes(3_000))
    (root / "kiln_run").write_bytes(b"#!/bin/sh\nexit 0\n")
    (root / "kiln_run").chmod(0o700)
    return root


def test_truncated_gzip(tmp_path):
    good = pack(_artifact_folder(tmp_path / "src"), tmp_path / "good.tar.gz")
    data = good.read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(KilnError) as info:
        unpack(cut, tmp_path / "dest")
    assert info.value.code == "invalid_artifact" and info.value.hint
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize("content", [b"hello world\n", b""], ids=["text", "empty"])
def test_not_a_tar(tmp_path, content):
    path = tmp_path / "plain.tar.gz"
    path.write_bytes(content)
    with pytest.raises(KilnError) as info:
        unpack(path, tmp_path / "dest")
    assert info.value.code == "invalid_artifact" and info.value.hint
    assert not (tmp_path / "dest").exists()


# ---- the normal round trip ----------------------------------------------------------------------
def test_pack_unpack_round_trip(tmp_path):
    src = _artifact_folder(tmp_path / "src")
    arc = pack(src, tmp_path / "out" / "a.tar.gz")
    assert arc == tmp_path / "out" / "a.tar.gz" and arc.is_file()
    assert not list(arc.parent.glob("*.partial"))
    with tarfile.open(arc, "r:gz") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names) == ["kiln_run", "manifest.json", "model.so", "sub/data.bin"]
    for m in members:
        assert m.isfile() and (m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "")
    modes = {m.name: m.mode for m in members}
    assert modes["kiln_run"] == 0o755 and modes["model.so"] == 0o644

    dest = unpack(arc, tmp_path / "dest")
    assert dest == tmp_path / "dest"
    got = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert got == names
    for name in names:
        assert (dest / name).read_bytes() == (src / name).read_bytes(), name
    assert os.access(dest / "kiln_run", os.X_OK)


def test_pack_is_deterministic_in_content(tmp_path):
    src = _artifact_folder(tmp_path / "src")
    a, b = pack(src, tmp_path / "a.tar.gz"), pack(src, tmp_path / "b.tar.gz")
    with tarfile.open(a) as ta, tarfile.open(b) as tb:
        ia, ib = ta.getmembers(), tb.getmembers()
        assert [(m.name, m.size, m.mode, m.uid) for m in ia] == \
            [(m.name, m.size, m.mode, m.uid) for m in ib]
        for m in ia:
            assert ta.extractfile(m).read() == tb.extractfile(m.name).read()
