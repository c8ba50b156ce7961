"""Constant subexpressions evaluated with numpy before legalization.

The layout change gives every conv a ``permute_dims`` of its constant weights (and a reshape /
permute of its bias), batch norm decomposes into arithmetic on constant statistics. TVM's
FoldConstant evaluates each by compiling its legalized kernel with LLVM and running it: 12.5 s
of a 20 s ResNet-50 compile (107 transposes, 53 reshapes), paid again for the portable twin.
This pass computes the same values with numpy, in a single walk over the bindings; what it does
not know stays for FoldConstant.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax import Call, Expr, PyExprMutator, expr_functor

from kiln.optimize.relax_rewrite import rewrite_functions, static_shape

#: largest result folded here (elements); larger ones are left to FoldConstant
MAX_ELEMENTS = 1 << 26


def _axes(attrs, ndim: int) -> list[int]:
    axes = attrs.axes
    return list(range(ndim))[::-1] if axes is None else [int(a) for a in axes]


_BINARY = {"relax.add": np.add, "relax.subtract": np.subtract, "relax.multiply": np.multiply,
           "relax.divide": np.divide}
_UNARY = {"relax.sqrt": np.sqrt, "relax.negative": np.negative,
          "relax.rsqrt": lambda x: 1 / np.sqrt(x)}


_FOLDED = {"relax.permute_dims", "relax.reshape", "relax.expand_dims", "relax.squeeze",
           "relax.astype", *_BINARY, *_UNARY}


def _evaluate(call: Call, args: list[np.ndarray], shape: list[int]) -> np.ndarray | None:
    name = call.op.name
    if name == "relax.permute_dims":
        return np.transpose(args[0], _axes(call.attrs, args[0].ndim))
    if name in ("relax.reshape", "relax.expand_dims", "relax.squeeze"):
        return args[0].reshape(shape)
    if name == "relax.astype":
        return args[0].astype(str(call.attrs.dtype))
    if name in _BINARY and len(args) == 2:
        return _BINARY[name](args[0], args[1])
    if name in _UNARY:
        return _UNARY[name](args[0])
    return None


@expr_functor.mutator
class _Fold(PyExprMutator):
    def _constant(self, expr) -> np.ndarray | None:
        if isinstance(expr, relax.Var):
            expr = self.lookup_binding(expr)
        if not isinstance(expr, tvm.ir.expr.Constant):
            return None
        value = expr.value  # a tensor, or a plain number for a scalar constant
        return value.numpy() if hasattr(value, "numpy") else None

    def visit_call_(self, call: Call) -> Expr:
        new = super().visit_call_(call)
        if not isinstance(new.op, tvm.ir.Op) or new.op.name not in _FOLDED:
            return new
        dtype, dims = str(getattr(call.ty, "dtype", "")), static_shape(call)
        if not dtype or dims is None or int(np.prod(dims)) > MAX_ELEMENTS:
            return new
        tensors = new.args[:1] if new.op.name == "relax.reshape" else new.args
        args = [self._constant(a) for a in tensors]
        if not args or any(a is None for a in args):
            return new
        try:
            out = _evaluate(new, args, dims)
        except Exception:  # noqa: BLE001 - left to FoldConstant
            return new
        if out is None or list(out.shape) != dims:
            return new
        return relax.const(np.ascontiguousarray(out.astype(dtype, copy=False)), dtype)


@tvm.transform.module_pass(opt_level=0, name="KilnNumpyConstantFold")
def numpy_constant_fold(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """The pass (see the module doc)."""
    return rewrite_functions(mod, _Fold(mod))
