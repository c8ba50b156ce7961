"""FailureReason text in Neo's classes, from Kiln's stable error codes.

Neo writes ``ClientError: InputConfiguration: ...`` for a bad model or shapes, names the
operators it cannot convert, and ``ServerError: ...`` for its own faults. Each Kiln code
(``kiln.errors.ERROR_CODES``) maps to one such prefix here.
"""

from __future__ import annotations

from kiln.errors import ERROR_CODES

#: Kiln error code -> Neo FailureReason prefix.
NEO_CLASS: dict[str, str] = {
    "file_not_found": "ClientError: InputConfiguration",
    "invalid_model": "ClientError: InputConfiguration",
    "invalid_input_shape": "ClientError: InputConfiguration",
    "shape_mismatch": "ClientError: InputConfiguration",
    "unsupported_operator": "ClientError: InputConfiguration: OperatorNotImplemented",
    "unknown_target": "ClientError: OutputConfiguration",
    "invalid_compiler_options": "ClientError: OutputConfiguration",
    "target_not_yet_supported": "ClientError: OutputConfiguration",
    "invalid_options": "ClientError: OutputConfiguration",
    "accuracy_regression": "ClientError: AccuracyCheck",
    "verification_failed": "ServerError: AccuracyCheck",
    "compile_failed": "ServerError: CompilationError",
    "toolchain_failed": "ServerError: CompilationError",
    "runtime_bundle_unavailable": "ServerError: CompilationError",
    "internal_error": "ServerError",
    # artifact and runtime codes: a compile does not raise them, but if one does it is Kiln's fault
    **{code: "ServerError" for code in ("invalid_artifact", "unsafe_archive", "artifact_corrupt",
                                        "target_mismatch", "emulator_missing", "invalid_input",
                                        "run_failed", "job_request_failed",
                                        "profile_unsupported")},
    # codes other branches add (framework importers, trees, tuning); harmless before they land
    "unsupported_framework": "ClientError: InputConfiguration",
    "invalid_model_package": "ClientError: InputConfiguration",
    "framework_not_installed": "ServerError: InputConfiguration",
    "untrusted_model": "ClientError: InputConfiguration",
    "dtype_not_supported": "ClientError: OutputConfiguration",
    "missing_dependency": "ServerError",
    "tuning_failed": "ServerError: CompilationError",
    "invalid_tuning_database": "ClientError: OutputConfiguration",  # a CompilerOptions choice
    "invalid_calibration": "ClientError: InputConfiguration",
    "empty_calibration": "ClientError: InputConfiguration",
    "calibration_not_finite": "ClientError: InputConfiguration",
    "nothing_to_quantize": "ClientError: InputConfiguration",
    "invalid_quantize_options": "ClientError: OutputConfiguration",
    "quantization_failed": "ServerError: CompilationError",
    "quantize_input_unsupported": "ClientError: InputConfiguration",
    "standalone_unsupported": "ClientError: InputConfiguration",  # the model, for that runtime
    # NVIDIA GPUs: a build that would not load on the GPU is Kiln's fault; a missing GPU when
    # running an artifact is not raised by a compile
    "cuda_build_incomplete": "ServerError: CompilationError",
    "device_unavailable": "ServerError",
}
MAX_REASON = 1024

TIMEOUT = "ClientError: TimeOut: the compilation job did not complete within " \
    "MaxRuntimeInSeconds ({seconds} s) and was stopped"
RESTARTED = "ServerError: the Kiln server restarted while the job was in progress; create the " \
    "job again"
WORKER_DIED = "ServerError: the compile process ended without a result (exit status {status})"
UNTAR = "ClientError: InputConfiguration: Unable to untar input model. Please confirm the model " \
    "is a tar.gz file"


def reason(prefix: str, message: str) -> str:
    text = f"{prefix}: {message}" if message else prefix
    return text if len(text) <= MAX_REASON else text[:MAX_REASON - 3] + "..."


def from_code(code: str, message: str) -> str:
    """FailureReason for a Kiln error ``code`` with its one-line ``message``."""
    return reason(NEO_CLASS.get(code, "ServerError"), message)


def code_of_exit_status(status: int) -> str:
    """The Kiln error code whose CLI exit status is ``status`` (``internal_error`` if none)."""
    for code, entry in ERROR_CODES.items():
        if entry.exit_status == status:
            return code
    return "internal_error"
