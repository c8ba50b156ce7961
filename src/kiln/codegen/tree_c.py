"""Generate plain C for a tree ensemble from a treelite 4 model (no tl2cgen, no TVM).

The model is read through treelite's field accessors (exact typed arrays, no JSON dump), and
written as one C function per tree: the nodes in depth-first order, the left child falling
through and the right child reached by ``goto`` (no nesting, so deep trees compile). Sums are
kept in double; averaging, base scores and the postprocessor follow treelite's GTIL
(``src/gtil/predict.cc``, ``postprocessor.cc``). Trees are split over several C files so that
zig compiles big ensembles in parallel and a single file never grows without bound.

The generated ``model.so`` exports, for ``kiln_tree_runtime.c``::

    int32_t kiln_tree_abi, kiln_tree_num_feature, kiln_tree_num_output;
    void kiln_tree_predict(const float* x, int64_t rows, float* out);
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kiln.errors import KilnError
from kiln.importers.tree_header import TreeHeader, check_supported, read_header

#: treelite TreeNodeType and Operator enums
_LEAF, _NUMERICAL, _CATEGORICAL = 0, 1, 2
_OPS = {1: "==", 2: "<", 3: "<=", 4: ">", 5: ">="}
#: postprocessors applied element-wise, as C expressions of ``v`` (GTIL's definitions)
_ELEMENTWISE = {  # keep the names in step with kiln.importers.tree_header.POSTPROCESSORS
    "identity": "v", "identity_multiclass": "v",
    "signed_square": "copysign(v * v, v)", "hinge": "(v > 0 ? 1.0 : 0.0)",
    "sigmoid": "1.0 / (1.0 + exp(-ALPHA * v))", "multiclass_ova": "1.0 / (1.0 + exp(-ALPHA * v))",
    "exponential": "exp(v)", "exponential_standard_ratio": "exp2(-v / RATIO_C)",
    "logarithm_one_plus_exp": "log1p(exp(v))",
}
#: nodes per generated C file
_CHUNK_NODES = 20000


def _lit(value) -> str:
    """An exact C double literal (hex float) for a float32 or float64 value."""
    v = float(value)
    if np.isnan(v):
        return "NAN"
    if np.isinf(v):
        return "INFINITY" if v > 0 else "-INFINITY"
    return v.hex()


class _Tree:
    """The arrays of one tree, read once through treelite's accessor."""

    FIELDS = ("node_type", "cleft", "cright", "split_index", "default_left", "leaf_value",
              "threshold", "cmp", "category_list_right_child", "leaf_vector",
              "leaf_vector_begin", "leaf_vector_end", "category_list", "category_list_begin",
              "category_list_end")

    def __init__(self, model, index: int) -> None:
        acc = model.get_tree_accessor(index)
        for name in self.FIELDS:
            setattr(self, name, np.asarray(acc.get_field(name)))

    def leaf_vector_of(self, n: int):
        b, e = int(self.leaf_vector_begin[n]), int(self.leaf_vector_end[n])
        return self.leaf_vector[b:e] if e > b else None


def _leaf_adds(tree: _Tree, n: int, header: TreeHeader, index: int) -> list[str]:
    """``a[slot] += value`` statements for leaf ``n`` (GTIL's OutputLeafVector/Value)."""
    vec = tree.leaf_vector_of(n)
    tid, cid, mc = header.target_id[index], header.class_id[index], header.max_class
    if vec is None:
        return [f"a[{tid * mc + cid}] += {_lit(tree.leaf_value[n])};"]
    targets = range(header.num_target) if tid < 0 else [tid]
    classes = lambda t: range(header.num_class[t]) if cid < 0 else [cid]  # noqa: E731
    out = []
    for ti, t in enumerate(targets):
        for ci, c in enumerate(classes(t)):
            pos = (ti if tid < 0 else 0) * (mc if cid < 0 else 1) + (ci if cid < 0 else 0)
            if float(vec[pos]) != 0.0:
                out.append(f"a[{t * mc + c}] += {_lit(vec[pos])};")
    return out


def _split(tree: _Tree, n: int, index: int) -> str:
    """The statement that jumps to the right child of split node ``n``."""
    f, right = int(tree.split_index[n]), int(tree.cright[n])
    x, dl = f"x[{f}]", bool(tree.default_left[n])
    if int(tree.node_type[n]) == _CATEGORICAL:
        b, e = int(tree.category_list_begin[n]), int(tree.category_list_end[n])
        crc = int(bool(tree.category_list_right_child[n]))
        table = f"c{index}_{n}"
        test = f"{x} != {x} ? {int(not dl)} : (kiln_cat({x}, {table}, {e - b}) == {crc})"
        return f"if ({test}) goto n{right};"
    op = _OPS.get(int(tree.cmp[n]))
    if op is None:
        raise KilnError("invalid_model", f"tree {index} node {n} has comparison operator "
                        f"{int(tree.cmp[n])}", hint="the model file may be damaged")
    cond = f"!({x} {op} {_lit(tree.threshold[n])})"
    return f"if ({cond} && {x} == {x}) goto n{right};" if dl else f"if ({cond}) goto n{right};"


def tree_function(model, index: int, header: TreeHeader) -> tuple[str, int]:
    """C source of ``tree_<index>`` (and its category tables), and its node count."""
    tree = _Tree(model, index)
    tables, body, labelled, stack = [], [], set(), [0]
    while stack:
        n = stack.pop()
        if n in labelled:
            body.append(f"n{n}:")
        if int(tree.node_type[n]) == _LEAF:
            body.extend([*_leaf_adds(tree, n, header, index), "return;"])
            continue
        if int(tree.node_type[n]) == _CATEGORICAL:
            b, e = int(tree.category_list_begin[n]), int(tree.category_list_end[n])
            cats = ", ".join(str(int(c)) for c in tree.category_list[b:e]) or "0"
            tables.append(f"static const uint32_t c{index}_{n}[] = {{{cats}}};")
        body.append(_split(tree, n, index))
        labelled.add(int(tree.cright[n]))
        stack += [int(tree.cright[n]), int(tree.cleft[n])]
    # noinline: inlined into one chunk function, thousands of trees make clang superlinear
    src = "\n".join([*tables, f"__attribute__((noinline)) static void tree_{index}("
                               "const float* x, double* a) {",
                     *("  " + s for s in body), "}", ""])
    return src, len(tree.node_type)


_PRELUDE = """\
#include <math.h>
#include <stdint.h>
#define KILN_HIDDEN __attribute__((visibility("hidden")))
static inline int kiln_cat(float v, const uint32_t* list, int n) {
  if (LOWEST || v > 16777216.0f) return 0;
  uint32_t c = (uint32_t)v;
  for (int i = 0; i < n; ++i) if (list[i] == c) return 1;
  return 0;
}
"""
#: which values can match a category: treelite/XGBoost refuse every negative value; LightGBM
#: truncates toward zero first, so (-1, 0) is category 0
_CATEGORY_RULES = {"treelite": "v < 0", "lightgbm": "!(v > -1.0f)"}


def _post_row(header: TreeHeader, *, expand_binary: bool, negate: bool) -> list[str]:
    """C statements turning the sums ``a`` into the output row ``o`` (GTIL order)."""
    mc, lines = header.max_class, []
    if header.average_tree_output:
        factor = np.zeros(header.slots, dtype=np.int64)
        for tid, cid in zip(header.target_id, header.class_id):
            for t in (range(header.num_target) if tid < 0 else [tid]):
                for c in (range(header.num_class[t]) if cid < 0 else [cid]):
                    factor[t * mc + c] += 1
        lines += [f"a[{i}] /= {int(f)}.0;" for i, f in enumerate(factor) if f > 1]
    lines += [f"a[{i}] += {_lit(b)};" for i, b in enumerate(header.base_scores[:header.slots])
              if b != 0.0]
    if header.postprocessor == "softmax":
        lines += [f"kiln_softmax(a + {t * mc}, {header.num_class[t]});"
                  for t in range(header.num_target)]
    elif _ELEMENTWISE[header.postprocessor] != "v":
        expr = (_ELEMENTWISE[header.postprocessor].replace("ALPHA", _lit(header.sigmoid_alpha))
                .replace("RATIO_C", _lit(header.ratio_c)))
        lines.append(f"for (int i = 0; i < {header.slots}; ++i) {{ double v = a[i]; a[i] = {expr}; }}")
    sign = "-" if negate else ""
    if expand_binary:
        lines += [f"o[0] = (float)(1.0 - {sign}a[0]);", f"o[1] = (float)({sign}a[0]);"]
    else:
        lines.append(f"for (int i = 0; i < {header.slots}; ++i) o[i] = (float)({sign}a[i]);")
    return lines


_SOFTMAX = """\
static void kiln_softmax(double* r, int n) {
  double m = r[0], s = 0.0;
  for (int i = 1; i < n; ++i) m = r[i] > m ? r[i] : m;
  for (int i = 0; i < n; ++i) { r[i] = exp(r[i] - m); s += r[i]; }
  for (int i = 0; i < n; ++i) r[i] /= s;
}
"""


def write_sources(model, header: TreeHeader, out_dir: Path, *, expand_binary: bool = False,
                  negate: bool = False, category_rule: str = "treelite") -> list[Path]:
    """Write the model's C files into ``out_dir``; return their paths (main file first)."""
    prelude = _PRELUDE.replace("LOWEST", _CATEGORY_RULES[category_rule])
    check_supported(header)
    num_tree = int(model.num_tree)
    chunks, current, nodes = [], [], 0
    for i in range(num_tree):
        src, count = tree_function(model, i, header)
        current.append((i, src))
        nodes += count
        if nodes >= _CHUNK_NODES or i == num_tree - 1:
            chunks.append(current)
            current, nodes = [], 0
    files = []
    for k, chunk in enumerate(chunks):
        calls = "".join(f"  tree_{i}(x, a);\n" for i, _ in chunk)
        text = (prelude + "\n".join(src for _, src in chunk)
                + f"KILN_HIDDEN void kiln_chunk_{k}(const float* x, double* a) {{\n{calls}}}\n")
        path = out_dir / f"trees_{k}.c"
        path.write_text(text)
        files.append(path)
    n_out = 2 if expand_binary else header.slots
    decls = "".join(f"KILN_HIDDEN void kiln_chunk_{k}(const float* x, double* a);\n"
                    for k in range(len(chunks)))
    calls = "".join(f"  kiln_chunk_{k}(x, a);\n" for k in range(len(chunks)))
    post = "".join(f"  {s}\n" for s in _post_row(header, expand_binary=expand_binary,
                                                  negate=negate))
    main = (f"#include <math.h>\n#include <stdint.h>\n#define KILN_HIDDEN "
            f"__attribute__((visibility(\"hidden\")))\n{decls}{_SOFTMAX}"
            f"const int32_t kiln_tree_abi = 1;\n"
            f"const int32_t kiln_tree_num_feature = {header.num_feature};\n"
            f"const int32_t kiln_tree_num_output = {n_out};\n"
            f"static void predict_row(const float* x, float* o) {{\n"
            f"  double a[{header.slots}] = {{0}};\n{calls}{post}}}\n"
            f"void kiln_tree_predict(const float* x, int64_t rows, float* out) {{\n"
            f"  for (int64_t r = 0; r < rows; ++r)\n"
            f"    predict_row(x + r * {header.num_feature}, out + r * {n_out});\n}}\n")
    main_path = out_dir / "model_main.c"
    main_path.write_text(main)
    return [main_path, *files]


__all__ = ["TreeHeader", "check_supported", "read_header", "tree_function", "write_sources"]
