"""Importers turn a model file into an :class:`ImportedModel` (a Relax IRModule + signature)."""

from kiln.importers.base import ImportedModel
from kiln.importers.detect import import_model

__all__ = ["ImportedModel", "import_model"]
