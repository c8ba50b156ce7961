"""The SageMaker JSON 1.1 front door: ``POST /`` with ``X-Amz-Target: SageMaker.<Operation>``.

Signed with SigV4 (verified in :mod:`kiln.service.auth`); errors are AWS's shape
``{"__type": "ResourceNotFound", "message": ...}``; timestamps are epoch seconds, as botocore
expects from a JSON-protocol service.
"""

from __future__ import annotations

import json
import uuid

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from kiln.jobs.model import JobError
from kiln.service.auth import AuthError
from kiln.service.operations import Caller

CONTENT_TYPE = "application/x-amz-json-1.1"
OPERATIONS = {"CreateCompilationJob": "create", "DescribeCompilationJob": "describe",
              "ListCompilationJobs": "list", "StopCompilationJob": "stop",
              "DeleteCompilationJob": "delete"}


def aws_error(kind: str, message: str, status: int) -> JSONResponse:
    return JSONResponse({"__type": kind, "message": message}, status_code=status,
                        media_type=CONTENT_TYPE, headers={"x-amzn-ErrorType": kind,
                                                          "x-amzn-RequestId": str(uuid.uuid4())})


def router(state) -> APIRouter:
    """``state`` carries ``keyring``, ``ops`` and ``settings`` (see :mod:`kiln.service.app`)."""
    api = APIRouter()

    @api.post("/", include_in_schema=False)
    async def sagemaker(request: Request):
        try:
            body = await read_body(request, state.settings.max_request_bytes)
            key, region = state.keyring.sigv4(
                request.method, request.scope.get("raw_path", b"/").decode(),
                request.url.query, {k.lower(): v for k, v in request.headers.items()}, body)
        except AuthError as exc:
            return aws_error(exc.kind, exc.message, exc.status)
        except JobError as exc:
            return aws_error(exc.kind, exc.message, exc.http_status)
        target = request.headers.get("x-amz-target", "")
        service, _, name = target.partition(".")
        if service != "SageMaker" or name not in OPERATIONS:
            return aws_error("UnknownOperationException", f"operation {target!r} is not served "
                             f"here; Kiln serves {', '.join(sorted(OPERATIONS))}", 400)
        try:
            payload = json.loads(body or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            return aws_error("SerializationException", "the request body is not valid JSON", 400)
        op = getattr(state.ops, OPERATIONS[name])
        try:
            result = await run_in_threadpool(op, Caller(key, region), payload)
        except JobError as exc:
            return aws_error(exc.kind, exc.message, exc.http_status)
        return JSONResponse(result, media_type=CONTENT_TYPE,
                            headers={"x-amzn-RequestId": str(uuid.uuid4())})

    return api


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (``ValidationException``, 413) past ``limit`` bytes."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise JobError("RequestTooLarge", f"the request body is {length} bytes; the limit is {limit}")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise JobError("RequestTooLarge", f"the request body is over the limit of {limit} bytes")
    return body
