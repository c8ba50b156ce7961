"""The job store on a real PostgreSQL server (started by the tests, see ``postgres.py``):
Alembic on an empty database, the same API checks as with SQLite, restart recovery, and a
real compile through `kiln serve --db-url postgresql+psycopg://... --broker redis://...` and a
`kiln worker`."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import httpx
import pytest

from kiln.jobs.model import validate_create
from kiln.jobs.store import JobStore, migrate
from kiln.service.auth import new_key

from .live import LiveServer, free_port
from .postgres import PostgresServer, pg_bin_dir
from .test_service_celery import redis_url  # noqa: F401 (a fixture)
from .test_service_api import test_describe_returns_the_request_as_given as _describe_checks
from .test_service_api import test_fifty_concurrent_creates_none_lost_or_duplicated as _burst
from .test_service_api import test_list_filters_sort_and_paginator as _list_checks
from .test_service_compile import _create
from .test_service_rest import test_rest_create_describe_list_stop_delete as _rest_checks
from .test_service_store import REQUEST

pytestmark = [pytest.mark.service, pytest.mark.skipif(
    pg_bin_dir() is None and not os.environ.get("CI"),
    reason="needs the PostgreSQL server (apt: postgresql); CI installs it")]
KILN = str(Path(sys.executable).parent / "kiln")


@pytest.fixture(scope="module")
def pg():
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="module")
def pg_queue_server(pg, tmp_path_factory, keys):
    """The service on PostgreSQL with no compile worker (jobs stay queued)."""
    state = tmp_path_factory.mktemp("pg-queue")
    with LiveServer(state, list(keys.values()), workers=0, db_url=pg.database("queue")) as srv:
        yield srv


def test_migrations_apply_to_an_empty_postgresql_database(pg):
    import sqlalchemy as sa

    url = pg.database("empty")
    engine = sa.create_engine(url)
    with engine.connect() as con:
        assert sa.inspect(con).get_table_names() == []
    migrate(url)
    migrate(url)  # idempotent
    with engine.connect() as con:
        assert con.execute(sa.text("select version_num from alembic_version")).all() == [("0001",)]
        cols = {c["name"]: str(c["type"]) for c in sa.inspect(con).get_columns("compilation_jobs")}
        assert list(cols) == ["id", "tenant", "name", "status", "created_at", "modified_at",
                              "schema_version", "record"]
        assert cols["record"] == "JSON" and cols["created_at"] == "DOUBLE PRECISION"
        store = JobStore(url)
        store.create("pg-t", validate_create(REQUEST), "arn:pg", active_limit=5)
        version, target = con.execute(sa.text(
            "select schema_version, record->'OutputConfig'->>'TargetDevice' from "
            "compilation_jobs where tenant = 'pg-t'")).one()  # a JSON document, not pickle
        assert (version, target) == (1, "rasp4b")
    engine.dispose()
    store.engine.dispose()


def test_list_filters_sort_pagination_stop_delete_on_postgresql(pg_queue_server, keys):
    _list_checks(pg_queue_server, keys)
    _describe_checks(pg_queue_server, keys)
    _rest_checks(pg_queue_server, keys)


def test_fifty_concurrent_creates_on_postgresql(pg_queue_server, keys):
    _burst(pg_queue_server, keys)


def test_restart_recovery_on_postgresql(pg, tmp_path):
    key = new_key("team-pg-r")
    url = pg.database("restart")
    migrate(url)
    store = JobStore(url)
    for name in ("pg-was-running", "pg-was-queued"):
        store.create("team-pg-r", validate_create({**REQUEST, "CompilationJobName": name}),
                     f"arn:{name}", active_limit=5)
    running = store.claim_next()
    assert running.name == "pg-was-running" and store.claim(running.id) is None  # claimed once
    store.engine.dispose()
    with LiveServer(tmp_path, [key], workers=0, db_url=url) as srv:
        client = srv.client(key)
        job = client.describe_compilation_job(CompilationJobName="pg-was-running")
        assert job["CompilationJobStatus"] == "FAILED"
        assert job["FailureReason"].startswith("ServerError: the Kiln server restarted")
        assert client.describe_compilation_job(CompilationJobName="pg-was-queued")[
            "CompilationJobStatus"] == "STARTING"


def _wait_health(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.time() + 60
    while True:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.time() < deadline and proc.poll() is None, log.read_text()
        time.sleep(0.2)


@pytest.mark.skipif(shutil.which("redis-server") is None and not os.environ.get("CI"),
                    reason="needs redis-server (apt); CI installs it")
def test_compile_through_kiln_serve_and_worker_on_postgresql(pg, redis_url, keys, models,
                                                             tmp_path):
    import boto3

    db_url = pg.database("compile")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "KILN_ACCESS_KEYS": json.dumps([asdict(k) for k in keys.values()])}
    procs = []
    try:
        log = tmp_path / "serve.log"
        procs.append(subprocess.Popen(
            [KILN, "serve", "--port", str(port), "--state-dir", str(tmp_path / "state"),
             "--db-url", db_url, "--broker", redis_url], env=env,
            stdout=open(log, "wb"), stderr=subprocess.STDOUT))
        _wait_health(url, procs[0], log)
        procs.append(subprocess.Popen(
            [KILN, "worker", "--broker", redis_url, "--db-url", db_url, "--state-dir",
             str(tmp_path / "worker")], stdout=open(tmp_path / "worker.log", "wb"),
            stderr=subprocess.STDOUT))
        client = boto3.client("sagemaker", endpoint_url=url, region_name="us-west-2",
                              aws_access_key_id=keys["a"].access_key_id,
                              aws_secret_access_key=keys["a"].secret_access_key)
        _create(client, "pg-mlp", f"file://{models}/mlp.onnx", f"file://{tmp_path}/out",
                platform={"Os": "LINUX", "Arch": "X86_64"})
        deadline = time.time() + 240
        while True:
            job = client.describe_compilation_job(CompilationJobName="pg-mlp")
            if job["CompilationJobStatus"] not in ("STARTING", "INPROGRESS"):
                break
            assert time.time() < deadline, (tmp_path / "worker.log").read_text()
            time.sleep(0.5)
        assert job["CompilationJobStatus"] == "COMPLETED", job.get("FailureReason")
        artifact = tmp_path / "out" / "mlp-LINUX_X86_64.tar.gz"
        assert job["ModelDigests"]["ArtifactDigest"] == hashlib.blake2b(
            artifact.read_bytes()).hexdigest()
        assert job["CreationTime"] <= job["CompilationStartTime"] < job["CompilationEndTime"]
        import kiln

        assert kiln.load(artifact) is not None
        listed = client.list_compilation_jobs(StatusEquals="COMPLETED")["CompilationJobSummaries"]
        assert [s["CompilationJobName"] for s in listed] == ["pg-mlp"]
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(timeout=30)


def _names(store, tenant, **kw) -> list[str]:
    rows, _ = store.list(tenant, filters=kw.pop("filters", {}), sort_by="Name",
                         offset=0, limit=100, **kw)
    return [r.name for r in rows]


def test_name_filter_and_sort_match_sqlite_whatever_the_collation(pg, tmp_path):
    """NameContains ignores case and SortBy=Name is bytewise on both backends, also on a
    PostgreSQL database whose collation is en-US (where ORDER BY puts 'alpha' before 'Beta')."""
    sqlite = f"sqlite:///{tmp_path / 'j.sqlite'}"
    for url in (sqlite, pg.database("english", icu_locale="en-US")):
        migrate(url)
        store = JobStore(url)
        for name in ("Beta-2", "alpha-1", "ALPHA-3", "a-b", "ab"):
            store.create("t", validate_create({**REQUEST, "CompilationJobName": name}),
                         f"arn:{name}", active_limit=10)
        assert _names(store, "t", descending=False) == ["ALPHA-3", "Beta-2", "a-b", "ab",
                                                         "alpha-1"], url
        assert _names(store, "t", descending=True) == ["alpha-1", "ab", "a-b", "Beta-2",
                                                        "ALPHA-3"], url
        assert _names(store, "t", descending=False, filters={"NameContains": "Alpha"}) == [
            "ALPHA-3", "alpha-1"], url
        assert _names(store, "t", descending=False, filters={"NameContains": "a-"}) == [
            "ALPHA-3", "Beta-2", "a-b", "alpha-1"], url
        store.engine.dispose()
