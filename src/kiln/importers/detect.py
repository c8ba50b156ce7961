"""Pick the importer for a model from its content (magic bytes, archive members), never from
its name alone; normalize Neo's framework names."""

from __future__ import annotations

import json
from pathlib import Path

from kiln.errors import KilnError
from kiln.importers.base import ImportedModel

#: Neo's Framework enum (upper case) and Kiln's extra names -> Kiln's framework name.
FRAMEWORKS = {"onnx": "onnx", "pytorch": "pytorch", "torch": "pytorch", "tflite": "tflite",
              "tensorflow": "tensorflow", "keras": "keras", "xgboost": "xgboost",
              "lightgbm": "lightgbm", "sklearn": "sklearn", "mxnet": "mxnet", "darknet": "darknet"}
_UNSUPPORTED = {
    "mxnet": "MXNet is retired (Apache attic, 2023) and TVM 0.27 has no MXNet frontend; export "
             "the model to ONNX (mx.onnx.export_model) and compile the .onnx",
    "darknet": "TVM 0.27 has no Darknet frontend; convert the .cfg/.weights to ONNX (e.g. with "
               "a YOLO-to-ONNX exporter) and compile the .onnx",
}
_TREES = ("xgboost", "lightgbm", "sklearn")
_HINT = "give an .onnx, .pt2, TorchScript .pt, .tflite, .keras/.h5, SavedModel folder or model.tar.gz"


def normalize_framework(name: str | None) -> str | None:
    """Neo's ``PYTORCH`` or Kiln's ``pytorch`` -> ``pytorch``; unknown names are refused."""
    if name is None or name == "":
        return None
    fw = FRAMEWORKS.get(str(name).strip().lower())
    if fw is None:
        valid = sorted({k.upper() for k in FRAMEWORKS if k != "torch"})
        raise KilnError("invalid_options", f"unknown framework {name!r}",
                        hint=f"use one of {', '.join(valid)} (upper or lower case)")
    if fw in _UNSUPPORTED:
        raise KilnError("unsupported_framework", f"{name} models are not supported: "
                        f"{_UNSUPPORTED[fw]}", hint="export to ONNX and compile that")
    return fw


def sniff(path: Path) -> str | None:
    """The framework a file or folder holds, from its content; 'neo-package' for a tarball."""
    from kiln.importers.from_torch import torch_kind

    if path.is_dir():
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
            return "tensorflow"
        return None
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:2] == b"\x1f\x8b" or head[257:262] == b"ustar":
        return "neo-package"
    if head[4:8] == b"TFL3":
        return "tflite"
    if head[:8] == b"\x89HDF\r\n\x1a\n":
        return "keras"
    if head[:2] == b"PK":
        kind = torch_kind(path)
        if kind is not None:
            return "pytorch"
        return "keras" if path.suffix == ".keras" else None
    return _sniff_text(path, head)


def _sniff_text(path: Path, head: bytes) -> str | None:
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix in (".pt", ".pth", ".pt2"):  # not a zip: a legacy torch.save pickle, refused later
        return "pytorch"
    if head.startswith(b"tree\n") or b"\nversion=v" in head[:64] and head.startswith(b"tree"):
        return "lightgbm"
    if suffix in (".ubj", ".model", ".bst") or (suffix == ".json" and b'"learner"' in head):
        return "xgboost"
    if suffix == ".json":
        try:
            return "xgboost" if "learner" in json.loads(path.read_text()) else None
        except (ValueError, UnicodeDecodeError):
            return None
    if suffix in (".skops",):
        return "sklearn"
    return "onnx" if suffix == "" and head[:1] == b"\x08" else None


def open_model(path, framework: str | None = None,
               workdir: Path | None = None) -> tuple[Path, str | None, dict]:
    """(model file, framework or None, package facts): a Neo ``model.tar.gz`` is unpacked into
    ``workdir`` and replaced by its one model, so every compile path sees a plain model."""
    path = Path(path)
    if not path.exists():
        raise KilnError("file_not_found", f"model file {str(path)!r} does not exist",
                        hint=f"check the path; {_HINT}")
    wanted = normalize_framework(framework)
    if sniff(path) != "neo-package":
        return path, wanted, {}
    from kiln.importers.neo_package import unpack_package

    return unpack_package(path, framework=wanted, workdir=workdir)


def import_model(path, *, input_shapes=None, framework: str | None = None,
                 workdir: Path | None = None) -> ImportedModel:
    """Import ``path`` with the importer for ``framework`` (detected from the content when None).

    ``workdir`` is where a Neo ``model.tar.gz`` is unpacked; it must outlive the compile (the
    accuracy gate runs the extracted model).
    """
    path, wanted, package = open_model(path, framework, workdir)
    if package:
        from kiln.importers.neo_package import import_found

        return import_found(path, wanted, package, input_shapes=input_shapes, workdir=workdir)
    found = sniff(path)
    if found is None and path.is_dir():
        raise KilnError("invalid_model", f"{str(path)!r} is a directory without saved_model.pb",
                        hint=_HINT)
    return import_file(path, wanted or found or "onnx", input_shapes=input_shapes, workdir=workdir)


def import_file(path: Path, framework: str, *, input_shapes=None,
                workdir: Path | None = None) -> ImportedModel:
    """Import one model file (or SavedModel folder) of a known framework."""
    if framework == "onnx":
        from kiln.importers.from_onnx import import_onnx

        return import_onnx(path, input_shapes=input_shapes)
    if framework == "pytorch":
        from kiln.importers.from_torch import import_torch

        return import_torch(path, input_shapes=input_shapes)
    if framework == "tflite":
        from kiln.importers.from_tflite import import_tflite

        return import_tflite(path, input_shapes=input_shapes)
    if framework in ("tensorflow", "keras"):
        from kiln.importers.from_tensorflow import import_tensorflow

        return import_tensorflow(path, framework, input_shapes=input_shapes, workdir=workdir)
    if framework in _TREES:
        return _import_trees(path, framework, input_shapes)
    raise KilnError("unsupported_framework", f"no importer for {framework}", hint=_HINT)


def _import_trees(path: Path, framework: str, input_shapes) -> ImportedModel:
    import importlib

    try:  # built on another branch; looked up by name so that Kiln works without it
        import_trees = importlib.import_module("kiln.importers.from_trees").import_trees
    except ModuleNotFoundError as exc:
        if exc.name != "kiln.importers.from_trees":
            raise
        raise KilnError("unsupported_framework", f"{path.name} is a {framework} model, and tree "
                        "ensemble support is not installed in this Kiln",
                        hint="use a Kiln build with kiln.importers.from_trees") from None
    return import_trees(path, framework=framework, input_shapes=input_shapes)


def is_tree_model(path: str | Path, framework: str | None = None) -> bool:
    """True when ``framework`` names a tree framework (xgboost, lightgbm, sklearn; any case),
    or, with no framework, when the file's content is a tree-ensemble format or a pickle
    (tree ensembles compile to C without TVM: ``kiln.compiler_trees``)."""
    from kiln.importers.from_trees import sniff as sniff_trees
    from kiln.importers.from_trees import tree_framework

    if framework:
        return tree_framework(framework) is not None
    return Path(path).is_file() and sniff_trees(Path(path)) is not None
