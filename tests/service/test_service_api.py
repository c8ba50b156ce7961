"""The SageMaker JSON protocol on a server that queues only: validation, errors, listing."""

from __future__ import annotations

import datetime as dt
import json
import time

import botocore.exceptions
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

pytestmark = pytest.mark.service
ROLE = "arn:aws:iam::123456789012:role/kiln"


def create(client, name, *, device="ml_c5", platform=None, **extra):
    out = {"S3OutputLocation": "s3://bucket/out"}
    out.update({"TargetPlatform": platform} if platform else {"TargetDevice": device})
    return client.create_compilation_job(
        CompilationJobName=name, RoleArn=ROLE,
        InputConfig={"S3Uri": "s3://bucket/model.tar.gz", "Framework": "ONNX"},
        OutputConfig=out, StoppingCondition={"MaxRuntimeInSeconds": 900}, **extra)


def error_of(call, **kwargs) -> tuple[str, str, int]:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        call(**kwargs)
    err = info.value.response
    return err["Error"]["Code"], err["Error"]["Message"], err["ResponseMetadata"]["HTTPStatusCode"]


def signed_post(server, key, body: bytes, target="SageMaker.ListCompilationJobs") -> httpx.Response:
    req = AWSRequest(method="POST", url=server.url + "/", data=body, headers={
        "X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1"})
    SigV4Auth(Credentials(key.access_key_id, key.secret_access_key), "sagemaker",
              "us-west-2").add_auth(req)
    return httpx.post(server.url + "/", content=body, headers=dict(req.headers.items()))


@pytest.mark.parametrize("name", ["bad_name", "-lead", "trail-", "a" * 64, "x.y", "a--"])
def test_bad_names_are_validation_errors(queue_server, keys, name):
    code, message, status = error_of(create, client=queue_server.client(keys["a"]), name=name)
    assert (code, status) == ("ValidationException", 400)
    assert f"Value {name!r} at 'compilationJobName'" in message
    assert "[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}" in message


def test_name_reuse_is_resource_in_use_per_tenant(queue_server, keys):
    a, b = queue_server.client(keys["a"]), queue_server.client(keys["b"])
    arn = create(a, "dup-job")["CompilationJobArn"]
    code, message, _ = error_of(create, client=a, name="dup-job")
    assert code == "ResourceInUse" and "dup-job" in message
    assert create(b, "dup-job")["CompilationJobArn"] != arn  # names are unique per tenant
    assert create(a, "a" * 63)["CompilationJobArn"].endswith("/" + "a" * 63)


def test_bad_requests_have_aws_error_types(queue_server, keys):
    client = queue_server.client(keys["a"])
    code, message, _ = error_of(create, client=client, name="no-such-target", device="nosuchboard")
    assert code == "ValidationException" and "unknown_target" in message
    code, message, _ = error_of(
        client.create_compilation_job, CompilationJobName="bad-opts", RoleArn=ROLE,
        InputConfig={"S3Uri": "s3://b/m.tar.gz", "Framework": "ONNX"},
        OutputConfig={"S3OutputLocation": "s3://b/o", "TargetDevice": "rasp4b",
                      "CompilerOptions": '{"no-such-option": 1}'},
        StoppingCondition={"MaxRuntimeInSeconds": 60})
    assert code == "ValidationException" and "invalid_compiler_options" in message
    code, message, _ = error_of(create, client=client, name="bad-platform",
                                platform={"Os": "WINDOWS", "Arch": "X86_64"})
    assert code == "ValidationException" and "targetPlatform.os" in message
    code, message, _ = error_of(
        client.create_compilation_job, CompilationJobName="bad-shapes", RoleArn=ROLE,
        InputConfig={"S3Uri": "s3://b/m.tar.gz", "Framework": "ONNX", "DataInputConfig": "{x: 1"},
        OutputConfig={"S3OutputLocation": "s3://b/o", "TargetDevice": "ml_c5"},
        StoppingCondition={"MaxRuntimeInSeconds": 60})
    assert code == "ValidationException" and "DataInputConfig is not valid JSON" in message
    code, message, _ = error_of(
        client.create_compilation_job, CompilationJobName="both-targets", RoleArn=ROLE,
        InputConfig={"S3Uri": "s3://b/m.tar.gz", "Framework": "ONNX"},
        OutputConfig={"S3OutputLocation": "s3://b/o", "TargetDevice": "ml_c5",
                      "TargetPlatform": {"Os": "LINUX", "Arch": "ARM64"}},
        StoppingCondition={"MaxRuntimeInSeconds": 60})
    assert code == "ValidationException" and "exactly one of TargetDevice" in message
    code, message, status = error_of(client.describe_compilation_job, CompilationJobName="nope")
    assert (code, status) == ("ResourceNotFound", 400) and "nope" in message
    for call in (client.stop_compilation_job, client.delete_compilation_job):
        assert error_of(call, CompilationJobName="nope")[0] == "ResourceNotFound"
    create(client, "queued-job")
    code, message, _ = error_of(client.delete_compilation_job, CompilationJobName="queued-job")
    assert code == "ValidationException" and "STARTING" in message


def test_raw_protocol_errors(queue_server, keys):
    r = signed_post(queue_server, keys["a"], b"{not json")
    assert (r.status_code, r.json()["__type"]) == (400, "SerializationException")
    r = signed_post(queue_server, keys["a"], b"{}", target="SageMaker.CreateTrainingJob")
    assert (r.status_code, r.json()["__type"]) == (400, "UnknownOperationException")
    r = signed_post(queue_server, keys["a"], b'{"x": "' + b"y" * 70000 + b'"}')
    assert (r.status_code, r.json()["__type"]) == (413, "RequestTooLarge")
    r = signed_post(queue_server, keys["a"], b'{"CompilationJobName": ""}',
                    target="SageMaker.DescribeCompilationJob")
    assert (r.status_code, r.json()["__type"]) == (400, "ValidationException")
    r = signed_post(queue_server, keys["a"], b"{}")
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-amz-json-1.1"
    assert isinstance(r.json()["CompilationJobSummaries"], list)


def _next_second() -> dt.datetime:
    """Sleep past the next whole second; return that second (botocore sends whole seconds)."""
    target = int(time.time()) + 1
    time.sleep(target + 0.05 - time.time())
    return dt.datetime.fromtimestamp(target, dt.timezone.utc)


def test_list_filters_sort_and_paginator(queue_server, keys):
    client = queue_server.client(keys["b"])
    first = ["lst-alpha-1", "lst-beta-2", "lst-alpha-3"]
    second = ["lst-gamma-4", "lst-beta-5", "lst-alpha-6", "lst-delta-7"]
    for name in first:
        create(client, name)
    mid = _next_second()
    for i, name in enumerate(second):
        create(client, name, **({"device": "rasp4b"} if i % 2 else {
            "platform": {"Os": "LINUX", "Arch": "ARM64"}}))
    stop_mark = _next_second()
    client.stop_compilation_job(CompilationJobName="lst-beta-2")
    client.stop_compilation_job(CompilationJobName="lst-alpha-6")

    def names(**kw):
        pages = client.get_paginator("list_compilation_jobs").paginate(
            NameContains="lst-", **kw)
        return [s["CompilationJobName"] for p in pages for s in p["CompilationJobSummaries"]]

    pages = list(client.get_paginator("list_compilation_jobs").paginate(
        NameContains="lst-", PaginationConfig={"PageSize": 3}))
    assert [len(p["CompilationJobSummaries"]) for p in pages] == [3, 3, 1]
    assert [s["CompilationJobName"] for p in pages for s in p["CompilationJobSummaries"]] == \
        first + second
    assert names(SortBy="Name", SortOrder="Descending") == sorted(first + second, reverse=True)
    assert names(SortBy="CreationTime", SortOrder="Descending") == (first + second)[::-1]
    by_status = names(SortBy="Status")
    assert by_status[:5] == [n for n in first + second if n not in ("lst-beta-2", "lst-alpha-6")]
    assert by_status[5:] == ["lst-beta-2", "lst-alpha-6"]
    assert names(StatusEquals="STOPPED") == ["lst-beta-2", "lst-alpha-6"]
    assert [s["CompilationJobName"] for s in client.list_compilation_jobs(
        NameContains="alpha")["CompilationJobSummaries"]] == ["lst-alpha-1", "lst-alpha-3", "lst-alpha-6"]
    assert names(CreationTimeAfter=mid) == second
    assert names(CreationTimeBefore=mid) == first
    assert names(LastModifiedTimeAfter=stop_mark) == ["lst-beta-2", "lst-alpha-6"]
    assert names(LastModifiedTimeBefore=stop_mark, StatusEquals="STARTING") == \
        [n for n in first + second if n not in ("lst-beta-2", "lst-alpha-6")]
    page = client.list_compilation_jobs(NameContains="lst-gamma")["CompilationJobSummaries"]
    assert page[0]["CompilationTargetPlatformOs"] == "LINUX"
    assert page[0]["CompilationTargetPlatformArch"] == "ARM64"
    assert page[0]["CompilationJobStatus"] == "STARTING"
    assert isinstance(page[0]["CreationTime"], dt.datetime)
    page = client.list_compilation_jobs(NameContains="lst-beta-5")["CompilationJobSummaries"]
    assert page[0]["CompilationTargetDevice"] == "rasp4b"
    first_page = client.list_compilation_jobs(NameContains="lst-", MaxResults=2)
    code, message, _ = error_of(client.list_compilation_jobs, NameContains="lst-", MaxResults=2,
                                SortBy="Name", NextToken=first_page["NextToken"])
    assert code == "ValidationException" and "NextToken" in message
    code, _, _ = error_of(client.list_compilation_jobs, MaxResults=101)
    assert code == "ValidationException"
    # a queued job stops at once; a stopped job can be deleted, and is then gone
    job = client.describe_compilation_job(CompilationJobName="lst-beta-2")
    assert job["CompilationJobStatus"] == "STOPPED" and "CompilationEndTime" in job
    client.delete_compilation_job(CompilationJobName="lst-beta-2")
    assert error_of(client.describe_compilation_job, CompilationJobName="lst-beta-2")[0] == \
        "ResourceNotFound"


def test_describe_returns_the_request_as_given(queue_server, keys):
    client = queue_server.client(keys["a"])
    client.create_compilation_job(
        CompilationJobName="echo-job", RoleArn=ROLE,
        InputConfig={"S3Uri": "s3://b/m.tar.gz", "Framework": "ONNX",
                     "DataInputConfig": '{"x": [1, 3, 8, 8]}'},
        OutputConfig={"S3OutputLocation": "s3://b/o", "TargetPlatform": {
            "Os": "LINUX", "Arch": "ARM64"}, "CompilerOptions": '{"mcpu": "cortex-a72"}'},
        StoppingCondition={"MaxRuntimeInSeconds": 123}, Tags=[{"Key": "k", "Value": "v"}])
    job = client.describe_compilation_job(CompilationJobName="echo-job")
    assert job["CompilationJobStatus"] == "STARTING" and job["RoleArn"] == ROLE
    assert job["InputConfig"]["DataInputConfig"] == '{"x": [1, 3, 8, 8]}'
    assert job["OutputConfig"]["CompilerOptions"] == '{"mcpu": "cortex-a72"}'
    assert job["OutputConfig"]["TargetPlatform"] == {"Os": "LINUX", "Arch": "ARM64"}
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 123}
    assert job["CreationTime"].tzinfo is not None
    assert abs(job["CreationTime"].timestamp() - time.time()) < 30
    json.dumps(job, default=str)


def test_fifty_concurrent_creates_none_lost_or_duplicated(queue_server, keys):
    from concurrent.futures import ThreadPoolExecutor

    names = [f"burst-{i:02d}" for i in range(50)] + ["burst-07"] * 5
    clients = [queue_server.client(keys["a"]) for _ in range(8)]

    def submit(i_name):
        i, name = i_name
        try:
            return create(clients[i % 8], name)["CompilationJobArn"]
        except botocore.exceptions.ClientError as exc:
            return exc.response["Error"]["Code"]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(submit, enumerate(names)))
    arns = [r for r in results if r.startswith("arn:")]
    assert len(arns) == len(set(arns)) == 50 and results.count("ResourceInUse") == 5
    pages = queue_server.client(keys["a"]).get_paginator("list_compilation_jobs").paginate(
        NameContains="burst-", SortBy="Name")
    listed = [s["CompilationJobName"] for p in pages for s in p["CompilationJobSummaries"]]
    assert listed == sorted(set(names))
