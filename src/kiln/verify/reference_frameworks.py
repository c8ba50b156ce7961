"""Reference runners for frameworks other than ONNX; each imports its framework lazily."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _flatten(value) -> list:
    if isinstance(value, (tuple, list)):
        return [x for v in value for x in _flatten(v)]
    if isinstance(value, dict):
        return [x for k in sorted(value) for x in _flatten(value[k])]
    return [value]


def run_torch(source, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Eager PyTorch: the ExportedProgram's module, or the TorchScript module."""
    import torch

    from kiln.importers.from_torch import quiet_torch, torch_kind

    path = Path(source)
    with quiet_torch():
        if torch_kind(path) == "torchscript":
            fn = torch.jit.load(str(path), map_location="cpu").eval()
        else:
            fn = torch.export.load(str(path)).module()
        args = [torch.from_numpy(np.ascontiguousarray(v)) for v in inputs.values()]
        with torch.no_grad():
            out = fn(*args)
    return [o.detach().numpy() for o in _flatten(out)]


def run_litert(source, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The LiteRT (TFLite) interpreter, outputs in the model's output order."""
    from kiln.importers.from_tflite import litert_interpreter

    interp = litert_interpreter(str(source))
    details = interp.get_input_details()
    resized = False
    for detail, value in zip(details, inputs.values()):
        if tuple(detail["shape"]) != tuple(np.shape(value)):  # a bound dynamic dimension
            interp.resize_tensor_input(detail["index"], list(np.shape(value)))
            resized = True
    if resized:
        interp.allocate_tensors()
    for detail, value in zip(interp.get_input_details(), inputs.values()):
        interp.set_tensor(detail["index"], np.ascontiguousarray(value, dtype=detail["dtype"]))
    interp.invoke()
    return [interp.get_tensor(d["index"]) for d in interp.get_output_details()]


def run_tensorflow(source, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """TensorFlow / Keras itself (SavedModel serving signature, or the Keras model)."""
    from kiln.importers.from_tensorflow import reference_outputs

    return reference_outputs(Path(source), inputs)


RUNNERS = {"pytorch": run_torch, "tflite": run_litert, "tensorflow": run_tensorflow,
           "keras": run_tensorflow}


def name_of(framework: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    pkg, label = {"pytorch": ("torch", "torch {} (eager)"),
                  "tflite": ("ai-edge-litert", "LiteRT {} (ai-edge-litert interpreter)"),
                  "tensorflow": ("tensorflow", "TensorFlow {}"),
                  "keras": ("keras", "Keras {}")}.get(framework, (framework, framework + " {}"))
    for name in (pkg, "tensorflow-cpu") if pkg == "tensorflow" else (pkg,):
        try:
            return label.format(version(name))
        except PackageNotFoundError:
            continue
    return label.format("(version unknown)")
