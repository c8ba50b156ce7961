"""Jobs that really compile, driven by boto3's sagemaker client against a live server."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import onnx_reference
from .live import wait_for

pytestmark = pytest.mark.service
ROLE = "arn:aws:iam::123456789012:role/kiln"


def _create(client, name, uri, output, *, device=None, platform=None, data=None, seconds=600,
            framework="ONNX"):
    inp = {"S3Uri": uri, "Framework": framework}
    if data:
        inp["DataInputConfig"] = data
    out = {"S3OutputLocation": output}
    out.update({"TargetDevice": device} if device else {"TargetPlatform": platform})
    return client.create_compilation_job(
        CompilationJobName=name, RoleArn=ROLE, InputConfig=inp, OutputConfig=out,
        StoppingCondition={"MaxRuntimeInSeconds": seconds}, Tags=[{"Key": "team", "Value": "a"}])


def _blake2(data: bytes) -> str:
    return hashlib.blake2b(data).hexdigest()


def test_host_and_rasp4b_jobs_complete(server, keys, models, s3, tmp_path):
    import kiln

    client = server.client(keys["a"])
    _, s3c = s3
    s3c.upload_file(str(models / "mlp.tar.gz"), "models", "in/mlp.tar.gz")
    host = _create(client, "mlp-host", f"file://{models}/mlp.onnx", f"file://{tmp_path}/out",
                   platform={"Os": "LINUX", "Arch": "X86_64"})
    arm = _create(client, "mlp-rasp4b", "s3://models/in/mlp.tar.gz", "s3://models/out/",
                  device="rasp4b", data='{"x": [1, 64]}')
    assert host["CompilationJobArn"].startswith("arn:aws:sagemaker:us-west-2:")
    assert host["CompilationJobArn"].endswith(":compilation-job/mlp-host")

    job = wait_for(client, "mlp-host")
    assert job["CompilationJobStatus"] == "COMPLETED", job.get("FailureReason")
    artifact = Path(job["ModelArtifacts"]["S3ModelArtifacts"][len("file://"):])
    assert artifact == tmp_path / "out" / "mlp-LINUX_X86_64.tar.gz" and artifact.is_file()
    assert job["ModelDigests"]["ArtifactDigest"] == _blake2(artifact.read_bytes())
    assert json.loads(job["DerivedInformation"]["DerivedDataInputConfig"]) == {"x": [1, 64]}
    assert job["CreationTime"] <= job["CompilationStartTime"] < job["CompilationEndTime"]
    assert job["LastModifiedTime"] >= job["CompilationEndTime"]
    assert job["RoleArn"] == ROLE and job["StoppingCondition"]["MaxRuntimeInSeconds"] == 600
    r = httpx.get(f"{server.url}/v1/compilation-jobs/mlp-host/artifact",
                  headers={"Authorization": f"Bearer {keys['a'].bearer_token}"})
    assert r.status_code == 200 and r.content == artifact.read_bytes()
    assert r.headers["content-disposition"] == "attachment; filename=mlp-LINUX_X86_64.tar.gz"
    x = np.load(models / "mlp.x.npy")
    got = kiln.load(artifact).run({"x": x})
    want = onnx_reference(models / "mlp.onnx", {"x": x})
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-4, rtol=1e-3)

    job = wait_for(client, "mlp-rasp4b")
    assert job["CompilationJobStatus"] == "COMPLETED", job.get("FailureReason")
    assert job["ModelArtifacts"]["S3ModelArtifacts"] == "s3://models/out/mlp-rasp4b.tar.gz"
    body = s3c.get_object(Bucket="models", Key="out/mlp-rasp4b.tar.gz")["Body"].read()
    assert job["ModelDigests"]["ArtifactDigest"] == _blake2(body)
    r = httpx.get(f"{server.url}/v1/compilation-jobs/mlp-rasp4b/artifact",
                  headers={"Authorization": f"Bearer {keys['a'].bearer_token}"})
    assert r.status_code == 200 and r.content == body
    assert "DerivedInformation" not in job  # the shapes were given
    (tmp_path / "arm.tar.gz").write_bytes(body)
    from kiln.artifact import unpack
    from kiln.artifact.manifest import read_manifest

    manifest = read_manifest(unpack(tmp_path / "arm.tar.gz", tmp_path / "arm"))
    assert manifest.target["name"] == "rasp4b" and manifest.target["spec"]["arch"] == "aarch64"


def test_bad_model_fails_with_neo_reason(server, keys, models, tmp_path):
    client = server.client(keys["a"])
    _create(client, "bad-model", str(models / "bad.onnx"), str(tmp_path), device="ml_c5")
    _create(client, "missing-model", f"file://{models}/nothere.onnx", str(tmp_path), device="ml_c5")
    _create(client, "missing-s3", "s3://models/nothere.tar.gz", str(tmp_path), device="ml_c5")
    _create(client, "keras-model", str(models / "mlp.onnx"), str(tmp_path), device="ml_c5",
            framework="KERAS")
    import onnx
    from test_cli_errors import unsupported_model

    onnx.save(unsupported_model(), tmp_path / "unsup.onnx")
    _create(client, "unsupported-ops", str(tmp_path / "unsup.onnx"), f"{tmp_path}/out",
            platform={"Os": "LINUX", "Arch": "X86_64"})
    job = wait_for(client, "bad-model")
    assert job["CompilationJobStatus"] == "FAILED"
    assert job["FailureReason"].startswith("ClientError: InputConfiguration: "), job["FailureReason"]
    assert "bad.onnx" in job["FailureReason"]
    assert "ModelArtifacts" not in job
    job = wait_for(client, "missing-model")
    assert job["FailureReason"] == (f"ClientError: InputConfiguration: model file "
                                    f"file://{models}/nothere.onnx does not exist")
    job = wait_for(client, "missing-s3")
    assert job["FailureReason"] == ("ClientError: InputConfiguration: S3 object does not exist: "
                                    "s3://models/nothere.tar.gz")
    job = wait_for(client, "keras-model")  # an ONNX file is no Keras model, whatever Kiln reads
    assert job["FailureReason"].startswith("ClientError: InputConfiguration: "), job["FailureReason"]
    job = wait_for(client, "unsupported-ops")
    reason = job["FailureReason"]
    assert reason.startswith("ClientError: InputConfiguration: OperatorNotImplemented: "), reason
    assert all(op in reason for op in ("Celu", "Det", "Frobnicate")) and "Relu" not in reason
    assert not (tmp_path / "out").exists()
    logs = httpx.get(f"{server.url}/v1/compilation-jobs/unsupported-ops/logs",
                     headers={"Authorization": f"Bearer {keys['a'].bearer_token}"}).text
    assert "kiln.cli.main compile" in logs and "error[unsupported_operator]" in logs


def _compile_pids(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd and "kiln.cli.main" in cmd:
            pids.append(int(proc.name))
    return pids


def test_stop_kills_the_running_compile(server, keys, models, tmp_path):
    client = server.client(keys["a"])
    _create(client, "stop-me", str(models / "stopme.onnx"), str(tmp_path), device="ml_c5")
    wait_for(client, "stop-me", statuses=("INPROGRESS",), timeout=120)
    deadline = time.time() + 60
    while not _compile_pids("stopme.onnx") and time.time() < deadline:
        time.sleep(0.1)
    assert _compile_pids("stopme.onnx"), "the compile subprocess never started"
    client.stop_compilation_job(CompilationJobName="stop-me")
    assert client.describe_compilation_job(CompilationJobName="stop-me")[
        "CompilationJobStatus"] in ("STOPPING", "STOPPED")
    job = wait_for(client, "stop-me", timeout=60)
    assert job["CompilationJobStatus"] == "STOPPED"
    assert "CompilationEndTime" in job and not _compile_pids("stopme.onnx")
    assert not list(tmp_path.iterdir())
    client.delete_compilation_job(CompilationJobName="stop-me")


def test_max_runtime_fails_the_job_with_neo_timeout(server, keys, models, tmp_path):
    client = server.client(keys["a"])
    _create(client, "too-slow", str(models / "slow.onnx"), str(tmp_path), device="ml_c5",
            seconds=2)
    job = wait_for(client, "too-slow", timeout=120)
    assert job["CompilationJobStatus"] == "FAILED"
    assert job["FailureReason"] == ("ClientError: TimeOut: the compilation job did not complete "
                                    "within MaxRuntimeInSeconds (2 s) and was stopped")
    took = (job["CompilationEndTime"] - job["CompilationStartTime"]).total_seconds()
    assert 2 <= took < 20 and not _compile_pids("slow.onnx") and not list(tmp_path.iterdir())


def test_a_compile_killed_mid_job_fails_the_job(server, keys, models, tmp_path):
    import os
    import signal

    client = server.client(keys["a"])
    _create(client, "kill-me", str(models / "killme.onnx"), str(tmp_path), device="ml_c5")
    deadline = time.time() + 120
    while not _compile_pids("killme.onnx") and time.time() < deadline:
        time.sleep(0.1)
    for pid in _compile_pids("killme.onnx"):
        os.kill(pid, signal.SIGKILL)
    job = wait_for(client, "kill-me", timeout=60)
    assert job["CompilationJobStatus"] == "FAILED"
    assert job["FailureReason"] == ("ServerError: the compile process ended without a result "
                                    "(exit status -9)")
