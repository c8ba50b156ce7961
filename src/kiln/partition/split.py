"""Decide, node by node, whether an accelerator runs it (kiln.partition.opsets) and why not;
cut the graph into accelerator and CPU segments; count MACs for the offloaded share."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Segment:
    device: str                     # "accelerator" or "cpu"
    nodes: list = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


def assign(model, table: dict) -> list[tuple[object, bool, str]]:
    """(node, offloaded, reason) for every node of the shape-inferred float ``model``."""
    shapes = tensor_shapes(model)
    consts = {t.name: t for t in model.graph.initializer}
    return [(n, *_check(n, table, shapes, consts)) for n in model.graph.node]


def _check(node, table: dict, shapes: dict, consts: dict) -> tuple[bool, str]:
    rules = table["ops"].get(node.op_type)
    if rules is None:
        return False, f"{node.op_type} is not in {table['name']}'s operator set"
    attrs = _attrs(node)
    if node.op_type in ("GlobalAveragePool", "GlobalMaxPool"):
        hw = shapes.get(node.input[0], [])[2:]
        attrs["kernel_shape"] = list(hw)
    if node.op_type in ("Conv", "ConvTranspose") and "kernel_shape" not in attrs:
        attrs["kernel_shape"] = list(shapes.get(node.input[1], [])[2:])  # from the weights
    for name, check in _CHECKS:
        problem = check(rules, attrs, node, consts) if name in rules or name == "*" else None
        if problem:
            return False, f"{node.op_type}: {problem} ({table['name']})"
    return True, "folded into its neighbour" if rules.get("folded") else "supported"


def _range_check(key: str, attr: str):
    def check(rules, attrs, node, consts):
        lo, hi = rules[key]
        bad = [v for v in attrs.get(attr, []) if not lo <= v <= hi]
        return f"{attr} {attrs.get(attr)} outside [{lo}, {hi}]" if bad else None
    return check


def _set_check(key: str, attr: str):
    def check(rules, attrs, node, consts):
        bad = [v for v in attrs.get(attr, []) if v not in rules[key]]
        return f"{attr} {attrs.get(attr)} not in {rules[key]}" if bad else None
    return check


def _pad_check(rules, attrs, node, consts):
    k, pads = attrs.get("kernel_shape", []), attrs.get("pads", [])
    nd = len(k)
    bad = [p for i, p in enumerate(pads) if nd and p > k[i % nd] - 1]
    return f"pads {pads} larger than kernel - 1" if bad else None


def _square_check(rules, attrs, node, consts):
    k = attrs.get("kernel_shape", [])
    return f"kernel {k} is not square" if len(set(k)) > 1 else None


def _clip_check(rules, attrs, node, consts):
    lo, hi = rules["clip_range"]
    vals = [_const(consts, node.input[i]) if len(node.input) > i and node.input[i] else None
            for i in (1, 2)]
    got = (attrs.get("min", vals[0]), attrs.get("max", vals[1]))
    ok = got[0] is not None and got[1] is not None and np.isclose(got[0], lo) and \
        np.isclose(got[1], hi)
    return None if ok else f"Clip{list(got)} is not ReLU6 [{lo}, {hi}]"


def _mode_check(rules, attrs, node, consts):
    mode = attrs.get("mode", "constant" if node.op_type == "Pad" else "nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    return f"mode {mode!r} not in {rules['modes']}" if mode not in rules["modes"] else None


_CHECKS = (("kernel", _range_check("kernel", "kernel_shape")),
           ("stride", _range_check("stride", "strides")),
           ("kernel_in", _set_check("kernel_in", "kernel_shape")),
           ("stride_in", _set_check("stride_in", "strides")),
           ("pad_lt_kernel", _pad_check), ("square", _square_check),
           ("clip_range", _clip_check), ("modes", _mode_check))


def segments(assigned: list[tuple[object, bool, str]], graph) -> list[Segment]:
    """Maximal runs of consecutive (topologically ordered) nodes on one device, with the
    tensors each run reads from outside and the tensors it hands on (or the graph outputs)."""
    segs: list[Segment] = []
    for node, offloaded, _ in assigned:
        device = "accelerator" if offloaded else "cpu"
        if not segs or segs[-1].device != device:
            segs.append(Segment(device))
        segs[-1].nodes.append(node)
    consts = {t.name for t in graph.initializer}
    final = [o.name for o in graph.output]
    for i, seg in enumerate(segs):
        made = {o for n in seg.nodes for o in n.output}
        later = {x for s in segs[i + 1:] for n in s.nodes for x in n.input} | set(final)
        seen_in: list[str] = []
        for n in seg.nodes:
            seen_in += [x for x in n.input if x and x not in made and x not in consts
                        and x not in seen_in]
        seg.inputs = seen_in
        seg.outputs = [o for n in seg.nodes for o in n.output if o in later]
    return segs


def macs(node, shapes: dict, consts: dict) -> int:
    """Multiply-accumulates of one node (convolutions and matrix products; 0 otherwise)."""
    out = shapes.get(node.output[0]) if node.output else None
    if not out or any(d <= 0 for d in out):
        return 0
    if node.op_type in ("Conv", "ConvTranspose"):
        w = shapes.get(node.input[1]) or list(consts[node.input[1]].dims)
        return int(np.prod(out)) * int(np.prod(w[1:]))
    if node.op_type in ("Gemm", "MatMul"):
        a = shapes.get(node.input[0], [])
        k = a[-1] if a else 0
        if node.op_type == "Gemm" and _attrs(node).get("transA"):
            k = a[0]
        return int(np.prod(out)) * int(k)
    return 0


def tensor_shapes(model) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for vi in (*model.graph.value_info, *model.graph.input, *model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        out[vi.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    for t in model.graph.initializer:
        out[t.name] = list(t.dims)
    return out


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _const(consts: dict, name: str):
    from onnx import numpy_helper

    return float(numpy_helper.to_array(consts[name])) if name in consts else None
