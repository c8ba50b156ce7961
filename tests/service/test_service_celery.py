"""The distributed tier: `kiln serve --broker` + `kiln worker` processes over a real Redis."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .live import LiveServer, free_port, wait_for
from .test_service_compile import _compile_pids, _create

pytestmark = [pytest.mark.service, pytest.mark.skipif(
    shutil.which("redis-server") is None and not os.environ.get("CI"),
    reason="needs redis-server (apt); CI installs it")]
KILN = str(Path(sys.executable).parent / "kiln")


@pytest.fixture(scope="module")
def redis_url():
    pytest.importorskip("celery")
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    deadline = time.time() + 20
    import socket

    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.time() < deadline and proc.poll() is None, "redis-server did not start"
            time.sleep(0.1)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=20)


def _worker(redis_url, state: Path, name: str) -> subprocess.Popen:
    log = open(state.parent / f"{name}.log", "wb")
    return subprocess.Popen([KILN, "worker", "--broker", redis_url, "--db-url",
                             f"sqlite:///{state / 'jobs.sqlite'}", "--state-dir",
                             str(state.parent / name)], stdout=log, stderr=subprocess.STDOUT)


def test_worker_jobs_and_a_worker_killed_mid_job(redis_url, keys, models, tmp_path):
    state = tmp_path / "server"
    with LiveServer(state, list(keys.values()), broker_url=redis_url, worker_timeout_s=6) as srv:
        client = srv.client(keys["a"])
        worker = _worker(redis_url, state, "w1")
        try:
            _create(client, "cel-doomed", str(models / "killme.onnx"), str(tmp_path / "o1"),
                    device="ml_c5")
            wait_for(client, "cel-doomed", statuses=("INPROGRESS",), timeout=120)
            deadline = time.time() + 60
            while not _compile_pids("killme.onnx") and time.time() < deadline:
                time.sleep(0.1)
            assert _compile_pids("killme.onnx")
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
            job = wait_for(client, "cel-doomed", timeout=60)
            assert job["CompilationJobStatus"] == "FAILED"
            assert "stopped responding for 6 s" in job["FailureReason"], job["FailureReason"]
            assert job["FailureReason"].startswith("ServerError: the worker running the job (")
            time.sleep(1)
            assert not _compile_pids("killme.onnx")  # the compile died with its worker
        finally:
            worker.kill()
            worker.wait()
        # a job queued while no worker runs waits in Redis, and the next worker takes it
        _create(client, "cel-mlp", f"file://{models}/mlp.onnx", f"file://{tmp_path}/out",
                platform={"Os": "LINUX", "Arch": "X86_64"})
        time.sleep(1)
        assert client.describe_compilation_job(CompilationJobName="cel-mlp")[
            "CompilationJobStatus"] == "STARTING"
        worker = _worker(redis_url, state, "w2")
        try:
            job = wait_for(client, "cel-mlp", timeout=240)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
        assert job["CompilationJobStatus"] == "COMPLETED", job.get("FailureReason")
        artifact = tmp_path / "out" / "mlp-LINUX_X86_64.tar.gz"
        assert job["ModelDigests"]["ArtifactDigest"] == hashlib.blake2b(
            artifact.read_bytes()).hexdigest()
        logs = httpx.get(f"{srv.url}/v1/compilation-jobs/cel-mlp/logs", headers={
            "Authorization": f"Bearer {keys['a'].bearer_token}"}).text
        assert "kiln.cli.main compile" in logs and "verified (native)" in logs
