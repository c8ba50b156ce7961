"""From the memory-planned Relax program to the standalone executor's plan.

After Kiln's CPU pipeline up to ``StaticPlanBlockMemory`` + ``LowerAllocTensor`` (see
:mod:`kiln.standalone.lower`), ``main`` is a straight line of ``R.memory.alloc_storage`` /
``R.memory.alloc_tensor`` bindings, direct calls to PrimFuncs (destination-passing style), views
(``R.reshape``) and aliases. :func:`make_plan` walks it and lays every storage out in one arena
(64-byte aligned), every constant in one weight blob, and records the kernel calls in order.
Anything else (dynamic shapes, control flow, packed-function calls, unknown operators) raises
``standalone_unsupported`` naming the construct.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kiln.errors import KilnError

ALIGN = 64
_HINT = "on x86_64 or aarch64 drop {\"runtime\": \"standalone\"} (Kiln then falls back to the " \
        "TVM runtime) or ask for {\"runtime\": \"tvm\"}; or give static input shapes with " \
        "--input-shape"


@dataclass
class Tensor:
    kind: str               # "a" arena, "w" weights, "i" model input
    where: int              # byte offset (arena, weights) or input index
    dtype: str
    shape: tuple[int, ...]


@dataclass
class Plan:
    tensors: list[Tensor] = field(default_factory=list)
    calls: list[tuple[str, list[str]]] = field(default_factory=list)  # symbol, ["T3", "I7"]
    outputs: list[int] = field(default_factory=list)
    arena_bytes: int = 0
    weights: bytearray = field(default_factory=bytearray)

    def to_text(self) -> str:
        lines = ["kiln-plan 1", f"arena {self.arena_bytes}", f"weights {len(self.weights)}",
                 f"tensors {len(self.tensors)}"]
        lines += [f"t {t.kind} {t.where} {t.dtype} {len(t.shape)}"
                  + "".join(f" {d}" for d in t.shape) for t in self.tensors]
        lines.append(f"calls {len(self.calls)}")
        lines += [f"c {sym} {len(args)}" + "".join(f" {a}" for a in args)
                  for sym, args in self.calls]
        lines.append(f"outputs {len(self.outputs)}")
        lines += [f"o {o}" for o in self.outputs]
        return "\n".join(lines) + "\n"


def unsupported(construct: str) -> KilnError:
    return KilnError("standalone_unsupported", f"the standalone executor cannot run this "
                     f"model: {construct}", hint=_HINT)


def _round(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _static_shape(sinfo, what: str) -> tuple[tuple[int, ...], str]:
    from tvm import relax, tirx

    if not isinstance(sinfo, relax.TensorType) or sinfo.shape is None:
        raise unsupported(f"{what} is not a tensor of known rank ({sinfo})")
    dims = sinfo.shape.values if isinstance(sinfo.shape, relax.ShapeExpr) else None
    if dims is None or not all(isinstance(d, tirx.IntImm) for d in dims):
        raise unsupported(f"dynamic shape {sinfo.shape} of {what}")
    return tuple(int(d) for d in dims), str(sinfo.dtype)


class _Walker:
    def __init__(self, mod):
        self.mod = mod
        self.plan = Plan()
        self.values: dict = {}      # relax.Var -> tensor id | ("storage", offset) | tuple
        self.consts: dict = {}      # constant node (hashed by handle) -> tensor id

    def tensor(self, t: Tensor) -> int:
        self.plan.tensors.append(t)
        return len(self.plan.tensors) - 1

    def constant(self, const) -> int:
        if const not in self.consts:
            shape, dtype = _static_shape(const.ty, "a constant")
            arr = np.ascontiguousarray(const.value.numpy(), dtype=dtype).reshape(shape)
            offset = _round(len(self.plan.weights))
            self.plan.weights.extend(b"\0" * (offset - len(self.plan.weights)))
            self.plan.weights.extend(arr.tobytes())
            self.consts[const] = self.tensor(Tensor("w", offset, str(arr.dtype),
                                                        tuple(arr.shape)))
        return self.consts[const]

    def value(self, expr):
        from tvm import ir, relax

        if isinstance(expr, ir.GenericConst) and hasattr(expr.value, "numpy"):
            return self.constant(expr)
        if isinstance(expr, (ir.Var, relax.Var)) and expr in self.values:
            return self.values[expr]
        if isinstance(expr, (ir.Tuple, relax.Tuple)):
            return tuple(self.value(f) for f in expr.fields)
        if isinstance(expr, (ir.TupleGetItem, relax.TupleGetItem)):
            return self.value(expr.tuple_value)[expr.index]
        raise unsupported(f"the expression {type(expr).__name__} {str(expr)[:80]}")

    def binding(self, binding) -> None:
        from tvm import relax

        if isinstance(binding, relax.MatchCast):
            _static_shape(binding.ty, f"match_cast of {binding.var.name}")
            self.values[binding.var] = self.value(binding.value)
            return
        expr = binding.value
        if isinstance(expr, relax.Call):
            self.values[binding.var] = self.call(binding.var, expr)
        elif isinstance(expr, relax.If):
            raise unsupported("control flow (relax.If)")
        else:
            self.values[binding.var] = self.value(expr)

    def call(self, var, call):
        from tvm import ir, relax, tirx

        if isinstance(call.op, relax.GlobalVar):
            func = self.mod[call.op]
            if not isinstance(func, tirx.PrimFunc):
                raise unsupported(f"a call to the Relax function {call.op.name_hint}")
            symbol = func.attrs["global_symbol"] if func.attrs and "global_symbol" in \
                func.attrs else call.op.name_hint
            self.plan.calls.append((str(symbol), [self.arg(a) for a in call.args]))
            return ()
        if not isinstance(call.op, ir.Op):
            raise unsupported(f"a call to {str(call.op)[:80]} (packed function)")
        name = call.op.name
        if name == "relax.memory.alloc_storage":
            size = self.int_list(call.args[0], "storage size")[0]
            offset = self.plan.arena_bytes
            self.plan.arena_bytes = _round(offset + size)
            return ("storage", offset)
        if name == "relax.memory.alloc_tensor":
            kind, base = self.value(call.args[0])
            shape, dtype = _static_shape(var.ty, var.name)
            offset = self.int_value(call.args[1], "tensor offset")
            return self.tensor(Tensor("a", base + offset, dtype, shape))
        if name in ("relax.reshape", "relax.memory.view"):
            src = self.plan.tensors[self.value(call.args[0])]
            shape, dtype = _static_shape(var.ty, var.name)
            return self.tensor(Tensor(src.kind, src.where, dtype, shape))
        raise unsupported(f"the operator {name}")

    def int_list(self, expr, what: str) -> list[int]:
        from tvm import relax, tirx

        if isinstance(expr, relax.ShapeExpr) and all(isinstance(v, tirx.IntImm)
                                                     for v in expr.values):
            return [int(v) for v in expr.values]
        raise unsupported(f"dynamic {what} {expr}")

    def int_value(self, expr, what: str) -> int:
        from tvm import tirx

        if isinstance(expr, tirx.IntImm):
            return int(expr.value)
        raise unsupported(f"the symbolic {what} {expr}")

    def arg(self, expr) -> str:
        from tvm import tirx

        if isinstance(expr, tirx.IntImm):
            return f"I{int(expr.value)}"
        value = self.value(expr)
        if not isinstance(value, int):
            raise unsupported(f"the kernel argument {str(expr)[:80]}")
        return f"T{value}"


def _flatten(value) -> list[int]:
    if isinstance(value, tuple):
        return [i for v in value for i in _flatten(v)]
    return [value]


def _check_static(body) -> None:
    """Name the first tensor whose shape is only known at run time (a data-dependent shape)."""
    from tvm import relax

    for block in body.blocks:
        for binding in block.bindings:
            ty = binding.var.ty
            if isinstance(ty, relax.TensorType) and ty.shape is not None:
                value, what = binding.value, binding.var.name
                if isinstance(value, relax.Call):
                    func = next((a for a in value.args if isinstance(a, relax.ExternFunc)),
                                value.op)
                    name = getattr(func, "global_symbol", None) or getattr(func, "name", None) \
                        or getattr(func, "name_hint", None)
                    what += f" (computed by {name})" if name else ""
                _static_shape(ty, what)


def make_plan(mod, num_outputs: int) -> Plan:
    """The plan of ``mod['main']`` (memory-planned, see :mod:`kiln.standalone.lower`)."""
    from tvm import relax

    main = mod["main"]
    walker = _Walker(mod)
    for index, param in enumerate(main.params):
        shape, dtype = _static_shape(param.ty, f"input {param.name}")
        walker.values[param] = walker.tensor(Tensor("i", index, dtype, shape))
    body = main.body
    if not isinstance(body, relax.SeqExpr):
        raise unsupported(f"a function body of type {type(body).__name__}")
    _check_static(body)
    for block in body.blocks:
        for binding in block.bindings:
            walker.binding(binding)
    outputs = _flatten(walker.value(body.body))
    if len(outputs) != num_outputs or not all(isinstance(o, int) for o in outputs):
        raise unsupported(f"{len(outputs)} outputs where the signature has {num_outputs}")
    walker.plan.outputs = outputs
    return walker.plan
