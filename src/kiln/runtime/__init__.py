"""Load and run Kiln artifacts. Imports neither tvm nor the compiler: only numpy, ctypes and
the artifact's own runtime bundle."""

from kiln.runtime.model import Model, load

__all__ = ["Model", "load"]
