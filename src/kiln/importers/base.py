"""The type every importer returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln.signature import ModelSignature


@dataclass(frozen=True)
class ImportedModel:
    """A model in TVM's Relax IR, with what the later steps need to know about it.

    ``source`` is the file (or SavedModel folder) the reference runner
    (``kiln.verify.reference``) executes to check the compiled artifact; ``derived_shapes`` is True when Kiln took the input
    shapes from the model rather than from the user.
    """

    mod: Any  # tvm.IRModule
    signature: ModelSignature
    framework: str
    source: Path
    opset: int | None = None
    derived_shapes: bool = True
    #: installed version of the framework that read the model (recorded in the manifest)
    framework_version: str | None = None
    #: extra facts for the manifest's ``source`` (Neo package name, member, route taken ...)
    source_info: dict = field(default_factory=dict)
