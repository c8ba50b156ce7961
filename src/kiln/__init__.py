"""Kiln: compile a model once for a named device, prove it runs there, load it with a small runtime.

>>> import kiln
>>> result = kiln.compile("model.onnx", target="rasp4b", output="model-rasp4b.tar.gz")  # doctest: +SKIP
>>> model = kiln.load("model-ml_c5.tar.gz")                                           # doctest: +SKIP
>>> outputs = model.run({"x": x})                                                      # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

from kiln.errors import KilnError
from kiln.runtime import Model, load
from kiln.targets import get_target, list_targets


def compile(model, **kwargs):  # noqa: A001 - the public name users expect
    """Compile a model; see :func:`kiln.compiler.compile_model` for the arguments."""
    from kiln.compiler import compile_model

    return compile_model(model, **kwargs)


__all__ = ["KilnError", "Model", "__version__", "compile", "get_target", "list_targets", "load"]
