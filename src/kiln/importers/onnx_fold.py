"""Fold an ONNX graph's shape arithmetic into constants before conversion.

Exporters compute reshape targets and slice bounds from the tensors' shapes at run time:
PyTorch's ``x.chunk(2, 1)`` becomes ``Shape -> Gather -> Add -> Div -> Mul -> Slice``, and
``x.view(n, 2, c // 2, h, w)`` a ``Shape -> Gather -> ... -> Concat -> Reshape``. TVM's ONNX
converter keeps such a ``Slice`` dynamic, so everything after it loses its static shape and
lowering fails ("emit_te now only supports Tensor that has ShapeExpr shape": a ShuffleNetV2).
Kiln binds every input shape at import, so these values are known: this pass runs ONNX's shape
inference with the bound shapes, evaluates each ``Shape`` / ``Size`` of a statically shaped
tensor and every node downstream of one whose inputs are all known (with ONNX's reference
evaluator, one node at a time), and replaces their outputs with initializers. Only small
values are folded (``MAX_ELEMENTS``): the weights' own arithmetic is left to TVM.
"""

from __future__ import annotations

import numpy as np

#: Largest folded value, in elements (shape vectors and slice bounds are a handful).
MAX_ELEMENTS = 4096
#: Most folding rounds (each one after shape inference on the previous round's graph).
MAX_ROUNDS = 8
#: Ops never evaluated at import time (random, or with subgraphs).
_SKIP = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
         "Bernoulli", "If", "Loop", "Scan"}


def _static_shapes(model, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape that shape inference can tell with the inputs bound to ``shapes``."""
    import onnx

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for vi in probe.graph.input:
        if vi.name in shapes:
            dims = vi.type.tensor_type.shape.dim
            del dims[:]
            for d in shapes[vi.name]:
                dims.add().dim_value = int(d)
    try:
        probe = onnx.shape_inference.infer_shapes(probe, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - no shapes: nothing is folded
        return dict(shapes)
    out = dict(shapes)
    for vi in (*probe.graph.value_info, *probe.graph.output, *probe.graph.input):
        tt = vi.type.tensor_type
        if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            out.setdefault(vi.name, tuple(int(d.dim_value) for d in tt.shape.dim))
    return out


def _shape_value(node, shape: tuple[int, ...]) -> np.ndarray:
    if node.op_type == "Size":
        return np.array(int(np.prod(shape, dtype=np.int64)), dtype=np.int64)
    attrs = {a.name: a.i for a in node.attribute}
    start, end = attrs.get("start", 0), attrs.get("end", len(shape))
    return np.array(shape[start:end], dtype=np.int64)


def _evaluate(node, values: list, opsets) -> list[np.ndarray] | None:
    import onnx
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    names = [f"i{k}" if name else "" for k, name in enumerate(node.input)]
    one = helper.make_node(node.op_type, names, [f"o{k}" for k in range(len(node.output))],
                           domain=node.domain)
    one.attribute.extend(node.attribute)
    graph = helper.make_graph(
        [one], "fold",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for n, v in zip(names, values) if n],
        [helper.make_tensor_value_info(f"o{k}", onnx.TensorProto.UNDEFINED, None)
         for k in range(len(node.output))])
    try:
        outs = ReferenceEvaluator(helper.make_model(graph, opset_imports=opsets)).run(
            None, {n: v for n, v in zip(names, values) if n})
    except Exception:  # noqa: BLE001 - an op the evaluator lacks: leave the node to TVM
        return None
    return [np.asarray(o) for o in outs]


def _subgraph_inputs(nodes) -> set[str]:
    """Names read by the nodes of ``nodes``' subgraphs (If / Loop bodies), at any depth."""
    import onnx

    names: set[str] = set()
    for node in nodes:
        for a in node.attribute:
            for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                names |= {n for sub in g.node for n in sub.input} | _subgraph_inputs(g.node)
    return names


def fold_shape_arithmetic(model, shapes: dict[str, tuple[int, ...]]):
    """``model`` with its shape arithmetic folded (see the module doc), or ``model`` itself
    when it has no ``Shape`` / ``Size`` node of a statically shaped tensor.

    Repeated while it folds something: a ``Slice`` whose bounds were just folded gives its
    output a static shape, whose ``Shape`` the next round folds (a split, then a shuffle)."""
    for _ in range(MAX_ROUNDS):
        folded = _fold_once(model, shapes)
        if folded is model:
            return model
        model = folded
    return model


def _fold_once(model, shapes: dict[str, tuple[int, ...]]):
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    if not any(n.op_type in ("Shape", "Size") for n in graph.node):
        return model
    static = _static_shapes(model, shapes)
    known: dict[str, np.ndarray] = {}  # small constants, and the folded values
    for init in graph.initializer:
        if int(np.prod(init.dims, dtype=np.int64)) <= MAX_ELEMENTS:
            known[init.name] = numpy_helper.to_array(init)
    derived: dict[str, np.ndarray] = {}  # values that depend on a shape: the folded ones
    folded = set()
    outputs = {o.name for o in graph.output}
    for i, node in enumerate(graph.node):
        if node.domain not in ("", "ai.onnx") or node.op_type in _SKIP \
                or any(o in outputs for o in node.output):
            continue
        if node.op_type == "Constant":
            t = next((a.t for a in node.attribute if a.name == "value"), None)
            if t is not None and int(np.prod(t.dims, dtype=np.int64)) <= MAX_ELEMENTS:
                known[node.output[0]] = numpy_helper.to_array(t)
            continue
        if node.op_type in ("Shape", "Size"):
            if node.input[0] in static:
                derived[node.output[0]] = _shape_value(node, static[node.input[0]])
                known[node.output[0]] = derived[node.output[0]]
                folded.add(i)
            continue
        if not any(n in derived for n in node.input) or not all(not n or n in known for n in node.input):
            continue
        outs = _evaluate(node, [known[n] if n else None for n in node.input], model.opset_import)
        if outs is None or any(o.size > MAX_ELEMENTS for o in outs):
            continue
        derived.update(zip(node.output, outs))
        known.update(zip(node.output, outs))
        folded.add(i)
    if not folded:
        return model
    kept = [n for i, n in enumerate(graph.node) if i not in folded]
    needed = {n for node in kept for n in node.input} | _subgraph_inputs(kept) | outputs
    # Constant nodes that only fed folded nodes go too
    kept = [n for n in kept if n.op_type != "Constant" or any(o in needed for o in n.output)]
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(kept)
    have = {init.name for init in out.graph.initializer}
    for name, value in derived.items():
        if name in needed and name not in have:
            out.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    return out
