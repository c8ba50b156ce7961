"""Transposed 2-D convolutions as ordinary convolutions.

TVM 0.27 legalizes ``relax.nn.conv2d_transpose`` into a reduction that none of Kiln's CPU
schedules (nor DLight's) recognizes, so it ran as one scalar loop nest on one core: a UNet with
three 2x2 / stride-2 up-convolutions took 3.5 s where ONNX Runtime takes 35 ms. This pass
rewrites each one whose weight is a constant (NCHW data, IOHW weight, no dilation) into ops that
the conv schedules (and ConvertLayout's NHWC) already cover:

* kernel equal to the stride, no padding (UNet's up-convolutions): a 1x1 conv to
  ``out_channels * kh * kw`` channels, then a depth-to-space reshape / transpose. Each output
  pixel comes from exactly one input pixel, so this does no extra arithmetic;
* anything else (DCGAN's 4x4 / stride 2 / pad 1, groups too): zeros inserted between the input
  pixels (a reshape, pad and reshape), then a conv with stride 1 over the flipped, transposed
  weights and padding ``k - 1 - pad`` (plus ``output_padding`` at the end). The inserted zeros
  are multiplied too (``stride**2`` times the arithmetic), still far from the scalar loop.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax import Call, Expr, PyExprMutator, expr_functor

from kiln.optimize.relax_rewrite import constant_weight_conv, rewrite_functions, static_shape


def _ints(values) -> list[int]:
    return [int(v) for v in values]


def _weights_as_conv(w: np.ndarray, groups: int) -> np.ndarray:
    """IOHW transposed-conv weights [C, OC/g, kh, kw] -> OIHW conv weights [OC, C/g, kh, kw],
    flipped in both spatial axes."""
    c, ocg = w.shape[:2]
    cg = c // groups
    parts = [w[g * cg:(g + 1) * cg, :, ::-1, ::-1].transpose(1, 0, 2, 3) for g in range(groups)]
    return np.ascontiguousarray(np.concatenate(parts, axis=0)) if ocg else w


@expr_functor.mutator
class _ConvTranspose(PyExprMutator):
    def visit_call_(self, call: Call) -> Expr:
        new = super().visit_call_(call)
        match = constant_weight_conv(call, new, "relax.nn.conv2d_transpose", "IOHW")
        if match is None:
            return new
        a, data, w = match
        shape = static_shape(data)
        if shape is None or len(shape) != 4 or _ints(a.dilation) != [1, 1]:
            return new
        groups = int(a.groups)
        sh, sw = _ints(a.strides)
        pt, pl, pb, pr = _ints(a.padding)
        oph, opw = _ints(a.output_padding)
        kh, kw = w.shape[2:]
        out_dtype = str(call.ty.dtype)
        bb = self.builder_
        n, c, h, wd = shape
        if groups == 1 and (kh, kw) == (sh, sw) and not any((pt, pl, pb, pr, oph, opw)):
            oc = w.shape[1]
            w1 = np.ascontiguousarray(w.transpose(1, 2, 3, 0).reshape(oc * kh * kw, c, 1, 1))
            y = bb.emit(relax.op.nn.conv2d(data, relax.const(w1), out_dtype=out_dtype))
            y = bb.emit(relax.op.reshape(y, [n, oc, kh, kw, h, wd]))
            y = bb.emit(relax.op.permute_dims(y, [0, 1, 4, 2, 5, 3]))
            return relax.op.reshape(y, [n, oc, h * kh, wd * kw])
        # zeros between the pixels: [N, C, H, 1, W, 1] padded to [N, C, H, sh, W, sw]
        x = data
        if (sh, sw) != (1, 1):
            x = bb.emit(relax.op.reshape(x, [n, c, h, 1, wd, 1]))
            x = bb.emit(relax.op.nn.pad(x, [0, 0, 0, 0, 0, 0, 0, sh - 1, 0, 0, 0, sw - 1]))
            x = bb.emit(relax.op.reshape(x, [n, c, h * sh, wd * sw]))
        # the dilated input ends in sh - 1 (sw - 1) zero rows (columns) already
        top, left = kh - 1 - pt, kw - 1 - pl
        bottom, right = kh - 1 - pb + oph - (sh - 1), kw - 1 - pr + opw - (sw - 1)
        if min(top, left) < 0:
            return new  # padding wider than the kernel: TVM's own lowering
        if min(bottom, right) < 0:
            x = bb.emit(relax.op.strided_slice(
                x, [2, 3], [0, 0], [h * sh + min(bottom, 0), wd * sw + min(right, 0)]))
            bottom, right = max(bottom, 0), max(right, 0)
        wc = relax.const(_weights_as_conv(w, groups))
        return relax.op.nn.conv2d(x, wc, padding=(top, left, bottom, right), groups=groups,
                                  out_dtype=out_dtype)


@tvm.transform.module_pass(opt_level=0, name="KilnConvTransposeAsConv")
def conv_transpose_as_conv(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """The module with its constant-weight 2-D transposed convs rewritten (module doc)."""
    return rewrite_functions(mod, _ConvTranspose(mod))
