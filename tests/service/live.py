"""A real uvicorn server on 127.0.0.1 (free port) in a thread, and boto3 clients for it."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import boto3
import uvicorn
from botocore.config import Config

from kiln.service import Settings, create_app
from kiln.service.auth import AccessKey

REGION = "us-west-2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """``kiln serve``'s app under uvicorn, started and stopped in-process."""

    def __init__(self, state_dir: Path, keys: list[AccessKey], *, workers: int = 1,
                 s3_endpoint_url: str | None = None, **settings) -> None:
        self.settings = Settings(state_dir=state_dir, keys=tuple(keys), workers=workers,
                                 max_request_bytes=64 * 1024, s3_endpoint_url=s3_endpoint_url,
                                 s3_key="testing", s3_secret="testing", **settings)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(self.settings)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)

    def client(self, key: AccessKey | None, *, secret: str | None = None, signed: bool = True):
        cfg = Config(retries={"max_attempts": 1, "mode": "standard"})
        if not signed:
            from botocore import UNSIGNED
            cfg = cfg.merge(Config(signature_version=UNSIGNED))
        return boto3.client("sagemaker", endpoint_url=self.url, region_name=REGION,
                            aws_access_key_id=key.access_key_id if key else "AKIDNOBODY",
                            aws_secret_access_key=secret or (key.secret_access_key if key else "x"),
                            config=cfg)


def wait_for(client, name: str, statuses=("COMPLETED", "FAILED", "STOPPED"), timeout=300) -> dict:
    deadline = time.time() + timeout
    while True:
        job = client.describe_compilation_job(CompilationJobName=name)
        if job["CompilationJobStatus"] in statuses:
            return job
        if time.time() > deadline:
            raise AssertionError(f"{name} still {job['CompilationJobStatus']} after {timeout} s")
        time.sleep(0.5)
