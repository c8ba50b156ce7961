"""FailureReason classes: every Kiln error code has a Neo class, and exit statuses map back."""

from kiln.errors import ERROR_CODES
from kiln.jobs import failure


def test_every_error_code_has_a_neo_failure_class():
    missing = sorted(set(ERROR_CODES) - set(failure.NEO_CLASS))
    assert not missing, f"add these codes to kiln/jobs/failure.py NEO_CLASS: {missing}"
    for code, entry in ERROR_CODES.items():
        assert failure.code_of_exit_status(entry.exit_status) == code
        assert failure.from_code(code, "m").split(":")[0] in ("ClientError", "ServerError")
    assert failure.code_of_exit_status(99) == "internal_error"
    assert failure.from_code("unsupported_operator", "x.onnx: Celu") == \
        "ClientError: InputConfiguration: OperatorNotImplemented: x.onnx: Celu"
    assert len(failure.from_code("invalid_model", "y" * 5000)) == 1024
