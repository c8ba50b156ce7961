"""The compilation job as Neo defines it: request validation, statuses, and the job record.

A job is stored as one JSON document (``record``) with a schema version; this module builds
that document from a CreateCompilationJob request and knows which status may follow which.
Validation failures raise :class:`JobError` with the AWS error type (``ValidationException``...).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

RECORD_SCHEMA_VERSION = 1

STARTING, INPROGRESS, COMPLETED, FAILED, STOPPING, STOPPED = (
    "STARTING", "INPROGRESS", "COMPLETED", "FAILED", "STOPPING", "STOPPED")
STATUSES = (STARTING, INPROGRESS, COMPLETED, FAILED, STOPPING, STOPPED)
ACTIVE = (STARTING, INPROGRESS, STOPPING)
FINISHED = (COMPLETED, FAILED, STOPPED)

#: status -> the statuses that may follow it (Neo's state machine).
TRANSITIONS: dict[str, tuple[str, ...]] = {
    STARTING: (INPROGRESS, STOPPING, FAILED),
    INPROGRESS: (COMPLETED, FAILED, STOPPING),
    STOPPING: (STOPPED, FAILED),
    COMPLETED: (), FAILED: (), STOPPED: (),
}

FRAMEWORKS = ("TENSORFLOW", "KERAS", "MXNET", "ONNX", "PYTORCH", "XGBOOST", "TFLITE",
              "DARKNET", "SKLEARN")
PLATFORM_OS = ("LINUX", "ANDROID")
PLATFORM_ARCH = ("X86_64", "X86", "ARM64", "ARM_EABI", "ARM_EABIHF")
PLATFORM_ACCEL = ("INTEL_GRAPHICS", "MALI", "NVIDIA", "NNA")
NAME_PATTERN = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"
_NAME = re.compile(NAME_PATTERN + "$")
_LOCATION = re.compile(r"^(s3|file)://.+|^/.+")
_FRAMEWORK_VERSION = re.compile(r"^[0-9]\.[A-Za-z0-9.]+$")


class JobError(Exception):
    """A request the service refuses, with the AWS error type and HTTP status."""

    STATUS = {"ValidationException": 400, "ResourceNotFound": 400, "ResourceInUse": 400,
              "ResourceLimitExceeded": 400, "RequestTooLarge": 413}

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    @property
    def http_status(self) -> int:
        return self.STATUS.get(self.kind, 400)


def invalid(field: str, value, constraint: str) -> JobError:
    """AWS's wording for one failed constraint."""
    return JobError("ValidationException", f"1 validation error detected: Value {value!r} at "
                    f"'{field}' failed to satisfy constraint: {constraint}")


def check_name(name, field: str = "compilationJobName") -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise invalid(field, name, f"Member must satisfy regular expression pattern: {NAME_PATTERN}")
    return name


def _dict(req: dict, key: str, *, required: bool = True) -> dict:
    value = req.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise invalid(key[0].lower() + key[1:], value, "Member must not be null" if value is None
                      else "Member must be a structure")
    return value


def _string(d: dict, key: str, field: str, *, required: bool, max_len: int = 1024) -> str | None:
    value = d.get(key)
    if value is None:
        if required:
            raise invalid(field, None, "Member must not be null")
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= max_len:
        raise invalid(field, value, f"Member must be a string of length 1 to {max_len}")
    return value


def _enum(value, field: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise invalid(field, value, f"Member must satisfy enum value set: [{', '.join(allowed)}]")
    return value


def _json_text(value: str | None, field: str, max_len: int):
    if value is None:
        return None
    if len(value) > max_len:
        raise invalid(field, value[:40] + "...", f"Member must have length less than or equal to {max_len}")
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise JobError("ValidationException", f"{field} is not valid JSON: {exc.msg} at "
                       f"character {exc.pos}") from None


def _input_config(req: dict) -> dict:
    cfg = _dict(req, "InputConfig")
    uri = _string(cfg, "S3Uri", "inputConfig.s3Uri", required=True)
    if not _LOCATION.match(uri):
        raise invalid("inputConfig.s3Uri", uri, "Member must be an s3://, file:// or absolute path")
    fw = _enum(cfg.get("Framework"), "inputConfig.framework", FRAMEWORKS)
    data = _string(cfg, "DataInputConfig", "inputConfig.dataInputConfig", required=False,
                   max_len=16384)
    _json_text(data, "InputConfig.DataInputConfig", 16384)
    version = _string(cfg, "FrameworkVersion", "inputConfig.frameworkVersion", required=False,
                      max_len=10)
    if version is not None and not _FRAMEWORK_VERSION.match(version):
        raise invalid("inputConfig.frameworkVersion", version,
                      "Member must satisfy regular expression pattern: [0-9]\\.[A-Za-z0-9.]+")
    out = {"S3Uri": uri, "Framework": fw}
    if data is not None:
        out["DataInputConfig"] = data
    if version is not None:
        out["FrameworkVersion"] = version
    return out


def _output_config(req: dict) -> dict:
    cfg = _dict(req, "OutputConfig")
    loc = _string(cfg, "S3OutputLocation", "outputConfig.s3OutputLocation", required=True)
    if not _LOCATION.match(loc):
        raise invalid("outputConfig.s3OutputLocation", loc,
                      "Member must be an s3://, file:// or absolute path")
    out = {"S3OutputLocation": loc}
    device, platform = cfg.get("TargetDevice"), cfg.get("TargetPlatform")
    if (device is None) == (platform is None):
        raise JobError("ValidationException", "OutputConfig needs exactly one of TargetDevice "
                       "and TargetPlatform")
    if device is not None:
        out["TargetDevice"] = _string(cfg, "TargetDevice", "outputConfig.targetDevice",
                                      required=True, max_len=64)
    else:
        if not isinstance(platform, dict):
            raise invalid("outputConfig.targetPlatform", platform, "Member must be a structure")
        tp = {"Os": _enum(platform.get("Os"), "outputConfig.targetPlatform.os", PLATFORM_OS),
              "Arch": _enum(platform.get("Arch"), "outputConfig.targetPlatform.arch", PLATFORM_ARCH)}
        if platform.get("Accelerator") is not None:
            tp["Accelerator"] = _enum(platform["Accelerator"], "outputConfig.targetPlatform."
                                      "accelerator", PLATFORM_ACCEL)
        out["TargetPlatform"] = tp
    options = _string(cfg, "CompilerOptions", "outputConfig.compilerOptions", required=False)
    if options is not None:
        _json_text(options, "OutputConfig.CompilerOptions", 1024)
        out["CompilerOptions"] = options
    if cfg.get("KmsKeyId") is not None:
        out["KmsKeyId"] = _string(cfg, "KmsKeyId", "outputConfig.kmsKeyId", required=True,
                                  max_len=2048)
    return out


def _stopping(req: dict, default_max: int) -> dict:
    cfg = _dict(req, "StoppingCondition", required=False)
    seconds = cfg.get("MaxRuntimeInSeconds", default_max)
    if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds < 1:
        raise invalid("stoppingCondition.maxRuntimeInSeconds", seconds,
                      "Member must have value greater than or equal to 1")
    return {**{k: v for k, v in cfg.items() if k in ("MaxWaitTimeInSeconds",
                                                      "MaxPendingTimeInSeconds")},
            "MaxRuntimeInSeconds": seconds}


def _tags(req: dict) -> list[dict]:
    tags = req.get("Tags") or []
    if not isinstance(tags, list) or len(tags) > 50:
        raise invalid("tags", tags, "Member must have length less than or equal to 50")
    for tag in tags:
        if not isinstance(tag, dict) or not isinstance(tag.get("Key"), str) or \
                not 1 <= len(tag["Key"]) <= 128 or len(str(tag.get("Value", ""))) > 256:
            raise invalid("tags", tag, "each tag needs a Key of 1-128 characters and a Value "
                          "of at most 256")
    return [{"Key": t["Key"], "Value": str(t.get("Value", ""))} for t in tags]


@dataclass(frozen=True)
class NewJob:
    """A validated CreateCompilationJob request."""

    name: str
    record: dict


def validate_create(req: dict, *, default_max_runtime: int = 900) -> NewJob:
    """Check a CreateCompilationJob request field by field; return the job's initial record."""
    if not isinstance(req, dict):
        raise JobError("ValidationException", "the request body must be a JSON object")
    name = check_name(req.get("CompilationJobName"))
    if req.get("ModelPackageVersionArn") is not None:
        raise JobError("ValidationException", "ModelPackageVersionArn is not supported by Kiln; "
                       "give InputConfig.S3Uri")
    role = _string(req, "RoleArn", "roleArn", required=False, max_len=2048)
    record = {"CompilationJobName": name, "InputConfig": _input_config(req),
              "OutputConfig": _output_config(req), "StoppingCondition": _stopping(
                  req, default_max_runtime), "Tags": _tags(req)}
    if role is not None:
        record["RoleArn"] = role
    if req.get("VpcConfig") is not None:
        record["VpcConfig"] = _dict(req, "VpcConfig")
    check_target(record["OutputConfig"])
    return NewJob(name=name, record=record)


def target_args(output_config: dict) -> tuple[str | None, str | None]:
    """(device name, "OS/ARCH[/ACCEL]") for the compiler, from OutputConfig."""
    tp = output_config.get("TargetPlatform")
    if tp is None:
        return output_config["TargetDevice"], None
    return None, "/".join(tp[k] for k in ("Os", "Arch", "Accelerator") if tp.get(k))


def check_target(output_config: dict) -> None:
    """Refuse an unknown device, platform or compiler option before the job is queued."""
    from kiln.errors import KilnError
    from kiln.targets import resolve_target

    device, platform = target_args(output_config)
    try:
        resolve_target(device, platform, output_config.get("CompilerOptions"))
    except KilnError as exc:
        raise JobError("ValidationException", exc.one_line()) from None


def check_transition(old: str, new: str) -> None:
    if new not in TRANSITIONS[old]:
        raise JobError("ValidationException", f"a job in status {old} cannot become {new}")


def now() -> float:
    return round(time.time(), 3)
