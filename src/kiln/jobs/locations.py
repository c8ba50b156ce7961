"""Model and artifact locations: local paths, ``file://`` and ``s3://`` (fsspec + s3fs).

``s3://`` works against any S3-compatible endpoint: the service passes ``endpoint_url`` (and
keys, when given) as fsspec storage options; otherwise s3fs reads the usual AWS settings.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from urllib.parse import urlparse

from kiln.jobs import failure

MODEL_SUFFIXES = (".onnx",)


class JobFailure(Exception):
    """A job ends FAILED with ``reason`` (already in Neo's FailureReason classes)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _local(uri: str) -> Path | None:
    if uri.startswith("file://"):
        return Path(urlparse(uri).path)
    if uri.startswith("/"):
        return Path(uri)
    return None


def _fs(uri: str, storage: dict):
    import fsspec

    scheme = urlparse(uri).scheme
    try:
        return fsspec.filesystem(scheme, **(storage if scheme == "s3" else {}))
    except ImportError as exc:
        raise JobFailure(failure.reason("ServerError", f"{scheme}:// needs {exc.name}: pip "
                                        "install 'kilnml[service]'")) from None


def fetch(uri: str, workdir: Path, storage: dict) -> Path:
    """The model at ``uri`` as a local file (downloaded into ``workdir`` when remote)."""
    local = _local(uri)
    if local is not None:
        if not local.is_file():
            raise JobFailure(failure.reason("ClientError: InputConfiguration",
                                            f"model file {uri} does not exist"))
        return local
    fs = _fs(uri, storage)
    dest = workdir / (Path(urlparse(uri).path).name or "model")
    try:
        fs.get(uri, str(dest))
    except FileNotFoundError:
        raise JobFailure(failure.reason("ClientError: InputConfiguration",
                                        f"S3 object does not exist: {uri}")) from None
    except (PermissionError, OSError) as exc:
        raise JobFailure(failure.reason("ClientError", f"cannot read {uri}: {exc}")) from None
    return dest


def model_file(path: Path, workdir: Path) -> Path:
    """A model file itself, or the one model inside a Neo-style ``model.tar.gz`` (safely
    unpacked)."""
    if path.suffix in MODEL_SUFFIXES or not path.name.endswith((".tar.gz", ".tgz", ".tar")):
        return path
    from kiln.artifact.archive import unpack
    from kiln.errors import KilnError

    try:
        root = unpack(path, workdir / "model")
    except KilnError:
        raise JobFailure(failure.UNTAR) from None
    found = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in MODEL_SUFFIXES)
    if len(found) != 1:
        raise JobFailure(failure.reason(
            "ClientError: InputConfiguration", f"Exactly one .onnx file is allowed in the input "
            f"tar.gz; found {len(found)}: {', '.join(p.name for p in found[:5])}"))
    return found[0]


def output_uri(location: str, filename: str) -> str:
    return location.rstrip("/") + "/" + filename


def upload(artifact: Path, uri: str, storage: dict) -> None:
    """Copy ``artifact`` to ``uri`` (the job's S3ModelArtifacts)."""
    local = _local(uri)
    try:
        if local is not None:
            local.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(artifact, local)
            return
        _fs(uri, storage).put(str(artifact), uri)
    except (PermissionError, OSError) as exc:
        raise JobFailure(failure.reason("ClientError", f"cannot write the artifact to {uri}: "
                                        f"{exc}")) from None


def open_artifact(uri: str, storage: dict):
    """A binary file object for the artifact at ``uri`` (for the REST download)."""
    local = _local(uri)
    if local is not None:
        return open(local, "rb")
    return _fs(uri, storage).open(uri, "rb")


def blake2(path: Path) -> str:
    """ModelDigests.ArtifactDigest: the BLAKE2b (512-bit) hex digest of the artifact file."""
    h = hashlib.blake2b()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
