"""Fixtures of the service tests: keys of two tenants, models on disk, live servers, S3 (moto)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from kiln.service.auth import new_key

from .live import LiveServer


@pytest.fixture(scope="session")
def keys():
    return {"a": new_key("team-a"), "b": new_key("team-b")}


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> Path:
    """mlp.onnx, mlp.tar.gz (Neo-style package), bad.onnx (not a model), mlp.x.npy."""
    from kiln.examples.models import MODELS

    root = tmp_path_factory.mktemp("svc-models")
    model = MODELS["mlp"]()
    onnx.save(model, root / "mlp.onnx")
    for name in ("stopme", "slow", "killme"):
        onnx.save(MODELS["cnn"](), root / f"{name}.onnx")
    with tarfile.open(root / "mlp.tar.gz", "w:gz") as tar:
        tar.add(root / "mlp.onnx", arcname="mlp.onnx")
    (root / "bad.onnx").write_bytes(b"this is not an onnx model\n" * 10)
    np.save(root / "mlp.x.npy", np.random.default_rng(3).standard_normal((1, 64)).astype(np.float32))
    return root


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 (its endpoint URL) with bucket ``models``."""
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    from .live import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket="models")
    yield url, client
    server.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory, keys, s3):
    """The service with one compile worker, reading s3:// from the moto endpoint."""
    state = tmp_path_factory.mktemp("svc-state")
    with LiveServer(state, list(keys.values()), workers=1, s3_endpoint_url=s3[0]) as srv:
        yield srv


@pytest.fixture(scope="session")
def queue_server(tmp_path_factory, keys):
    """The service with no compile worker: jobs stay queued (for listing and API tests)."""
    state = tmp_path_factory.mktemp("svc-queue")
    with LiveServer(state, list(keys.values()), workers=0) as srv:
        yield srv
