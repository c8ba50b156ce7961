"""`kiln jobs ...` and the Python REST client against a live (queue-only) server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kiln.errors import ERROR_CODES, KilnError
from kiln.service.client import JobsClient

pytestmark = pytest.mark.service
KILN = str(Path(sys.executable).parent / "kiln")


def test_python_client(queue_server, keys):
    jobs = JobsClient(queue_server.url, token=keys["b"].bearer_token)
    arn = jobs.create("client-one", model="s3://b/m.onnx", output="s3://b/o",
                      platform={"Os": "LINUX", "Arch": "ARM64"}, input_shapes='{"x": [1, 64]}',
                      tags={"team": "b"})
    assert arn.endswith(":compilation-job/client-one")
    job = jobs.describe("client-one")
    assert job["Tags"] == [{"Key": "team", "Value": "b"}]
    assert job["InputConfig"]["DataInputConfig"] == '{"x": [1, 64]}'
    assert [r["CompilationJobName"] for r in jobs.list(name_contains="client-")] == ["client-one"]
    jobs.stop("client-one")
    assert jobs.wait("client-one", timeout_s=5)["CompilationJobStatus"] == "STOPPED"
    jobs.delete("client-one")
    with pytest.raises(KilnError) as info:
        jobs.describe("client-one")
    assert info.value.code == "job_request_failed" and "not_found" in info.value.message
    with pytest.raises(KilnError) as info:
        JobsClient(queue_server.url, token="wrong").list()
    assert "unauthorized" in info.value.message


def test_kiln_jobs_commands(queue_server, keys):
    env = {**os.environ, "KILN_URL": queue_server.url, "KILN_TOKEN": keys["a"].bearer_token}

    def kiln(*args):
        return subprocess.run([KILN, "jobs", *args], env=env, capture_output=True, text=True,
                              timeout=60)

    out = kiln("create", "cli-job", "--model", "/data/m.onnx", "--output", "/data/out",
               "--target", "rasp4b", "--max-runtime", "60")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith(":compilation-job/cli-job")
    job = json.loads(kiln("describe", "cli-job").stdout)
    assert job["OutputConfig"]["TargetDevice"] == "rasp4b"
    assert job["StoppingCondition"]["MaxRuntimeInSeconds"] == 60
    listed = kiln("list", "--name-contains", "cli-job").stdout.split()
    assert listed[:3] == ["cli-job", "STARTING", "rasp4b"]
    assert kiln("stop", "cli-job").returncode == 0
    assert kiln("delete", "cli-job").returncode == 0
    out = kiln("describe", "cli-job")
    assert out.returncode == ERROR_CODES["job_request_failed"].exit_status
    assert "error[job_request_failed]: not_found: Could not find compilation job 'cli-job'" in out.stderr
    out = kiln("create", "bad_name", "--model", "/m.onnx", "--output", "/o", "--target", "ml_c5")
    assert out.returncode == 60 and "validation_error" in out.stderr
