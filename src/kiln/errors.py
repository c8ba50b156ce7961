"""Errors with a stable code, a message and a next step.

Every user-facing failure is a :class:`KilnError`. Its ``code`` is stable across releases and
maps to one CLI exit status (and, for the service, one HTTP status) in :data:`ERROR_CODES`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorCode:
    exit_status: int
    http_status: int
    summary: str


#: code -> (CLI exit status, HTTP status, summary). Exit statuses are unique per code.
ERROR_CODES: dict[str, ErrorCode] = {
    "internal_error": ErrorCode(70, 500, "an unexpected failure inside Kiln"),
    "file_not_found": ErrorCode(10, 404, "an input file does not exist"),
    "invalid_model": ErrorCode(11, 400, "the model file cannot be read"),
    "unsupported_operator": ErrorCode(12, 422, "the model uses operators Kiln cannot compile"),
    "invalid_input_shape": ErrorCode(13, 400, "the input-shape JSON is malformed"),
    "shape_mismatch": ErrorCode(14, 400, "given shapes contradict the model"),
    "unsupported_framework": ErrorCode(15, 422, "Kiln does not compile models of this framework"),
    "invalid_model_package": ErrorCode(16, 400, "a Neo model.tar.gz does not hold exactly one model"),
    "framework_not_installed": ErrorCode(17, 424, "the framework needed to read the model is not installed"),
    "untrusted_model": ErrorCode(19, 400, "the model file would run code when loaded (pickle) and was not trusted"),
    "unknown_target": ErrorCode(20, 400, "no such target device or platform"),
    "invalid_compiler_options": ErrorCode(21, 400, "compiler options are unknown or invalid"),
    "target_not_yet_supported": ErrorCode(22, 422, "the target exists but Kiln cannot build for it yet"),
    "invalid_options": ErrorCode(23, 400, "an option has an invalid value"),
    "dtype_not_supported": ErrorCode(24, 422, "the target has no native support for the requested dtype"),
    "missing_dependency": ErrorCode(25, 424, "an optional Python package is not installed"),
    "invalid_calibration": ErrorCode(26, 400, "the calibration file does not match the model's inputs"),
    "empty_calibration": ErrorCode(27, 400, "the calibration file holds no samples"),
    "calibration_not_finite": ErrorCode(28, 400, "the calibration data holds NaN or Inf"),
    "nothing_to_quantize": ErrorCode(29, 422, "the model has no operator that int8 quantization applies to"),
    "compile_failed": ErrorCode(30, 500, "the compiler failed"),
    "toolchain_failed": ErrorCode(31, 500, "the cross toolchain failed"),
    "runtime_bundle_unavailable": ErrorCode(32, 503, "the runtime libraries for the target cannot be fetched"),
    "tuning_failed": ErrorCode(33, 500, "tuning could not measure any kernel on the device"),
    "cuda_build_incomplete": ErrorCode(34, 500, "the GPU library would carry CUDA source or code "
                                       "for another GPU instead of a binary for the requested one"),
    "standalone_unsupported": ErrorCode(37, 422, "the standalone executor cannot run this model "
                                        "(dynamic shapes, control flow, packed calls)"),
    "accuracy_regression": ErrorCode(40, 422, "the compiled model disagrees with the reference"),
    "verification_failed": ErrorCode(41, 500, "the compiled artifact failed to run"),
    "device_unavailable": ErrorCode(42, 503, "no usable GPU or GPU driver for this artifact here"),
    "invalid_quantize_options": ErrorCode(46, 400, "quantization options are missing or contradict each other"),
    "quantization_failed": ErrorCode(47, 500, "post-training quantization failed"),
    "quantize_input_unsupported": ErrorCode(48, 422, "this kind of model cannot be quantized by Kiln"),
    "invalid_artifact": ErrorCode(50, 400, "the file is not a Kiln artifact"),
    "unsafe_archive": ErrorCode(51, 400, "the archive has members that would escape the destination"),
    "artifact_corrupt": ErrorCode(52, 400, "an artifact file does not match its digest"),
    "target_mismatch": ErrorCode(53, 400, "the artifact was built for another device"),
    "emulator_missing": ErrorCode(54, 424, "qemu-user is needed to run this artifact here"),
    "invalid_input": ErrorCode(55, 400, "an input array is missing or has the wrong name, shape or dtype"),
    "run_failed": ErrorCode(56, 500, "running the artifact failed"),
    "profile_unsupported": ErrorCode(18, 422, "per-kernel profiles need the standalone runtime"),
    "invalid_tuning_database": ErrorCode(57, 400, "a tuning database is missing or unreadable"),
    "job_request_failed": ErrorCode(60, 502, "the job service refused or did not answer a request"),
}


class KilnError(Exception):
    """A failure the user can act on.

    Parameters
    ----------
    code : str
        A key of :data:`ERROR_CODES`.
    message : str
        What failed, with the offending value.
    hint : str, optional
        What to do next.
    details : str, optional
        Extra text such as a failing command's stderr.
    """

    def __init__(self, code: str, message: str, *, hint: str = "", details: str = "") -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unregistered error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint
        self.details = details

    @property
    def exit_status(self) -> int:
        return ERROR_CODES[self.code].exit_status

    @property
    def http_status(self) -> int:
        return ERROR_CODES[self.code].http_status

    def one_line(self) -> str:
        text = f"error[{self.code}]: {self.message}"
        return f"{text} (hint: {self.hint})" if self.hint else text

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "hint": self.hint}

    def __str__(self) -> str:
        return self.one_line()
