"""Neo's input packaging: one ``model.tar.gz`` holding exactly one model (neo.md §1.3, §2).

The tarball is unpacked with the artifact unpacker (``kiln.artifact.archive.unpack``: no
absolute paths, ``..``, links or device files, and a size limit), then the one model file is
found by content. Neo's rules: exactly one ``.onnx`` / ``.pt`` / ``.pth`` / ``.pt2`` /
``.tflite`` / ``.h5`` / ``.keras`` / SavedModel / XGBoost model; other files (``code/``,
``requirements.txt``, a README) are ignored.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from kiln.errors import KilnError
from kiln.importers.base import ImportedModel

#: file suffixes that hold a model, per framework (SavedModel folders are found separately)
MODEL_SUFFIXES = {
    "onnx": (".onnx",), "pytorch": (".pt", ".pth", ".pt2"), "tflite": (".tflite",),
    "keras": (".h5", ".hdf5", ".keras"), "tensorflow": (".pb", ".pbtxt"),
    "xgboost": (".model", ".json", ".ubj", ".bst"), "lightgbm": (".txt",), "sklearn": (".skops",),
}
_NEO_NAME = {"onnx": "ONNX", "pytorch": "PYTORCH", "tflite": "TFLITE", "keras": "KERAS",
             "tensorflow": "TENSORFLOW", "xgboost": "XGBOOST", "lightgbm": "LIGHTGBM",
             "sklearn": "SKLEARN"}


def unpack_package(archive: Path, *, framework: str | None,
                   workdir: Path | None = None) -> tuple[Path, str, dict]:
    """Unpack ``archive`` into ``workdir``; return its one model, that model's framework, and
    what the manifest records about the package."""
    from kiln.artifact.archive import unpack
    from kiln.artifact.digests import sha256_file

    dest = Path(tempfile.mkdtemp(prefix="neo-", dir=workdir))
    try:
        unpack(archive, dest)
    except KilnError as exc:
        if exc.code != "invalid_artifact":
            raise
        raise KilnError("invalid_model_package", f"Unable to untar input model {archive.name}: "
                        f"{exc.message}", hint="give a .tar.gz made with `tar czf model.tar.gz "
                        "MODEL_FILE`") from None
    model, fw = find_model(dest, framework, archive.name)
    info = {"package": archive.name, "package_sha256": sha256_file(archive),
            "member": model.relative_to(dest).as_posix(), "framework_detected": framework is None}
    return model, fw, info


def import_found(model: Path, framework: str, info: dict, *, input_shapes=None,
                 workdir: Path | None = None) -> ImportedModel:
    """Import the model :func:`unpack_package` found, recording the package facts ``info``."""
    from kiln.importers.detect import import_file

    imported = import_file(model, framework, input_shapes=input_shapes, workdir=workdir)
    return dataclasses.replace(imported, source_info={**imported.source_info, **info})


def find_model(root: Path, framework: str | None, package: str) -> tuple[Path, str]:
    """The one model under ``root`` (for ``framework``, or any), and its framework."""
    from kiln.importers.detect import sniff

    found: list[tuple[Path, str]] = []
    for saved in _saved_models(root):
        found.append((saved, "tensorflow"))
    skip = {p for s, _ in found for p in s.rglob("*")}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p not in skip):
        if any(part.startswith((".", "__MACOSX")) for part in path.relative_to(root).parts):
            continue
        fw = _file_framework(path, sniff)
        if fw is not None:
            found.append((path, fw))
    if framework is not None:
        found = [(p, fw) for p, fw in found if fw == framework
                 or (framework in ("keras", "tensorflow") and fw in ("keras", "tensorflow"))]
    if len(found) == 1:
        path, fw = found[0]
        if fw == "tensorflow" and not path.is_dir():
            _frozen_graph(path)
        return path, fw
    what = _describe(framework)
    if not found:
        raise KilnError("invalid_model_package", f"InputConfiguration: no {what} found in "
                        f"{package}", hint=_layout_hint(framework))
    names = ", ".join(p.relative_to(root).as_posix() for p, _ in found[:6])
    raise KilnError("invalid_model_package", f"InputConfiguration: exactly one {what} is allowed "
                    f"in {package}, found {len(found)}: {names}", hint=_layout_hint(framework))


def _saved_models(root: Path) -> list[Path]:
    return sorted({p.parent for p in root.rglob("saved_model.pb*")
                   if p.name in ("saved_model.pb", "saved_model.pbtxt")})


def _file_framework(path: Path, sniff) -> str | None:
    suffix = path.suffix.lower()
    if not any(suffix in sfx for sfx in MODEL_SUFFIXES.values()):
        return None
    fw = sniff(path)
    if fw is None and suffix in (".pb", ".pbtxt"):
        return "tensorflow"
    return fw if fw in MODEL_SUFFIXES else None


def _frozen_graph(path: Path) -> None:
    raise KilnError("unsupported_framework", f"{path.name} is a TensorFlow frozen graph (.pb "
                    "without saved_model.pb); Kiln reads SavedModel folders, .keras and .h5",
                    hint="save the model with tf.saved_model.save(model, 'saved_model/') and "
                         "pack that folder")


def _describe(framework: str | None) -> str:
    if framework is None:
        return "model file (.onnx, .pt, .pt2, .tflite, .h5, .keras, SavedModel, XGBoost model)"
    sfx = " / ".join(MODEL_SUFFIXES[framework])
    extra = " or SavedModel folder" if framework in ("tensorflow", "keras") else ""
    return f"{_NEO_NAME[framework]} model ({sfx}{extra})"


def _layout_hint(framework: str | None) -> str:
    return ("pack exactly one model file at the top of the tarball, e.g. `tar czf model.tar.gz "
            "model.pt2`" + ("" if framework else "; or name the framework with --framework"))
