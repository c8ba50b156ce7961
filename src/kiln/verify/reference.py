"""Reference runners: the source framework's own runtime (onnxruntime, torch eager, LiteRT,
TensorFlow / Keras). Each is imported lazily; :func:`reference_name` says which one ran."""

from __future__ import annotations

import numpy as np

from kiln.errors import KilnError


def run_reference(framework: str, source, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run ``source`` with ``framework``'s own runtime on ``inputs`` (in signature order)."""
    if framework == "onnx":
        return _onnxruntime(source, inputs)
    from kiln.verify import reference_frameworks as rf

    runner = rf.RUNNERS.get(framework)
    if runner is None:
        raise KilnError("verification_failed", f"no reference runner for {framework}",
                        hint="compile with verification off")
    try:
        return [np.asarray(o) for o in runner(source, inputs)]
    except KilnError:
        raise
    except Exception as exc:
        last = [ln for ln in str(exc).strip().splitlines() if ln.strip()] or [type(exc).__name__]
        raise KilnError("verification_failed", f"{framework} cannot run the model: "
                        f"{last[-1][:300]}", hint="check that the model runs in its framework") from None


def reference_name(framework: str) -> str:
    """The reference runtime and its version, e.g. ``torch 2.13.0 (eager)``."""
    if framework == "onnx":
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__}"
    from kiln.verify import reference_frameworks as rf

    return rf.name_of(framework)


def _onnxruntime(source, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(source), opts, providers=["CPUExecutionProvider"])
        return [np.asarray(o) for o in sess.run(None, inputs)]
    except Exception as exc:
        raise KilnError("verification_failed", f"onnxruntime cannot run the model: "
                        f"{str(exc).strip().splitlines()[-1][:300]}",
                        hint="check that the model runs in onnxruntime") from None
