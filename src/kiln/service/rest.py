"""The REST front door: ``/v1/compilation-jobs`` with bearer tokens and an OpenAPI schema.

Bodies use Neo's field names; timestamps are ISO 8601 (UTC); errors are
``{"error": {"code": ..., "message": ...}}``.
"""

from __future__ import annotations

import datetime as _dt
from typing import Optional

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict

from kiln.jobs.executor import log_path
from kiln.jobs.model import JobError
from kiln.service.auth import AuthError
from kiln.service.operations import TIME_FIELDS, Caller
from kiln.service.sagemaker import read_body

#: AWS error type -> (REST code, HTTP status)
REST_ERRORS = {"ValidationException": ("validation_error", 400),
               "ResourceNotFound": ("not_found", 404), "ResourceInUse": ("conflict", 409),
               "ResourceLimitExceeded": ("limit_exceeded", 429),
               "RequestTooLarge": ("request_too_large", 413), "Unauthorized": ("unauthorized", 401)}


class _Neo(BaseModel):
    model_config = ConfigDict(extra="allow")


class TargetPlatform(_Neo):
    Os: str
    Arch: str
    Accelerator: Optional[str] = None


class InputConfig(_Neo):
    S3Uri: str
    Framework: str = "ONNX"
    DataInputConfig: Optional[str] = None
    FrameworkVersion: Optional[str] = None


class OutputConfig(_Neo):
    S3OutputLocation: str
    TargetDevice: Optional[str] = None
    TargetPlatform: Optional[TargetPlatform] = None
    CompilerOptions: Optional[str] = None


class StoppingCondition(_Neo):
    MaxRuntimeInSeconds: int = 900


class CreateJob(_Neo):
    """CreateCompilationJob's request, as in Neo."""

    CompilationJobName: str
    RoleArn: Optional[str] = None
    InputConfig: InputConfig
    OutputConfig: OutputConfig
    StoppingCondition: Optional[StoppingCondition] = None
    Tags: Optional[list[dict]] = None


def rest_error(kind: str, message: str) -> JSONResponse:
    code, status = REST_ERRORS.get(kind, ("bad_request", 400))
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def iso(doc: dict) -> dict:
    """Epoch-second timestamps in ``doc`` as ISO 8601 strings (UTC)."""
    return {k: (_dt.datetime.fromtimestamp(v, _dt.timezone.utc).isoformat()
                if k in TIME_FIELDS and isinstance(v, (int, float)) else v)
            for k, v in doc.items()}


def _epoch(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise JobError("ValidationException", f"{text!r} is not a time (ISO 8601 or epoch "
                       "seconds)") from None
    return (when if when.tzinfo else when.replace(tzinfo=_dt.timezone.utc)).timestamp()


def router(state) -> APIRouter:
    api = APIRouter(prefix="/v1")

    def caller(request: Request) -> Caller:
        return Caller(state.keyring.bearer(request.headers.get("authorization")),
                      state.settings.region)

    async def call(request: Request, op: str, payload, status: int = 200):
        try:
            who = caller(request)
            result = await run_in_threadpool(getattr(state.ops, op), who, payload)
        except AuthError as exc:
            return rest_error("Unauthorized", exc.message)
        except JobError as exc:
            return rest_error(exc.kind, exc.message)
        if "CompilationJobSummaries" in result:
            result = {**result, "CompilationJobSummaries": [
                iso(s) for s in result["CompilationJobSummaries"]]}
        return JSONResponse(iso(result), status_code=status)

    @api.post("/compilation-jobs", status_code=201, responses={201: {"description": "the ARN"}},
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": CreateJob.model_json_schema(ref_template="#/components/schemas/"
                                                        "{model}")}}}})
    async def create_job(request: Request):
        """CreateCompilationJob: queue a compile; returns ``{"CompilationJobArn"}``."""
        import json

        try:
            body = json.loads(await read_body(request, state.settings.max_request_bytes) or b"{}")
        except JobError as exc:
            return rest_error(exc.kind, exc.message)
        except (ValueError, UnicodeDecodeError):
            return rest_error("ValidationException", "the request body is not valid JSON")
        return await call(request, "create", body, 201)

    @api.get("/compilation-jobs")
    async def list_jobs(request: Request, name_contains: Optional[str] = None,
                        status: Optional[str] = None, created_after: Optional[str] = None,
                        created_before: Optional[str] = None,
                        modified_after: Optional[str] = None,
                        modified_before: Optional[str] = None,
                        sort_by: str = "CreationTime", sort_order: str = "Ascending",
                        max_results: int = Query(10, ge=1, le=100),
                        next_token: Optional[str] = None):
        """ListCompilationJobs with Neo's filters, sort and pagination."""
        try:
            req = {"NameContains": name_contains, "StatusEquals": status,
                   "CreationTimeAfter": _epoch(created_after),
                   "CreationTimeBefore": _epoch(created_before),
                   "LastModifiedTimeAfter": _epoch(modified_after),
                   "LastModifiedTimeBefore": _epoch(modified_before), "SortBy": sort_by,
                   "SortOrder": sort_order, "MaxResults": max_results, "NextToken": next_token}
        except JobError as exc:
            return rest_error(exc.kind, exc.message)
        return await call(request, "list", {k: v for k, v in req.items() if v is not None})

    @api.get("/compilation-jobs/{name}")
    async def describe_job(request: Request, name: str):
        """DescribeCompilationJob."""
        return await call(request, "describe", {"CompilationJobName": name})

    @api.post("/compilation-jobs/{name}/stop")
    async def stop_job(request: Request, name: str):
        """StopCompilationJob: SIGTERM, then SIGKILL, to the running compile; ends STOPPED."""
        return await call(request, "stop", {"CompilationJobName": name})

    @api.delete("/compilation-jobs/{name}")
    async def delete_job(request: Request, name: str):
        """DeleteCompilationJob (COMPLETED, FAILED or STOPPED jobs only)."""
        return await call(request, "delete", {"CompilationJobName": name})

    @api.get("/compilation-jobs/{name}/logs", response_class=PlainTextResponse)
    async def job_logs(request: Request, name: str):
        """The compile's output (the job's log stream)."""
        try:
            row = await run_in_threadpool(state.ops.logs, caller(request), name)
        except AuthError as exc:
            return rest_error("Unauthorized", exc.message)
        except JobError as exc:
            return rest_error(exc.kind, exc.message)
        path = log_path(state.settings.state_dir, row.id)
        text = path.read_text(errors="replace") if path.exists() else row.record.get("_log", "")
        return PlainTextResponse(text)

    @api.get("/compilation-jobs/{name}/artifact")
    async def job_artifact(request: Request, name: str):
        """The compiled artifact (.tar.gz) of a COMPLETED job, from its output location."""
        from fastapi.responses import StreamingResponse

        from kiln.jobs.locations import open_artifact

        try:
            job = (await run_in_threadpool(state.ops.logs, caller(request), name)).describe()
        except AuthError as exc:
            return rest_error("Unauthorized", exc.message)
        except JobError as exc:
            return rest_error(exc.kind, exc.message)
        uri = job.get("ModelArtifacts", {}).get("S3ModelArtifacts")
        if job["CompilationJobStatus"] != "COMPLETED" or not uri:
            return rest_error("ResourceNotFound", f"job {name} is {job['CompilationJobStatus']}; "
                              "it has no artifact")
        try:
            f = await run_in_threadpool(open_artifact, uri, state.settings.storage_options())
        except OSError as exc:
            return rest_error("ResourceNotFound", f"the artifact {uri} cannot be read: {exc}")

        def chunks():
            with f:
                while block := f.read(1 << 20):
                    yield block

        return StreamingResponse(chunks(), media_type="application/gzip", headers={
            "Content-Disposition": f"attachment; filename={uri.rsplit('/', 1)[-1]}"})

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request):
        try:
            caller(request)
        except AuthError as exc:
            return rest_error("Unauthorized", exc.message)
        return JSONResponse(request.app.openapi())

    return api
