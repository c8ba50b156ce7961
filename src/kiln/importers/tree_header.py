"""The header of a treelite 4 model (what the C generator and the signature need)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kiln.errors import KilnError

#: the postprocessors kiln.codegen.tree_c can generate (treelite's names)
POSTPROCESSORS = ("exponential", "exponential_standard_ratio", "hinge", "identity",
                  "identity_multiclass", "logarithm_one_plus_exp", "multiclass_ova", "sigmoid",
                  "signed_square", "softmax")


@dataclass(frozen=True)
class TreeHeader:
    """What the generated code needs from treelite's model header."""

    num_feature: int
    num_target: int
    num_class: tuple[int, ...]
    leaf_vector_shape: tuple[int, int]
    target_id: tuple[int, ...]
    class_id: tuple[int, ...]
    postprocessor: str
    sigmoid_alpha: float
    ratio_c: float
    base_scores: tuple[float, ...]
    average_tree_output: bool

    @property
    def max_class(self) -> int:
        return max(self.num_class)

    @property
    def slots(self) -> int:
        return self.num_target * self.max_class


def read_header(model) -> TreeHeader:
    h = model.get_header_accessor()

    def ints(name):
        return tuple(int(v) for v in np.asarray(h.get_field(name)).ravel())

    def one(name):
        return np.asarray(h.get_field(name)).ravel()[0].item()

    return TreeHeader(
        num_feature=int(one("num_feature")), num_target=int(one("num_target")),
        num_class=ints("num_class"), leaf_vector_shape=tuple(ints("leaf_vector_shape")),
        target_id=ints("target_id"), class_id=ints("class_id"),
        postprocessor=str(h.get_field("postprocessor")),
        sigmoid_alpha=float(one("sigmoid_alpha")), ratio_c=float(one("ratio_c")),
        base_scores=tuple(float(v) for v in np.asarray(h.get_field("base_scores")).ravel()),
        average_tree_output=bool(one("average_tree_output")))


def check_supported(header: TreeHeader) -> None:
    """Refuse what the generator does not express, with the reason."""
    if header.postprocessor not in POSTPROCESSORS:
        raise KilnError("invalid_model", f"the tree model's postprocessor "
                        f"{header.postprocessor!r} is not supported",
                        hint=f"supported: {', '.join(POSTPROCESSORS)}")
    if len(set(header.num_class)) != 1:
        raise KilnError("invalid_model", "targets with different class counts "
                        f"({list(header.num_class)}) are not supported",
                        hint="train one model per target")
    if header.num_target > 1 and header.max_class > 1:
        raise KilnError("invalid_model", "multi-output classifiers are not supported",
                        hint="train one classifier per target")
