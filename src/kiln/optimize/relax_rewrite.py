"""What Kiln's Relax rewrites (``fast_math``, ``conv_transpose``, ``channel_pad``, ``winograd``,
``const_fold``) share: running a mutator over every Relax function of a module, static shapes,
and matching a conv with constant weights."""

from __future__ import annotations

import tvm
from tvm import relax


def rewrite_functions(mod: tvm.IRModule, mutator) -> tvm.IRModule:
    """``mod`` with every Relax function replaced by ``mutator``'s rewrite of it."""
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gv, mutator.visit_expr(func))
    return mutator.builder_.get()


def constant_weight_conv(call, new, op_name: str, kernel_layout: str):
    """``(attrs, data, weights as numpy)`` when ``call`` is ``op_name`` over NCHW data and
    output with a constant ``kernel_layout`` weight (``new``: the call with visited arguments);
    else None."""
    if not isinstance(call.op, tvm.ir.Op) or call.op.name != op_name:
        return None
    a = call.attrs
    data, weight = new.args
    if not isinstance(weight, tvm.ir.expr.Constant) or a.data_layout != "NCHW" \
            or a.kernel_layout != kernel_layout or (a.out_layout and a.out_layout != "NCHW"):
        return None
    return a, data, weight.value.numpy()


def static_shape(expr) -> list[int] | None:
    """The dimensions of ``expr``'s tensor type, or None when unknown or symbolic."""
    shape = getattr(getattr(expr, "ty", None), "shape", None)
    if shape is None or not hasattr(shape, "values"):
        return None
    try:
        return [int(v) for v in shape.values]
    except TypeError:  # a symbolic dimension
        return None
