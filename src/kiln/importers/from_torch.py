"""PyTorch -> Relax through ``torch.export`` and TVM's ``from_exported_program``.

Three inputs, one route: a ``.pt2`` file (``torch.export.save``), an ``nn.Module`` with example
inputs (Python API; exported, then saved as ``.pt2`` so the accuracy gate has a file to run), and
a TorchScript ``.pt`` (what Neo took), converted to an ExportedProgram with torch's
``TS2EPConverter``. Nothing is unpickled: ``torch.export.load`` and ``torch.jit.load`` read their
own archive formats, not arbitrary Python objects, and plain ``torch.save`` pickles are refused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
import zipfile
from pathlib import Path

from kiln.errors import KilnError
from kiln.importers.base import ImportedModel
from kiln.importers.relax_io import frontend_failed, output_infos
from kiln.signature import ModelSignature, TensorInfo

_EXPORT_HINT = ("export the model with ep = torch.export.export(model, example_inputs) and "
                "torch.export.save(ep, 'model.pt2'), then compile model.pt2")


def require_torch():
    try:
        import torch
    except ImportError:
        raise KilnError("framework_not_installed", "PyTorch models need torch, which is not "
                        "installed", hint="pip install 'kilnml[torch]' (or a torch CPU wheel)") from None
    return torch


def torch_kind(path: Path) -> str | None:
    """'export' (.pt2), 'torchscript' (.pt/.pth from torch.jit.save), 'pickle' (torch.save) or None."""
    if path.is_dir() or not zipfile.is_zipfile(path):
        return None
    try:
        names = zipfile.ZipFile(path).namelist()
    except (zipfile.BadZipFile, OSError):
        return None
    tails = {n.split("/", 1)[1] if "/" in n else n for n in names}
    if "archive_format" in tails or any(t.startswith("models/") for t in tails):
        return "export"
    if any(t.startswith("code/") for t in tails) and "data.pkl" in tails:
        return "torchscript"
    if "data.pkl" in tails:
        return "pickle"
    return None


@contextlib.contextmanager
def quiet_torch():
    """Keep torch's FutureWarnings and export log lines off Kiln's one-line output."""
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_module(module, example_inputs, folder: Path, dynamic_shapes=None) -> Path:
    """``torch.export`` an ``nn.Module`` and save it as ``folder/module.pt2``."""
    torch = require_torch()
    if not isinstance(module, torch.nn.Module):
        raise KilnError("invalid_model", f"cannot compile a {type(module).__name__}",
                        hint="give a model file path or a torch.nn.Module")
    if example_inputs is None:
        raise KilnError("invalid_input_shape", "an nn.Module needs example_inputs",
                        hint="kiln.compile(module, example_inputs=(torch.randn(1, 3, 224, 224),), ...)")
    args = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    try:
        with quiet_torch():
            ep = torch.export.export(module.eval(), args, dynamic_shapes=dynamic_shapes)
    except Exception as exc:
        raise KilnError("invalid_model", f"torch.export failed: {_last_line(exc)}",
                        hint="make the model exportable (see torch.export's error above); with "
                             "dynamic batch, give an example batch of at least 2") from None
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "module.pt2"
    with quiet_torch():
        torch.export.save(ep, path)
    return path


def import_torch(path: Path, *, input_shapes=None) -> ImportedModel:
    """Import a ``.pt2`` or TorchScript file; ``input_shapes`` binds dynamic dimensions."""
    torch = require_torch()
    with quiet_torch():
        return _import_torch(torch, path, input_shapes)


def _import_torch(torch, path: Path, input_shapes) -> ImportedModel:
    kind = torch_kind(path)
    if kind == "pickle":
        raise KilnError("invalid_model", f"{path.name} is a torch.save pickle (a state dict or a "
                        "pickled module); Kiln never unpickles model files", hint=_EXPORT_HINT)
    if kind is None:
        raise KilnError("invalid_model", f"{path.name} is not a torch.export (.pt2) or "
                        "TorchScript archive", hint=_EXPORT_HINT)
    if kind == "torchscript":
        ep, route = _torchscript_program(torch, path, input_shapes), "torchscript -> torch.export"
    else:
        try:
            ep = torch.export.load(str(path))
        except Exception as exc:
            raise KilnError("invalid_model", f"{path.name}: torch.export.load failed: "
                            f"{_last_line(exc)}", hint=_EXPORT_HINT) from None
        route = "torch.export"
    inputs, bindings = bind_shapes(program_inputs(ep), input_shapes, ep.range_constraints)
    mod = _to_relax(ep, bindings, path)
    return ImportedModel(mod=mod, signature=ModelSignature(tuple(inputs), tuple(output_infos(mod))),
                         framework="pytorch", source=path, derived_shapes=not input_shapes,
                         framework_version=torch.__version__,
                         source_info={"format": kind, "route": route + " -> relax"})


def _to_relax(ep, bindings: dict[str, int], path: Path):
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    try:
        mod = from_exported_program(ep, keep_params_as_input=False)
    except Exception as exc:
        raise frontend_failed(path.name, exc) from None
    if bindings:
        mod = relax.transform.BindSymbolicVars(bindings, "main")(mod)
    return mod


def program_inputs(ep) -> list[tuple[str, list, str]]:
    """(name, dims, dtype) of the program's user inputs; a symbolic dim is its symbol's name."""
    user = list(ep.graph_signature.user_inputs)
    nodes = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    out = []
    for name in user:
        val = nodes[name].meta.get("val")
        if val is None or not hasattr(val, "shape"):
            raise KilnError("invalid_model", f"input {name!r} is not a tensor",
                            hint="Kiln compiles models whose inputs are tensors")
        dims = [int(d) if str(d).lstrip("-").isdigit() else str(d) for d in val.shape]
        out.append((name, dims, str(val.dtype).replace("torch.", "")))
    return out


def bind_shapes(inputs, given, ranges=None) -> tuple[list[TensorInfo], dict[str, int]]:
    """Bind dynamic dims from ``given`` (by name, or by position for input0, input1 ...)."""
    names = [n for n, _, _ in inputs]
    given = dict(given or {})
    if given and not set(given) <= set(names):
        positional = [f"input{i}" for i in range(len(given))]
        if list(given) != positional or len(given) != len(names):
            raise KilnError("shape_mismatch", f"--input-shape names {list(given)} but the model's "
                            f"inputs are {names}", hint="use the model's input names, or a list "
                            "of shapes in input order")
        given = dict(zip(names, given.values()))
    bindings: dict[str, int] = {}
    resolved, unbound = [], {}
    for name, dims, dtype in inputs:
        shape = given.get(name)
        if shape is not None:
            _bind_one(name, dims, list(shape), bindings)
        elif any(isinstance(d, str) for d in dims):
            unbound[name] = [d if isinstance(d, int) else 1 for d in dims]
            continue
        resolved.append(TensorInfo(name, tuple(shape or dims), dtype))
    if unbound:
        desc = ", ".join(f"{n} {d}" for n, d, _ in inputs if n in unbound)
        raise KilnError("invalid_input_shape", f"the model has dynamic input dimensions: {desc}",
                        hint=f"fix them with --input-shape '{json.dumps(unbound)}'")
    _check_ranges(bindings, ranges or {})
    return resolved, bindings


def _bind_one(name: str, dims: list, shape: list[int], bindings: dict[str, int]) -> None:
    if len(shape) != len(dims) or any(isinstance(d, int) and d != s for d, s in zip(dims, shape)):
        raise KilnError("shape_mismatch", f"input {name!r} has shape {dims} in the model, but "
                        f"--input-shape gives {shape}",
                        hint="give a shape of the same rank that keeps the fixed dimensions")
    for d, s in zip(dims, shape):
        if isinstance(d, str):
            if bindings.setdefault(d, s) != s:
                raise KilnError("shape_mismatch", f"dimension {d} is bound to both "
                                f"{bindings[d]} and {s}", hint="inputs that share a dynamic "
                                "dimension need the same size for it")


def _check_ranges(bindings: dict[str, int], ranges) -> None:
    for sym, vr in ranges.items():
        value = bindings.get(str(sym))
        if value is None:
            continue
        lo, hi = _finite(vr.lower), _finite(vr.upper)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise KilnError("shape_mismatch", f"dimension {sym} = {value} is outside the range "
                            f"[{lo}, {hi}] the program was exported with",
                            hint="give a size inside the exported torch.export.Dim range")


def _finite(bound) -> int | None:
    """A range bound as an int; None for torch's / sympy's infinities."""
    try:
        return int(str(bound))
    except (TypeError, ValueError):
        return None


def _torchscript_program(torch, path: Path, input_shapes):
    if not input_shapes:
        raise KilnError("invalid_input_shape", f"{path.name} is TorchScript, which records no "
                        "input shapes", hint="give --input-shape '[[1, 3, 224, 224]]' (a list of "
                        "shapes in input order, as Neo's DataInputConfig for PyTorch)")
    try:
        module = torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:
        raise KilnError("invalid_model", f"{path.name}: torch.jit.load failed: "
                        f"{_last_line(exc)}", hint=_EXPORT_HINT) from None
    args = tuple(torch.zeros(tuple(s)) for s in dict(input_shapes).values())
    from torch._export.converter import TS2EPConverter

    try:
        return TS2EPConverter(module, args).convert()
    except Exception as exc:
        raise KilnError("unsupported_operator", f"{path.name}: TorchScript could not be "
                        f"converted to torch.export: {_last_line(exc)}", hint=_EXPORT_HINT) from None


def _last_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]
