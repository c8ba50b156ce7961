"""Model and artifact locations: local paths, ``file://`` and ``s3://`` (boto3).

``s3://`` works against any S3-compatible endpoint: the service passes ``endpoint_url`` (and
keys, when given) as storage options; otherwise boto3 reads the usual AWS settings. boto3 rather
than fsspec/s3fs: s3fs pins aiobotocore, which pins botocore to a narrow range that conflicts with
boto3 and moto in one environment (pip could not resolve the test extra).
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


class _S3:
    """``s3://bucket/key`` through boto3, with the service's endpoint and keys."""

    def __init__(self, storage: dict) -> None:
        try:
            import boto3
        except ImportError:
            raise JobFailure(failure.reason("ServerError", "s3:// needs boto3: pip install "
                                            "'kilnml[service]'")) from None
        self.client = boto3.client(
            "s3", endpoint_url=storage.get("endpoint_url"), region_name=storage.get("region"),
            aws_access_key_id=storage.get("key"), aws_secret_access_key=storage.get("secret"))

    @staticmethod
    def split(uri: str) -> tuple[str, str]:
        parsed = urlparse(uri)
        return parsed.netloc, parsed.path.lstrip("/")

    def get(self, uri: str, dest: Path) -> None:
        self.client.download_file(*self.split(uri), str(dest))

    def put(self, src: Path, uri: str) -> None:
        self.client.upload_file(str(src), *self.split(uri))

    def open(self, uri: str):
        bucket, key = self.split(uri)
        return self.client.get_object(Bucket=bucket, Key=key)["Body"]


def _s3_problem(exc: Exception) -> str | None:
    """'missing' / 'denied' / None for a botocore error."""
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
        return "missing"
    if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return "denied"
    return None


def fetch(uri: str, workdir: Path, storage: dict) -> Path:
    """The model at ``uri`` as a local file (downloaded into ``workdir`` when remote)."""
    local = _local(uri)
    if local is not None:
        if not local.is_file():
            raise JobFailure(failure.reason("ClientError: InputConfiguration",
                                            f"model file {uri} does not exist"))
        return local
    dest = workdir / (Path(urlparse(uri).path).name or "model")
    try:
        _S3(storage).get(uri, dest)
    except JobFailure:
        raise
    except Exception as exc:  # botocore's ClientError / EndpointConnectionError ...
        problem = _s3_problem(exc)
        if problem == "missing":
            raise JobFailure(failure.reason("ClientError: InputConfiguration",
                                            f"S3 object does not exist: {uri}")) from None
        prefix = "ClientError: AccessDenied" if problem == "denied" else "ClientError"
        raise JobFailure(failure.reason(prefix, f"cannot read {uri}: {exc}")) from None
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
        _S3(storage).put(artifact, uri)
    except JobFailure:
        raise
    except Exception as exc:  # OSError, botocore errors
        prefix = "ClientError: AccessDenied" if _s3_problem(exc) == "denied" else "ClientError"
        raise JobFailure(failure.reason(prefix, f"cannot write the artifact to {uri}: "
                                        f"{exc}")) from None


def open_artifact(uri: str, storage: dict):
    """A binary file object for the artifact at ``uri`` (for the REST download)."""
    local = _local(uri)
    if local is not None:
        return open(local, "rb")
    try:
        return _S3(storage).open(uri)
    except Exception as exc:
        raise OSError(str(exc)) from None


def blake2(path: Path) -> str:
    """ModelDigests.ArtifactDigest: the BLAKE2b (512-bit) hex digest of the artifact file."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "blake2b").hexdigest()
