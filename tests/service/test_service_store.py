"""The job store: Alembic migration on an empty SQLite file, JSON rows, restart recovery,
and `kiln serve` / `kiln keys create` as the README says."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from kiln.jobs.model import validate_create
from kiln.jobs.store import JobStore, migrate
from kiln.service.auth import new_key

from .live import LiveServer, free_port

pytestmark = pytest.mark.service
REQUEST = {"CompilationJobName": "j1", "RoleArn": "arn:aws:iam::1:role/r",
           "InputConfig": {"S3Uri": "s3://b/m.onnx", "Framework": "ONNX"},
           "OutputConfig": {"S3OutputLocation": "s3://b/o", "TargetDevice": "rasp4b"},
           "StoppingCondition": {"MaxRuntimeInSeconds": 60}}


def test_migration_creates_the_schema_in_an_empty_sqlite_file(tmp_path):
    db = tmp_path / "empty.sqlite"
    db.touch()
    migrate(f"sqlite:///{db}")
    migrate(f"sqlite:///{db}")  # idempotent
    con = sqlite3.connect(db)
    assert con.execute("select version_num from alembic_version").fetchall() == [("0001",)]
    cols = [r[1] for r in con.execute("pragma table_info(compilation_jobs)")]
    assert cols == ["id", "tenant", "name", "status", "created_at", "modified_at",
                    "schema_version", "record"]
    store = JobStore(f"sqlite:///{db}")
    store.create("t", validate_create(REQUEST), "arn:x", active_limit=5)
    tenant, version, record = con.execute(
        "select tenant, schema_version, record from compilation_jobs").fetchone()
    assert (tenant, version) == ("t", 1)
    assert json.loads(record)["OutputConfig"]["TargetDevice"] == "rasp4b"  # JSON, not pickle


def test_restart_fails_jobs_left_in_progress_and_keeps_the_queue(tmp_path):
    key = new_key("team-r")
    state = tmp_path / "state"
    state.mkdir()
    url = f"sqlite:///{state / 'jobs.sqlite'}"
    migrate(url)
    store = JobStore(url)
    for name in ("was-running", "was-queued"):
        store.create("team-r", validate_create({**REQUEST, "CompilationJobName": name}),
                     f"arn:{name}", active_limit=5)
    assert store.claim_next().name == "was-running"
    with LiveServer(state, [key], workers=0) as srv:
        client = srv.client(key)
        job = client.describe_compilation_job(CompilationJobName="was-running")
        assert job["CompilationJobStatus"] == "FAILED"
        assert job["FailureReason"].startswith("ServerError: the Kiln server restarted")
        assert client.describe_compilation_job(CompilationJobName="was-queued")[
            "CompilationJobStatus"] == "STARTING"


def test_active_job_limit_is_resource_limit_exceeded(tmp_path):
    url = f"sqlite:///{tmp_path / 'j.sqlite'}"
    migrate(url)
    store = JobStore(url)
    store.create("t", validate_create(REQUEST), "arn:1", active_limit=1)
    from kiln.jobs.model import JobError

    with pytest.raises(JobError) as info:
        store.create("t", validate_create({**REQUEST, "CompilationJobName": "j2"}), "arn:2",
                     active_limit=1)
    assert info.value.kind == "ResourceLimitExceeded"


def test_kiln_keys_create_and_kiln_serve(tmp_path):
    import boto3

    kiln = str(Path(sys.executable).parent / "kiln")
    env = {**os.environ, "KILN_STATE_DIR": str(tmp_path / "state")}
    out = subprocess.run([kiln, "keys", "create", "team-cli"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    key_id = re.search(r"aws_access_key_id\s+= (\S+)", out.stdout).group(1)
    secret = re.search(r"aws_secret_access_key\s+= (\S+)", out.stdout).group(1)
    assert oct((tmp_path / "state" / "keys.json").stat().st_mode)[-3:] == "600"
    port = free_port()
    proc = subprocess.Popen([kiln, "serve", "--port", str(port), "--workers", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.time() < deadline and proc.poll() is None, proc.stdout.read()
            time.sleep(0.2)
        client = boto3.client("sagemaker", endpoint_url=f"http://127.0.0.1:{port}",
                              region_name="eu-central-1", aws_access_key_id=key_id,
                              aws_secret_access_key=secret)
        arn = client.create_compilation_job(**REQUEST)["CompilationJobArn"]
        assert arn.startswith("arn:aws:sagemaker:eu-central-1:")
        assert [s["CompilationJobName"] for s in client.list_compilation_jobs()[
            "CompilationJobSummaries"]] == ["j1"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert (tmp_path / "state" / "jobs.sqlite").is_file()


def test_heartbeats_cover_the_whole_job_not_only_the_compile(tmp_path):
    """A slow step before the compile starts (here a `kiln compile --help` that takes 4 s, as a
    cold worker's can) must not let the reaper take the job from a live worker."""
    import threading

    from kiln.jobs.executor import HEARTBEAT_S, ExecutorConfig, LocalExecutor

    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    migrate(url)
    store = JobStore(url)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not read")
    slow = tmp_path / "slow-python"  # stands in for the interpreter: slow --help, then rc 3
    slow.write_text("#!/bin/sh\nsleep 4\ncase \"$*\" in *--help*) echo --framework;; "
                    "*) exit 3;; esac\n")
    slow.chmod(0o755)
    store.create("t", validate_create({**REQUEST, "InputConfig": {
        "S3Uri": str(model), "Framework": "ONNX"}, "OutputConfig": {
        "S3OutputLocation": str(tmp_path / "out"), "TargetDevice": "ml_c5"}}), "arn:j1",
        active_limit=5)
    row = store.claim_next()
    executor = LocalExecutor(store, ExecutorConfig(state_dir=tmp_path / "state", concurrency=0,
                                                   python=str(slow)))
    runner = threading.Thread(target=executor.run, args=(row,))
    runner.start()
    reaped = 0
    while runner.is_alive():
        reaped += store.reap(HEARTBEAT_S + 1.5)  # a beat may be late by 1.5 s, not more
        time.sleep(0.25)
    runner.join()
    job = store.by_id(row.id)
    assert reaped == 0
    assert job.status == "FAILED"
    assert "stopped responding" not in job.record["FailureReason"]
    assert "(exit status 3)" in job.record["FailureReason"], job.record["FailureReason"]
