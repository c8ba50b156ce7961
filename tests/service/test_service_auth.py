"""SigV4 for the SageMaker protocol, bearer tokens for REST, and tenants kept apart."""

from __future__ import annotations

import datetime as dt

import botocore.exceptions
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from kiln.service.auth import AuthError, KeyRing

from .test_service_api import create, error_of

pytestmark = pytest.mark.service


def test_unsigned_badly_signed_and_unknown_keys_are_refused(queue_server, keys):
    code, _, status = error_of(queue_server.client(keys["a"], signed=False).list_compilation_jobs)
    assert (code, status) == ("MissingAuthenticationTokenException", 403)
    code, message, status = error_of(
        queue_server.client(keys["a"], secret="not-the-secret").list_compilation_jobs)
    assert (code, status) == ("InvalidSignatureException", 400) and "signature" in message
    code, _, status = error_of(queue_server.client(None).list_compilation_jobs)
    assert (code, status) == ("UnrecognizedClientException", 400)
    r = httpx.post(queue_server.url + "/", content=b"{}", headers={
        "X-Amz-Target": "SageMaker.ListCompilationJobs",
        "Authorization": f"Bearer {keys['a'].bearer_token}"})
    assert (r.status_code, r.json()["__type"]) == (400, "IncompleteSignatureException")


def _signed(key, body=b"{}", *, secret=None):
    req = AWSRequest(method="POST", url="http://127.0.0.1:9/", data=body, headers={
        "X-Amz-Target": "SageMaker.ListCompilationJobs"})
    SigV4Auth(Credentials(key.access_key_id, secret or key.secret_access_key), "sagemaker",
              "eu-west-1").add_auth(req)
    return {k.lower(): v for k, v in req.headers.items()} | {"host": "127.0.0.1:9"}


def test_sigv4_verification_recomputes_botocore_signatures(keys):
    ring = KeyRing([keys["a"], keys["b"]])
    headers = _signed(keys["b"])
    key, region = ring.sigv4("POST", "/", "", headers, b"{}")
    assert (key.tenant, region) == ("team-b", "eu-west-1")
    for change in ({"body": b'{"MaxResults": 5}'}, {"method": "GET"}, {"path": "/x"},
                   {"query": "a=1"}):
        args = {"method": "POST", "path": "/", "query": "", "body": b"{}", **change}
        with pytest.raises(AuthError) as info:
            ring.sigv4(args["method"], args["path"], args["query"], headers, args["body"])
        assert info.value.kind == "InvalidSignatureException"
    with pytest.raises(AuthError) as info:  # same request, 20 minutes later: stale
        ring.sigv4("POST", "/", "", headers, b"{}",
                   now=dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=20))
    assert info.value.kind == "InvalidSignatureException" and "expired" in info.value.message
    with pytest.raises(AuthError) as info:
        ring.sigv4("POST", "/", "", {**headers, "x-amz-target": "SageMaker.DeleteCompilationJob"},
                   b"{}")
    assert info.value.kind == "InvalidSignatureException"  # signed headers cannot be swapped


def test_jobs_are_visible_only_to_their_tenant(queue_server, keys):
    a, b = queue_server.client(keys["a"]), queue_server.client(keys["b"])
    create(a, "secret-job")
    for call in (b.describe_compilation_job, b.stop_compilation_job, b.delete_compilation_job):
        code, message, _ = error_of(call, CompilationJobName="secret-job")
        assert code == "ResourceNotFound" and "secret-job" in message
    listed = b.list_compilation_jobs(NameContains="secret", MaxResults=100)
    assert listed["CompilationJobSummaries"] == []
    assert a.describe_compilation_job(CompilationJobName="secret-job")[
        "CompilationJobStatus"] == "STARTING"
    r = httpx.get(f"{queue_server.url}/v1/compilation-jobs/secret-job",
                  headers={"Authorization": f"Bearer {keys['b'].bearer_token}"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_nothing_is_open_but_health(queue_server):
    r = httpx.get(queue_server.url + "/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    for method, path in (("GET", "/v1/compilation-jobs"), ("GET", "/v1/openapi.json"),
                         ("GET", "/v1/compilation-jobs/x/logs"), ("POST", "/v1/compilation-jobs"),
                         ("DELETE", "/v1/compilation-jobs/x"),
                         ("GET", "/v1/compilation-jobs/x/artifact")):
        r = httpx.request(method, queue_server.url + path)
        assert r.status_code == 401, (method, path)
        assert r.json()["error"]["code"] == "unauthorized"
    page = httpx.get(queue_server.url + "/jobs")  # the page itself holds no data
    assert page.status_code == 200 and "/v1/compilation-jobs" in page.text
    assert "Bearer" in page.text and "CompilationJobName" in page.text
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert httpx.get(queue_server.url + path).status_code in (404, 405)
    with pytest.raises(botocore.exceptions.ClientError):
        queue_server.client(None, signed=False).describe_compilation_job(CompilationJobName="x")
