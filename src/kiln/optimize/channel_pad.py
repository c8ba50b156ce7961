"""Zero output channels for convolutions whose channel count fits no register tile.

The CPU schedules vectorize a conv over its output channels. A count that is not a multiple of
the vector width (ShuffleNetV2's 58 and 116 channels) left a vector of 2 or 4 lanes, and a
prime number of whole vectors (232 channels: 29 AVX2 vectors) a tile one vector wide: its
1x1 convs ran at 0.3-0.7x ONNX Runtime's speed, which pads channels to its NCHWc blocks. This
pass, before the layout change, gives each such conv with constant weights zero filters up to
the next count of whole vectors that the tiles take (even, or a multiple of 3 or 5 vectors;
at most 1/8 more), and slices the real channels back out right after it. The slice and the
bias / activation after it become one elementwise pass over the output.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax import Call, Expr, PyExprMutator, expr_functor

from kiln.optimize.relax_rewrite import constant_weight_conv, rewrite_functions

#: Most zero channels added, as a share of the real ones.
MAX_WASTE = 0.125


def padded_channels(channels: int, lanes: int) -> int:
    """The channel count to compute: ``channels`` itself when its vectors fill a tile."""
    def good(n: int) -> bool:
        count = n // lanes
        return n % lanes == 0 and (count % 2 == 0 or count % 3 == 0 or count % 5 == 0)

    if channels <= lanes or good(channels):
        return channels
    n = -(-channels // lanes) * lanes
    while not good(n):
        n += lanes
    return n if n <= (1 + MAX_WASTE) * channels else channels


@expr_functor.mutator
class _ChannelPad(PyExprMutator):
    def __init__(self, mod, lanes: int):
        super().__init__(mod)
        self.lanes = lanes

    def visit_call_(self, call: Call) -> Expr:
        new = super().visit_call_(call)
        match = constant_weight_conv(call, new, "relax.nn.conv2d", "OIHW")
        if match is None or int(match[0].groups) != 1:
            return new
        a, data, w = match
        oc = w.shape[0]
        want = padded_channels(oc, self.lanes)
        if want == oc:
            return new
        wp = np.concatenate([w, np.zeros((want - oc, *w.shape[1:]), w.dtype)], axis=0)
        y = self.builder_.emit(relax.op.nn.conv2d(
            data, relax.const(wp), strides=a.strides, padding=a.padding, dilation=a.dilation,
            groups=1, data_layout="NCHW", kernel_layout="OIHW", out_layout="NCHW",
            out_dtype=str(call.ty.dtype)))
        return relax.op.strided_slice(y, [1], [0], [oc])


def conv_channel_pad(lanes: int) -> tvm.transform.Pass:
    """The pass for vectors of ``lanes`` (see the module doc)."""

    @tvm.transform.module_pass(opt_level=0, name="KilnConvChannelPad")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_functions(mod, _ChannelPad(mod, lanes))

    return _pass
