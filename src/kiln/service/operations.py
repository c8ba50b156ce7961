"""The five compilation-job operations, shared by both front doors (SageMaker JSON and REST).

Requests and responses use Neo's field names; timestamps are epoch seconds here, and each
front door renders them its own way. Every call is scoped to the caller's tenant.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass

from kiln.jobs.model import STATUSES, JobError, check_name, invalid, now, validate_create
from kiln.jobs.store import SORT_COLUMNS, JobRow, JobStore
from kiln.service.auth import AccessKey

TIME_FIELDS = ("CreationTime", "LastModifiedTime", "CompilationStartTime", "CompilationEndTime",
               "CreationTimeAfter", "CreationTimeBefore", "LastModifiedTimeAfter",
               "LastModifiedTimeBefore")
DEFAULT_MAX_RESULTS = 10


@dataclass(frozen=True)
class Caller:
    key: AccessKey
    region: str

    @property
    def tenant(self) -> str:
        return self.key.tenant

    def arn(self, name: str) -> str:
        return f"arn:aws:sagemaker:{self.region}:{self.key.account}:compilation-job/{name}"


@dataclass(frozen=True)
class Limits:
    max_active_jobs: int = 100
    default_max_runtime_s: int = 900


class Operations:
    def __init__(self, store: JobStore, limits: Limits, submit=lambda _job_id: None) -> None:
        self.store, self.limits, self.submit = store, limits, submit

    def create(self, caller: Caller, req: dict) -> dict:
        job = validate_create(req, default_max_runtime=self.limits.default_max_runtime_s)
        row = self.store.create(caller.tenant, job, caller.arn(job.name),
                                active_limit=self.limits.max_active_jobs)
        try:
            self.submit(row.id)
        except Exception as exc:  # the broker is away: the job must not wait forever
            self.store.change(row.id, "FAILED", CompilationEndTime=now(), FailureReason=(
                f"ServerError: the job queue is unavailable: {type(exc).__name__}: {exc}")[:1024])
        return {"CompilationJobArn": row.record["CompilationJobArn"]}

    def describe(self, caller: Caller, req: dict) -> dict:
        return self.store.get(caller.tenant, _name(req)).describe()

    def stop(self, caller: Caller, req: dict) -> dict:
        self.store.request_stop(caller.tenant, _name(req))
        return {}

    def delete(self, caller: Caller, req: dict) -> dict:
        self.store.delete(caller.tenant, _name(req))
        return {}

    def list(self, caller: Caller, req: dict) -> dict:
        filters, sort_by, descending, limit = _list_args(req)
        fingerprint = hashlib.sha256(json.dumps([filters, sort_by, descending],
                                                sort_keys=True).encode()).hexdigest()[:16]
        offset = _offset(req.get("NextToken"), fingerprint)
        rows, more = self.store.list(caller.tenant, filters=filters, sort_by=sort_by,
                                     descending=descending, offset=offset, limit=limit)
        out: dict = {"CompilationJobSummaries": [summary(r) for r in rows]}
        if more:
            token = json.dumps({"o": offset + limit, "q": fingerprint}).encode()
            out["NextToken"] = base64.urlsafe_b64encode(token).decode()
        return out

    def logs(self, caller: Caller, name: str) -> JobRow:
        return self.store.get(caller.tenant, name)


def summary(row: JobRow) -> dict:
    rec = row.record
    out = {"CompilationJobName": row.name, "CompilationJobArn": rec["CompilationJobArn"],
           "CreationTime": row.created_at, "LastModifiedTime": row.modified_at,
           "CompilationJobStatus": row.status}
    for key in ("CompilationStartTime", "CompilationEndTime"):
        if rec.get(key) is not None:
            out[key] = rec[key]
    outp = rec["OutputConfig"]
    if outp.get("TargetDevice"):
        out["CompilationTargetDevice"] = outp["TargetDevice"]
    for key, value in (outp.get("TargetPlatform") or {}).items():
        out[f"CompilationTargetPlatform{key}"] = value
    return out


def _name(req: dict) -> str:
    if not isinstance(req, dict):
        raise JobError("ValidationException", "the request body must be a JSON object")
    return check_name(req.get("CompilationJobName"))


def _list_args(req: dict) -> tuple[dict, str, bool, int]:
    if not isinstance(req, dict):
        raise JobError("ValidationException", "the request body must be a JSON object")
    filters = {}
    if req.get("NameContains") is not None:
        value = req["NameContains"]
        if not isinstance(value, str) or len(value) > 63:
            raise invalid("nameContains", value, "Member must have length less than or equal to 63")
        filters["NameContains"] = value
    if req.get("StatusEquals") is not None:
        if req["StatusEquals"] not in STATUSES:
            raise invalid("statusEquals", req["StatusEquals"],
                          f"Member must satisfy enum value set: [{', '.join(STATUSES)}]")
        filters["StatusEquals"] = req["StatusEquals"]
    for key in TIME_FIELDS[4:]:
        if req.get(key) is not None:
            if not isinstance(req[key], (int, float)) or isinstance(req[key], bool):
                raise invalid(key[0].lower() + key[1:], req[key], "Member must be a timestamp")
            filters[key] = float(req[key])
    sort_by = req.get("SortBy") or "CreationTime"
    if sort_by not in SORT_COLUMNS:
        raise invalid("sortBy", sort_by, "Member must satisfy enum value set: [Name, "
                      "CreationTime, Status]")
    order = req.get("SortOrder") or "Ascending"
    if order not in ("Ascending", "Descending"):
        raise invalid("sortOrder", order, "Member must satisfy enum value set: [Ascending, "
                      "Descending]")
    limit = req.get("MaxResults", DEFAULT_MAX_RESULTS)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 100:
        raise invalid("maxResults", limit, "Member must have value between 1 and 100")
    return filters, sort_by, order == "Descending", limit


def _offset(token, fingerprint: str) -> int:
    if token is None:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(str(token).encode()))
        if data["q"] == fingerprint and isinstance(data["o"], int) and data["o"] >= 0:
            return data["o"]
    except (ValueError, KeyError, TypeError):
        pass
    raise JobError("ValidationException", "NextToken is not valid for this request; repeat the "
                   "request with the same filters and sort, without NextToken, to start over")
