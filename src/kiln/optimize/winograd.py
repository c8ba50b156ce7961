"""3x3 convolutions as Winograd F(m x m, 3 x 3): fewer multiplies, the rest a batched matmul.

A stride-1 3x3 conv computes each m x m output tile from an (m+2) x (m+2) input tile. Winograd's
minimal filtering transforms the input tile (``B^T d B``) and the filter (``G g G^T``, done here
at compile time), multiplies the two elementwise per channel pair, and transforms the products
back (``A^T M A``): 36 products per 4x4 tile (F(4,3)) instead of 144, 16 per 2x2 tile (F(2,3))
instead of 36. Summed over the input channels, the products are one matmul per tile position,
(alpha^2 batches of tiles x channels times channels x filters), which the CPU schedules already
tile and vectorize. The two transforms are elementwise kernels with constant coefficients
(``kiln.winograd`` block annotation): the CPU schedule vectorizes them over the channels and
unrolls the tile, so each coefficient is a constant and zero ones vanish.

This pass runs after the layout change (NHWC data, HWIO weights), on convs with constant weights
large enough to pay (a map of at least ``MIN_TILES`` tiles, ``MIN_CHANNELS`` channels in and
out) and whose transformed weights and activations stay under ``MAX_WEIGHT_BYTES`` and
``MAX_TRANSFORMED_BYTES``. float32 only: the
transforms' rounding grows with the tile (single convs, max error over the output's largest
value against ONNX Runtime: F(4,3) 1.6-2.4e-6, F(2,3) 0.4-0.7e-6, the direct conv 0.7-1.4e-6).
``kiln compile --no-winograd`` (``CompileOptions(winograd=False)``) turns the pass off.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te, tirx
from tvm.relax import Call, Expr, PyExprMutator, expr_functor

# block annotations the CPU schedule's Winograd rule reads: the two transforms (value: the
# output tile size m) and the first of each transform's two stages
from kiln.optimize.cpu_schedule import WINOGRAD as ANNOTATION
from kiln.optimize.cpu_schedule import WINOGRAD_STAGE as STAGE
from kiln.optimize.relax_rewrite import rewrite_functions, static_shape

MIN_CHANNELS = 16
MIN_TILES = 16
#: most bytes of transformed weights (alpha^2 / 9 times the conv's): a 512-channel conv on a 7x7
#: map (2x2 tiles: 16.8 MB instead of 9.4) is bound by streaming them, and gained 6% in ResNet-18
MAX_WEIGHT_BYTES = 8 << 20
#: most bytes of each transformed activation (alpha^2 / m^2 times the map: 2.25x at F(4,3), 4x
#: at F(2,3)): a 256x256 map of 64 channels (38 MB) stays a direct conv, so that peak memory
#: does not grow by more than this per conv
MAX_TRANSFORMED_BYTES = 32 << 20
OUT_EWISE = 4  # TVM's kOutEWiseFusable op pattern
MAX_PADDED = 1.35  # most outputs computed per output needed (tiles past the edge)


def _matrices(m: int):
    """(A, B, G) of F(m, 3), float64: output = A^T [(G g G^T) * (B^T d B)] A."""
    from tvm.topi.nn.winograd_util import _cook_toom_convolution, _interpolation_points

    return _cook_toom_convolution(_interpolation_points(m + 2), m, 3)


def tile_size(out_h: int, out_w: int) -> int | None:
    """The output tile for an ``out_h`` x ``out_w`` map: 4 where it divides both, else 2 where
    the tiles past the map's edge compute at most ``MAX_PADDED`` times the outputs needed (7x7
    in 4x4 tiles of 2x2: 1.31), else None (the conv stays direct); never fewer than
    ``MIN_TILES`` tiles."""
    def tiles(m: int) -> int:
        return -(-out_h // m) * -(-out_w // m)

    if out_h % 4 == 0 and out_w % 4 == 0 and tiles(4) >= MIN_TILES:
        return 4
    if tiles(2) >= MIN_TILES and tiles(2) * 4 <= MAX_PADDED * out_h * out_w:
        return 2
    return None


def transform_weights(w_hwio: np.ndarray, m: int) -> np.ndarray:
    """``G g G^T`` of every (in, out) filter: (alpha*alpha, in, out) float32."""
    _, _, g = _matrices(m)
    u = np.einsum("xa,abco,yb->xyco", g, w_hwio.astype(np.float64), g)
    a = m + 2
    return u.reshape(a * a, *w_hwio.shape[2:]).astype(np.float32)


def _combo(coefs, terms):
    """sum(c * t) with the zero coefficients left out and +-1 as plain adds."""
    out = None
    for c, t in zip(coefs, terms):
        if c == 0:
            continue
        term = t if c == 1 else (-t if c == -1 else t * tirx.const(float(c), "float32"))
        out = term if out is None else out + term
    return out if out is not None else tirx.const(0.0, "float32")


def _select(index, exprs):
    """exprs[index] for a loop variable ``index``, as a chain of ifs: constant once the loop is
    unrolled."""
    out = exprs[-1]
    for k in range(len(exprs) - 2, -1, -1):
        out = tirx.if_then_else(index == k, exprs[k], out)
    return out


def input_transform(x: te.Tensor, m: int, pad_t: int, pad_l: int, th: int, tw: int):
    """V[e, p, c]: ``B^T d B`` of every input tile p (batch, tile row, tile column) and channel c,
    e = xi * alpha + nu; in two stages, ``B^T d`` (``winograd_input_cols``) then ``(.) B``, so
    each stage's expression picks one of alpha sums by one index."""
    n, h, w, c = (int(s) for s in x.shape)
    a = m + 2
    _, b, _ = _matrices(m)

    def d(p, ch, i, j):
        bi, rem = p // (th * tw), p % (th * tw)
        hh, ww = (rem // tw) * m - pad_t + i, (rem % tw) * m - pad_l + j
        inside = tirx.all(hh >= 0, hh < h, ww >= 0, ww < w)
        return tirx.if_then_else(inside, x[bi, hh, ww, ch], tirx.const(0.0, x.dtype))

    cols = te.compute(
        (a, a, n * th * tw, c),
        lambda xi, j, p, ch: _select(xi, [_combo(b[:, k], [d(p, ch, i, j) for i in range(a)])
                                          for k in range(a)]),
        name="winograd_input_cols", attrs={STAGE: m})
    return te.compute(
        (a * a, n * th * tw, c),
        lambda e, p, ch: _select(e % a, [_combo(b[:, nu], [cols[e // a, j, p, ch]
                                                           for j in range(a)])
                                         for nu in range(a)]),
        name="winograd_input", attrs={ANNOTATION: m})


def output_transform(mm: te.Tensor, m: int, n: int, th: int, tw: int, oh: int, ow: int):
    """Y[b, h, w, k] (NHWC) from the tile products M[e, p, k]: ``A^T M A``, in two stages
    (``winograd_output_rows``: ``A^T M``, then ``(.) A``)."""
    a = m + 2
    amat, _, _ = _matrices(m)
    k_out = int(mm.shape[2])
    tiles = n * th * tw
    rows = te.compute(
        (m, a, tiles, k_out),
        lambda r, nu, p, k: _select(r, [_combo(amat[:, rr], [mm[xi * a + nu, p, k]
                                                             for xi in range(a)])
                                        for rr in range(m)]),
        name="winograd_output_rows", attrs={STAGE: m})

    def fcompute(bi, hh, ww, k):
        p = bi * (th * tw) + (hh // m) * tw + ww // m
        return _select(ww % m, [_combo(amat[:, s], [rows[hh % m, nu, p, k] for nu in range(a)])
                                for s in range(m)])

    return te.compute((n, oh, ow, k_out), fcompute, name="winograd_output",
                      attrs={ANNOTATION: m})


def _const_hwio(expr, lookup) -> np.ndarray | None:
    """The HWIO weights of a conv argument when they are a constant (const_fold, earlier in the
    pipeline, has folded the layout change's transpose of them)."""
    if isinstance(expr, relax.Var):
        expr = lookup(expr)
    return expr.value.numpy() if isinstance(expr, tvm.ir.expr.Constant) else None


@expr_functor.mutator
class _Winograd(PyExprMutator):
    def visit_call_(self, call: Call) -> Expr:
        new = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.nn.conv2d":
            return new
        a = call.attrs
        if a.data_layout != "NHWC" or a.kernel_layout != "HWIO" \
                or (a.out_layout and a.out_layout != "NHWC") or int(a.groups) != 1 \
                or [int(s) for s in a.strides] != [1, 1] or [int(s) for s in a.dilation] != [1, 1]:
            return new
        data = new.args[0]
        dshape, oshape = static_shape(data), static_shape(call)
        if str(data.ty.dtype) != "float32" or str(call.ty.dtype) != "float32" \
                or dshape is None or oshape is None:
            return new
        n, _, _, c = dshape
        _, oh, ow, k = oshape
        w = _const_hwio(new.args[1], self.lookup_binding)
        if w is None or w.shape[:2] != (3, 3) or c < MIN_CHANNELS or k < MIN_CHANNELS:
            return new
        m = tile_size(oh, ow)
        if m is None:
            return new
        if (m + 2) ** 2 * c * k * 4 > MAX_WEIGHT_BYTES:
            return new
        th, tw = -(-oh // m), -(-ow // m)
        if (m + 2) ** 2 * n * th * tw * max(c, k) * 4 > MAX_TRANSFORMED_BYTES:
            return new
        pad_t, pad_l = int(a.padding[0]), int(a.padding[1])
        v = self.builder_.emit_te(input_transform, data, m, pad_t, pad_l, th, tw,
                                  primfunc_name_hint="winograd_input")
        u = relax.const(transform_weights(w, m))
        prod = self.builder_.emit(relax.op.matmul(v, u))
        # returned unbound (call_te), so that it replaces the conv's own binding: an alias
        # binding in between would keep FuseOps from fusing the epilogue
        out = self.builder_.call_te(output_transform, prod, m, n, th, tw, oh, ow,
                                    primfunc_name_hint="winograd_output")
        # fused like a conv: its elementwise consumers (bias, activation, residual) become the
        # transform's epilogue, instead of a pass of their own or a prologue of the next conv
        gv = out.args[0]
        self.builder_.update_func(gv, self.builder_.get()[gv].with_attr("op_pattern", OUT_EWISE))
        return out


@tvm.transform.module_pass(opt_level=0, name="KilnWinograd")
def winograd_conv(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """The pass (see the module doc)."""
    return rewrite_functions(mod, _Winograd(mod))
