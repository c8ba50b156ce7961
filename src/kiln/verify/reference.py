"""Reference runners: the source framework's own runtime."""

from __future__ import annotations

import numpy as np

from kiln.errors import KilnError


def run_reference(framework: str, source, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    if framework != "onnx":
        raise KilnError("verification_failed", f"no reference runner for {framework}",
                        hint="compile with verification off")
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
