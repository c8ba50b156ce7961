"""Pick the importer for a model file from its content, never from its name alone."""

from __future__ import annotations

from pathlib import Path

from kiln.errors import KilnError
from kiln.importers.base import ImportedModel


def is_tree_model(path: str | Path, framework: str | None = None) -> bool:
    """True when ``framework`` names a tree framework (xgboost, lightgbm, sklearn; any case),
    or, with no framework, when the file's content is a tree-ensemble format or a pickle."""
    from kiln.importers.from_trees import sniff, tree_framework

    if framework:
        return tree_framework(framework) is not None
    return Path(path).is_file() and sniff(Path(path)) is not None


def import_model(path: str | Path, *, input_shapes=None, framework: str | None = None,
                 trust_pickle: bool = False) -> ImportedModel:
    """Import ``path`` with the importer for ``framework`` (detected when None)."""
    path = Path(path)
    if not path.exists():
        raise KilnError("file_not_found", f"model file {str(path)!r} does not exist",
                        hint="check the path; give an .onnx file")
    if path.is_dir():
        raise KilnError("invalid_model", f"{str(path)!r} is a directory, not a model file",
                        hint="give an .onnx file")
    if is_tree_model(path, framework):
        from kiln.importers.from_trees import import_trees

        return import_trees(path, framework, input_shapes=input_shapes, trust_pickle=trust_pickle)
    fw = (framework or "onnx").lower()
    if fw != "onnx":
        raise KilnError("invalid_model", f"framework {framework!r} is not supported yet",
                        hint="export the model to ONNX (opset 13-21) and compile that")
    from kiln.importers.from_onnx import import_onnx

    return import_onnx(path, input_shapes=input_shapes)
