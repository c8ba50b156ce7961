"""The REST front door: /v1/compilation-jobs with bearer tokens, JSON errors, OpenAPI."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest

pytestmark = pytest.mark.service


def _job(name, **out):
    return {"CompilationJobName": name, "RoleArn": "arn:aws:iam::1:role/r",
            "InputConfig": {"S3Uri": "s3://b/m.onnx", "Framework": "ONNX"},
            "OutputConfig": {"S3OutputLocation": "s3://b/o", **(out or {"TargetDevice": "ml_c5"})}}


def test_rest_create_describe_list_stop_delete(queue_server, keys):
    api = httpx.Client(base_url=queue_server.url + "/v1",
                       headers={"Authorization": f"Bearer {keys['a'].bearer_token}"})
    r = api.post("/compilation-jobs", json=_job("rest-one"))
    assert r.status_code == 201 and r.json()["CompilationJobArn"].endswith("/rest-one")
    r = api.post("/compilation-jobs", json=_job("rest-one"))
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    r = api.post("/compilation-jobs", json=_job("rest_bad"))
    assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error"
    r = api.post("/compilation-jobs", content=b"{oops", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    job = api.get("/compilation-jobs/rest-one").json()
    assert job["CompilationJobStatus"] == "STARTING"
    created = dt.datetime.fromisoformat(job["CreationTime"])
    assert created.tzinfo is not None
    assert abs((dt.datetime.now(dt.timezone.utc) - created).total_seconds()) < 60
    api.post("/compilation-jobs", json=_job("rest-two", TargetPlatform={"Os": "LINUX",
                                                                        "Arch": "X86_64"}))
    page = api.get("/compilation-jobs", params={"name_contains": "rest-", "max_results": 1}).json()
    assert [s["CompilationJobName"] for s in page["CompilationJobSummaries"]] == ["rest-one"]
    page = api.get("/compilation-jobs", params={"name_contains": "rest-", "max_results": 1,
                                                "next_token": page["NextToken"]}).json()
    assert [s["CompilationJobName"] for s in page["CompilationJobSummaries"]] == ["rest-two"]
    assert "NextToken" not in page
    page = api.get("/compilation-jobs", params={"created_after": job["CreationTime"],
                                                "name_contains": "rest-"}).json()
    assert [s["CompilationJobName"] for s in page["CompilationJobSummaries"]] == ["rest-two"]
    r = api.get("/compilation-jobs", params={"max_results": 500})
    assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error"
    assert api.post("/compilation-jobs/rest-one/stop").status_code == 200
    assert api.get("/compilation-jobs/rest-one").json()["CompilationJobStatus"] == "STOPPED"
    assert api.get("/compilation-jobs/rest-one/logs").text == ""
    assert api.delete("/compilation-jobs/rest-one").status_code == 200
    r = api.get("/compilation-jobs/rest-one")
    assert r.status_code == 404 and r.json() == {"error": {
        "code": "not_found", "message": "Could not find compilation job 'rest-one'"}}
    r = api.delete("/compilation-jobs/rest-two")
    assert r.status_code == 400 and "STARTING" in r.json()["error"]["message"]


def test_rest_tokens_and_openapi(queue_server, keys):
    r = httpx.get(queue_server.url + "/v1/compilation-jobs",
                  headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = httpx.get(queue_server.url + "/v1/compilation-jobs",
                  headers={"Authorization": keys["a"].secret_access_key})
    assert r.status_code == 401
    schema = httpx.get(queue_server.url + "/v1/openapi.json", headers={
        "Authorization": f"Bearer {keys['b'].bearer_token}"}).json()
    assert {"/v1/compilation-jobs", "/v1/compilation-jobs/{name}",
            "/v1/compilation-jobs/{name}/stop", "/v1/compilation-jobs/{name}/logs"} <= set(schema["paths"])
    body = schema["paths"]["/v1/compilation-jobs"]["post"]["requestBody"]
    assert "CompilationJobName" in str(body)
