"""Default CPU schedules, applied to every CPU compile (no tuning, no measurement).

TVM 0.27 lowers Relax on ``llvm`` targets to plain loop nests: one thread, no tiling, no
explicit vectorization. This pass gives every fused PrimFunc a schedule from three rules:

* **tiled reduction** (matmul, batch matmul, dense, conv2d of every kind): the output is
  accumulated in a register tile of ``U`` rows (an axis the vector operand does not use: the
  rows of A, the output channels of a conv) by ``V`` vector lanes (the contiguous last output
  axis), the reduction runs outside that tile, the other output axes are fused into one
  parallel loop, and elementwise epilogues (bias, activation, residual) are fused into the
  write-back of the tile; when a row axis is too short for a two-vector tile (the 14 or 7
  pixels of a small feature map), or when its row tiles would recompute 5% or more of it
  (56 pixels in 6-row tiles), it is fused with the axis above it (all 196, 49 or 3136 pixels);
  where that wastes little (or no row count divides the rows) the last tile overlaps the one
  before it instead of being cut short (a predicated tile branched inside the reduction loop);
  an odd number of vectors (24, 40 or 1000 channels) gets a tile of 3 vectors by 4 rows or
  5 by 2, unrolled over single vectors;
* **channel reduction** (pooling and global means of an NHWC map): vectorized over the
  channels, the window or the map summed outside the vector, parallel over pixels;
* **row reduction** (softmax, layer norm, other reductions): parallel over the output rows;
* **transpose** (an injective block reading an input in another order than it writes:
  transpose, reshape, broadcast, padding): the last axis is the vector, the leading axes a
  parallel loop, the others plain loops, so that every index stays affine in the loops; where
  the input is contiguous along another output axis, that axis and the vector form a tile;
* **injective** (elementwise): all loops fused, split into a parallel outer loop and a
  vectorized inner loop;
* **Winograd transform** (blocks kiln.optimize.winograd annotates): the epilogue fused in,
  parallel over tiles and channel vectors, the tile's loops unrolled so that every coefficient
  is a constant, the transform's first stage computed per tile into a buffer under 1 KB (TVM
  puts those on the stack; a larger one became a workspace allocated per tile, 5x slower).

Before these rules, copies that would cost a pass over the activations are inlined into their
consumer: the zero-width pad of a 1x1 conv, the zero pad of a depthwise conv (its padding
test becomes one branch per vector load) and a copy into another copy (a reshape then a
transpose: one pass); and chains of elementwise blocks are inlined into
their one elementwise consumer, so that an activation reading its input twice (SiLU, GELU)
still fuses whole into the tile's write-back.

A rule that does not apply leaves its block as it was, so the result is never worse than
TVM's default; every schedule primitive is semantics-preserving (TVM checks each one).
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
import tvm_ffi
from tvm import s_tir, tirx


@dataclass(frozen=True)
class CPUScheduleConfig:
    vector_lanes: int = 8      # float32 lanes of the target's SIMD registers
    tile_rows: int = 4         # U: accumulator rows per tile
    min_parallel: int = 2      # do not parallelize loops shorter than this
    wide_tiles: bool = True    # two-vector-wide register tiles where the vector axis allows
    cache_bytes: int = 128 * 1024  # vector operands up to this size stay in cache (L2)
    l2_bytes: int = 512 * 1024  # one core's L2
    # activation tiles outermost also for weights up to l2_bytes when the output is at
    # least this many times the weights (0: only for weights up to cache_bytes)
    pixels_outer_ratio: int = 4
    # a fixed register-tile shape (0: chosen from the extents, as above); tuning
    # (kiln.optimize.tuning) measures a few of these per kernel as candidates of its own
    tile_vectors: int = 0      # vectors side by side in a tile
    max_rows: int = 0          # most U rows of a tile
    fuse_rows: bool = True     # fuse the row axis with the one above when the tile gets wider


GEMV_VECTORS = 4  # accumulator vectors of a one-row tile
BATCH_OUTER_BYTES = 512 * 1024  # activations and weights above this (L2): batch loop outermost
PREDICATED_ROWS_WASTE = 1.125  # most rows computed / rows needed for a full-height tile
PREDICATED_ROWS_MIN_DEPTH = 64  # shortest reduction that prefers full-height over exact rows
ODD_TILES = ((3, 4), (5, 2))  # (vectors, rows) of the tile for an odd number of vectors
FUSED_ROWS_GAIN = 0.05  # least share of recomputed rows that fusing two row axes must save
FUSED_ROWS_MIN_CHANNELS = 8  # shortest innermost reduction for that fusion (address math)
PARALLEL_CHUNKS = 64  # fewest iterations of a transpose's parallel loop (load balance)
WINOGRAD = "kiln.winograd"  # block annotation of a Winograd transform (its tile size)
WINOGRAD_STAGE = "kiln.winograd_stage"  # its first stage, computed inside it
OVERLAP_TILE = "kiln.overlap_tile"  # block annotation: the blocks of one register tile


def lanes_for(simd: str | None, dtype: str = "float32") -> int:
    """Lanes of ``dtype`` (float32 or float16) per vector register for a TargetSpec ``simd``."""
    lanes = {"avx512": 16, "avx2": 8, "avx": 8, "sse4.2": 4, "neon": 4, "sve": 4}.get(simd or "", 4)
    return lanes * 2 if dtype == "float16" else lanes


def _int(x) -> int | None:
    return int(x) if isinstance(x, (int, tirx.IntImm)) else None


def _iter_kinds(block) -> list[str]:
    return ["S" if iv.iter_type == tirx.IterVar.DataPar else "R" for iv in block.iter_vars]


def _vars_in(expr) -> set:
    return set(tirx.analysis.undefined_vars(expr))


def _divisor(extent: int | None, wanted: int) -> int | None:
    """A vector length for a loop of ``extent``: ``wanted`` when it divides the extent, else
    the largest divisor up to twice ``wanted`` (7 for a 7-wide feature map: LLVM splits odd
    vectors into legal ones), else None."""
    if not extent or extent < 2:
        return None
    if extent % wanted == 0:
        return wanted
    divisors = [d for d in range(2, min(extent, 2 * wanted) + 1) if extent % d == 0]
    return max(divisors) if divisors else None


class _Scheduler:
    def __init__(self, func: tirx.PrimFunc, cfg: CPUScheduleConfig,
                 constant_params: frozenset = frozenset()) -> None:
        self.sch = s_tir.Schedule(func)
        self.cfg = cfg
        self.constants = constant_params  # names of params bound to model constants

    def blocks(self):
        root = self.sch.get_sblock("root") if _has_root(self.sch) else None
        return list(self.sch.get_child_blocks(root)) if root is not None else []

    # ---- classification ---------------------------------------------------------------
    def gemm_axes(self, blk) -> tuple[int, int | None, frozenset] | None:
        """(index of V iter, index of U iter, indices of the iters the vector operand uses)
        when ``blk`` is a tiled-reduction candidate."""
        block = self.sch.get(blk)
        kinds = _iter_kinds(block)
        if "R" not in kinds or "S" not in kinds or len(block.reads) < 2:
            return None
        spatial = [i for i, k in enumerate(kinds) if k == "S"]
        v = spatial[-1]
        # the block's body indexes buffers with the block iter vars
        v_var = block.iter_vars[v].var
        vec_reads = [r for r in block.reads
                     if r.region and v_var in _vars_in(r.region[-1].min)]
        if not vec_reads:
            return None
        used_by_vec = set().union(*(_vars_in(rng.min) for r in vec_reads for rng in r.region))
        candidates = [i for i in spatial[:-1] if block.iter_vars[i].var not in used_by_vec]
        if not candidates:
            # every output axis feeds the vector operand (depthwise conv): still tile several
            # output columns, which share the weight vector of each tap
            candidates = [i for i in spatial[:-1] if (_int(block.iter_vars[i].dom.extent) or 0) > 1][-1:]
        u = _row_axis(candidates, [_int(block.iter_vars[i].dom.extent) for i in candidates])
        shared = frozenset(i for i in spatial if block.iter_vars[i].var in used_by_vec)
        return v, u, shared

    def vector_operand_bytes(self, blk, v: int) -> int | None:
        """Size of the largest buffer read along the vector axis (the weights of a conv)."""
        block = self.sch.get(blk)
        v_var = block.iter_vars[v].var
        sizes = [_buffer_bytes(r.source) for r in block.reads
                 if r.region and v_var in _vars_in(r.region[-1].min)]
        return max(sizes) if sizes and all(sizes) else None

    def _group_width(self, blk, v: int) -> int | None:
        """``k`` when an input is read at ``v // k``: the output channels of one group of a
        grouped conv (its input channel is ``v // k * (channels per group) + rc``)."""
        block = self.sch.get(blk)
        v_var = block.iter_vars[v].var
        found: list[int] = []

        def visit(node) -> None:  # the binary arithmetic of an index
            if isinstance(node, tirx.FloorDiv) and _int(node.b) and v_var in _vars_in(node.a):
                found.append(_int(node.b))
            for child in (getattr(node, "a", None), getattr(node, "b", None)):
                if child is not None and not isinstance(child, (int, float)):
                    visit(child)

        for r in _input_reads(block):
            for rng in r.region:
                visit(rng.min)
        return min(found) if found else None

    def activation_bytes(self, blk, v: int) -> int | None:
        """Size of the largest buffer read that is neither the vector operand nor the
        accumulator (the activations of a conv)."""
        block = self.sch.get(blk)
        v_var = block.iter_vars[v].var
        sizes = [_buffer_bytes(r.source) for r in _input_reads(block)
                 if not (r.region and v_var in _vars_in(r.region[-1].min))]
        return max(sizes) if sizes and all(sizes) else None

    def inline_copies(self) -> None:
        """Inline producer blocks that only copy (the zero-width pad of a 1x1 conv) or zero-pad
        a depthwise conv's input, which would otherwise cost one pass over the activations
        (MobileNetV2 b8 depthwise kernels: 0.2-0.9x the time)."""
        for _, blk in list(self._live()):
            body = self.sch.get(blk).body
            if not isinstance(body, tirx.BufferStore):
                continue
            plain_copy = _is_load(body.value) and _same_indices(body.indices, body.value.indices) \
                and self.sch.get_consumers(blk)
            if plain_copy or self._copies_into_a_copy(blk, body) \
                    or self._pads_a_depthwise(blk, body):
                try:
                    self.sch.compute_inline(blk)
                except Exception:  # noqa: BLE001 - an output or not inlinable: keep it
                    continue

    def _copies_into_a_copy(self, blk, body) -> bool:
        """A copy in another order (transpose, reshape) whose one consumer is a copy too (the
        transpose then reshape of a flatten, the reshape then transpose of attention heads):
        inlined, the pair is one pass with composed indices instead of two."""
        if not _is_load(body.value):
            return False
        consumer = self._one_injective_consumer(blk)
        return consumer is not None and _is_load(consumer.body.value)

    def _one_injective_consumer(self, blk):
        """The one consumer block of ``blk`` when it stores without a reduction, else None."""
        consumers = self.sch.get_consumers(blk)
        if len(consumers) != 1:
            return None
        cblock = self.sch.get(consumers[0])
        if not isinstance(cblock.body, tirx.BufferStore) or "R" in _iter_kinds(cblock):
            return None
        return cblock

    def inline_elementwise(self) -> None:
        """Inline elementwise blocks into their one elementwise consumer, until none is left:
        an activation that reads its input twice (SiLU ``x * sigmoid(x)``, GELU
        ``x * erf(x)``) gave the conv's output two consumers, so the epilogue stopped at the
        bias and each step of the activation (negate, exp, add, divide, multiply) cost a pass
        over the whole output (EfficientNet's SiLU convs). Only one-to-one reads are inlined
        (same shape, same indices): a broadcast consumer (the SE gate times the feature map)
        would recompute its producer at every element it reads."""
        changed = True
        while changed:
            changed = False
            for _, blk in list(self._live()):
                if self._elementwise_into_one(blk):
                    try:
                        self.sch.compute_inline(blk)
                        changed = True
                    except Exception:  # noqa: BLE001 - an output or not inlinable: keep it
                        continue

    def _elementwise_into_one(self, blk) -> bool:
        block = self.sch.get(blk)
        body = block.body
        if not isinstance(body, tirx.BufferStore) or "R" in _iter_kinds(block) \
                or len(block.writes) != 1 or WINOGRAD in block.annotations:
            return False  # a Winograd transform takes its consumers in, not the reverse
        cblock = self._one_injective_consumer(blk)
        if cblock is None:
            return False
        cbody = cblock.body
        buf = body.buffer
        if [_int(x) for x in buf.shape] != [_int(x) for x in cbody.buffer.shape]:
            return False
        # the consumer's read region of the buffer (the union of its loads) is the one
        # element it writes: every load reads at the store's indices
        regions = [r.region for r in cblock.reads if r.source.same_as(buf)]
        return bool(regions) and all(
            all(_int(rng.extent) == 1 for rng in region)
            and _same_indices([rng.min for rng in region], cbody.indices) for region in regions)

    def _pads_a_depthwise(self, blk, body) -> bool:
        """A zero pad read by a depthwise conv along its channel (vector) axis: inlined, the
        padding test is one branch per vector load instead of a pass over the activations."""
        value = body.value
        if not str(getattr(getattr(value, "op", None), "name", "")).endswith("if_then_else"):
            return False
        consumers = self.sch.get_consumers(blk)
        if len(consumers) != 1:
            return False
        cblock = self.sch.get(consumers[0])
        kinds = _iter_kinds(cblock)
        if "R" not in kinds:
            return False
        v_iter = cblock.iter_vars[[i for i, k in enumerate(kinds) if k == "S"][-1]]
        buf = body.buffer
        # NHWC depthwise: the pad's channels are the output channels, read along the vector
        # axis (an NCHW conv also reads its input along the vector axis, the width: not this)
        if _int(buf.shape[-1]) != _int(v_iter.dom.extent):
            return False
        # one input channel per output channel (a grouped conv reads a group's channels)
        unit = {iv.var for iv in cblock.iter_vars if _int(iv.dom.extent) == 1}
        return any(r.source.same_as(buf) and v_iter.var in _vars_in(r.region[-1].min)
                   and _vars_in(r.region[-1].min) <= unit | {v_iter.var}
                   for r in cblock.reads)

    # ---- rules ------------------------------------------------------------------------
    def tiled_reduction(self, blk, v: int, u: int | None, shared: frozenset = frozenset()) -> bool:
        sch, cfg = self.sch, self.cfg
        block = sch.get(blk)
        kinds = _iter_kinds(block)
        loops = sch.get_loops(blk)
        if len(loops) != len(kinds):
            return False
        ext = [_int(block.iter_vars[i].dom.extent) for i in range(len(kinds))]
        rows_ext = ext[u] if u is not None and u not in shared else None
        if u is None:
            rows_ext = 1  # no row axis: a matrix-vector product
        image_batch = kinds.count("S") >= 4  # batch, two pixel axes, channels: a conv
        vf, max_rows = self._tile_shape(ext[v], rows_ext)
        group = self._group_width(blk, v)
        grouped = bool(group and group < (vf or cfg.vector_lanes) and ext[v] and ext[v] % group == 0)
        if grouped:
            # a grouped conv with fewer output channels per group than a vector (ResNeXt's
            # 4): lanes of two groups read two different input channels, which TVM loads
            # lane by lane; a vector of one group reads one value, broadcast
            vf, max_rows = group, 2 * cfg.tile_rows
        padded = vf is None and (ext[v] or 0) > cfg.vector_lanes
        if padded:
            # a vector axis no lane count divides (197 ViT tokens in q @ k^T): compute on a
            # zero-padded operand into a padded output, then copy the valid part out, with
            # the epilogues fused into that copy (fused into the tile's write-back they would
            # store past the real output: TVM 0.27 does not guard the padded lanes there)
            lanes = cfg.vector_lanes
            sch.pad_einsum(blk, [lanes if i == v else 1 for i in range(len(kinds))])
            (crop,) = sch.get_consumers(blk)
            self._inline_epilogues(crop)
            ext[v] = -(-ext[v] // lanes) * lanes
            vf, max_rows = self._tile_shape(ext[v], rows_ext)
        if vf is None:
            return False
        v_iter = v
        depth = 1  # multiply-adds per output in the tile's reduction loops
        for i, k in enumerate(kinds):
            depth *= (ext[i] or 0) if k == "R" else 1
        # a full-height tile with an overlapping last one (see _overlap_last_tile) pays in a
        # conv over a long reduction: 1x1 and strided convs 15-30% faster than in exact 4-row
        # tiles. A short reduction (MobileNetV2's 16- and 24-channel 1x1 convs, depthwise
        # convs) keeps exact tiles, and so do matmuls whose rows a 4-row tile divides (BERT's
        # 128 tokens in 22 tiles of 6: its matmuls 12% slower than in 32 of 4)
        conv = image_batch and kinds.count("R") >= 3  # taps and channels (not a batch matmul)
        predicate = conv and depth >= PREDICATED_ROWS_MIN_DEPTH
        fuse = not padded and not grouped and self._fuse_rows_pays(blk, ext, kinds, v, u, shared, vf, predicate)
        wb = sch.cache_write(blk, 0, "global")
        if not padded:
            self._inline_epilogues(wb)
        if fuse:
            # the U axis and the axis above it become one (the pixels of an NHWC conv: 14x14
            # gives 196 rows, which a two-vector tile covers; 14 alone left a one-vector tile
            # of 7 rows, load-bound: ResNet-50's 14x14 and 7x7 stages ran at 2/3 of the rate
            # of its 56x56 and 28x28 stages). The accumulator buffer and the write-back get
            # the fused layout too, so that each tile writes a contiguous range of rows.
            dim = [i for i, k in enumerate(kinds) if k == "S"].index(u)
            n_out = len(sch.get(wb).iter_vars)
            width = ext[u]
            fused_map = _fuse_axes_map(dim, width, n_out)
            sch.transform_layout(blk, ("write", 0), fused_map)
            sch.transform_block_layout(wb, fused_map)
            # the block itself iterates over the fused axis, so that its write region (and
            # so the write-back's) is exact: fused loops over separate iters left TVM a
            # bounding range that began at the start of an image row
            sch.transform_block_layout(blk, _fuse_axes_map(u, width, len(kinds)))
            ext[u - 1] = ext[u - 1] * ext[u]
            del ext[u], kinds[u]
            shared = frozenset(i - (i > u) for i in shared)
            v, u = v - (v > u), u - 1
            v_iter = v  # the block's own iters are fused too now
            vf, max_rows = self._tile_shape(ext[v], ext[u])
        loops = sch.get_loops(blk)
        vo, vi = sch.split(loops[v], [None, vf])
        outer, inner = [], [vi]
        uf = _row_tile(ext[u], max_rows, predicate) if u is not None and ext[u] else None
        for i, lp in enumerate(loops):
            if i == v:
                outer.append((0, vo))
            elif i == u and uf and uf > 1:
                uo, ui = sch.split(lp, [None, uf])
                outer.append((1, uo))
                inner.insert(0, ui)
            elif kinds[i] == "S":
                outer.append((0 if i in shared else 1, lp))
        # axes of the vector operand (the weights of a conv in NHWC, B of a matmul) go
        # outermost, so consecutive parallel iterations reuse its slice from cache; when the
        # whole operand fits in cache they go innermost instead, so that each tile of the
        # (larger) activations is read once for all output channels
        weights = self.vector_operand_bytes(blk, v_iter)
        small = weights is not None and weights <= cfg.cache_bytes and shared
        if not small and image_batch and shared and weights is not None and cfg.pixels_outer_ratio \
                and weights <= cfg.l2_bytes \
                and _buffer_bytes(sch.get(blk).writes[0].source) >= cfg.pixels_outer_ratio * weights:
            # weights that fit in L2 under an output several times their size: activation
            # tiles outermost too, re-reading the weights from L2 once per tile instead of
            # the activations once per 16 output channels (ResNet-50's 1x1 convs of 128 to
            # 512 channels on 28x28 maps 12% faster, its 3x3 64-channel convs on 56x56 5%)
            small = True
        outer = sorted(outer, key=lambda t: -t[0] if small else t[0])
        acts = self.activation_bytes(blk, v_iter) or 0
        if image_batch and not small and weights and len(outer) > 2 and outer[1][0] == 1 and 0 not in shared \
                and kinds[0] == "S" and (ext[0] or 0) > 1 and u != 0 and ext[v] \
                and min(acts, weights) > BATCH_OUTER_BYTES and ext[0] * weights < ext[v] // vf * acts:
            # a batch whose activations outgrow L2: weights outermost re-read them all for
            # every vf output channels (ResNet-50 batch 8: 64 x 1.6 MB for one 1x1 conv);
            # one image at a time re-reads the weights once per image instead. Convs only:
            # BERT's batch-8 matmuls ran 8.5% slower this way; and only weights that outgrow
            # L2 too: MobileNetV2 batch 8 (1x1 weights of 14-600 KB) ran 3% slower
            outer = [outer[1], outer[0], *outer[2:]]
        outer = [lp for _, lp in outer]
        reds = [lp for i, lp in enumerate(loops) if kinds[i] == "R"]
        sch.reorder(*outer, *reds, *inner)
        fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
        sch.parallel(fused)
        sch.reverse_compute_at(wb, fused)
        self._vectorize_innermost(wb)
        if len(inner) == 2:
            sch.unroll(inner[0])
        self._vectorize_lanes(inner[-1])
        init = sch.decompose_reduction(blk, reds[0])
        snapshot = sch.copy()
        try:
            self._pack_weights(blk, vf)
        except Exception:  # noqa: BLE001 - keep the unpacked layout
            self.sch = snapshot
        # the annotation is a traced instruction, the rewrite is not: a tuning record replays
        # the trace, and overlap_annotated_tiles repeats the rewrite on the replayed kernel
        tile = self.sch.get(blk).name_hint
        for b in (init, blk, wb):
            self.sch.annotate(b, OVERLAP_TILE, tile)
        _overlap_last_tile(self.sch, (init, blk, wb))
        return True

    def _tile_shape(self, extent: int | None, rows_extent: int | None) -> tuple[int | None, int]:
        """(V lanes, most U rows) of the register tile for a vector axis of ``extent`` and
        a GEMM-like row axis of ``rows_extent`` (None: not GEMM-like).

        Two vectors wide and up to 1.5 ``tile_rows`` high (the 4x16 / 6x16 AVX2 micro-kernel
        shape: each broadcast input feeds two FMAs) when the vector axis allows it and the rows
        still give as many accumulators as one vector wide and up to 2 ``tile_rows`` high."""
        lanes, rows = self.cfg.vector_lanes, self.cfg.tile_rows
        fixed = self.cfg.tile_vectors
        if fixed and extent and extent % (fixed * lanes) == 0:
            return fixed * lanes, self.cfg.max_rows or 2 * rows
        narrow = (_divisor(extent, lanes), 2 * rows)
        count = _vector_count(extent, lanes)
        if rows_extent == 1 and count:
            # one row (a batch-1 dense layer): a one-vector tile is one chain of dependent
            # FMAs (latency-bound: a 784-1024-1024-512 MLP ran at a quarter of the FMA rate);
            # up to GEMV_VECTORS vectors side by side give as many independent accumulators
            n = max(d for d in range(1, GEMV_VECTORS + 1) if count % d == 0)
            if n == 1 and count <= 2 * GEMV_VECTORS:
                n = count  # 5 or 7 vectors: all of them, still within the 16 registers
            return lanes * n, 1
        if self.cfg.wide_tiles and rows_extent and count > 1 and count % 2:
            # an odd number of vectors (24 or 40 channels, SqueezeNet's 1000 classes):
            # three vectors by four rows or five by two, instead of one vector by eight
            # (nine loads for eight FMAs: SqueezeNet's classifier conv ran at half the rate)
            for n, r in ODD_TILES:
                if count % n == 0 and rows_extent >= r:
                    return n * lanes, r
        if not (self.cfg.wide_tiles and rows_extent and extent and extent % (2 * lanes) == 0):
            return narrow
        wide_rows = (3 * rows) // 2
        r_wide = max(d for d in range(1, wide_rows + 1) if rows_extent % d == 0)
        r_narrow = max(d for d in range(1, 2 * rows + 1) if rows_extent % d == 0)
        if r_wide >= 2 and 2 * r_wide >= r_narrow:
            return 2 * lanes, wide_rows
        if rows_extent >= 2 * wide_rows \
                and -(-rows_extent // wide_rows) * wide_rows <= PREDICATED_ROWS_WASTE * rows_extent:
            # no divisor fits, but full tiles and an overlapping last one waste little: the 49
            # pixels of a 7x7 map in 9 tiles of 6 rows ran 7-26% faster than in 7 tiles of
            # one vector by 7 rows (ResNet-50's last stage, alone per conv)
            return 2 * lanes, wide_rows
        return narrow

    def _fuse_rows_pays(self, blk, ext, kinds, v, u, shared, vf, predicate) -> bool:
        """Whether fusing the row axis ``u`` with the axis above it gives a wider register tile
        than ``vf`` lanes: both are output axes the vector operand does not use (so every row
        of the tile shares its weight vectors), the output is indexed by the spatial axes in
        order, and their product allows two vectors; or the same tile recomputing fewer rows
        (``predicate``: tiles whose last one overlaps, as ``_row_tile`` takes it)."""
        if not self.cfg.fuse_rows or self.cfg.tile_vectors or u is None or u == 0 \
                or u in shared or u - 1 in shared or kinds[u - 1] != "S" or u - 1 == v:
            return False
        if not ext[u] or not ext[u - 1] or ext[u - 1] < 2:
            return False
        block = self.sch.get(blk)
        spatial = [block.iter_vars[i].var for i, k in enumerate(kinds) if k == "S"]
        (write,) = block.writes
        if len(write.region) != len(spatial) or any(
                not (isinstance(r.min, tirx.Var) and r.min.same_as(var))
                for r, var in zip(write.region, spatial)):
            return False
        fused_vf, fused_rows = self._tile_shape(ext[v], ext[u - 1] * ext[u])
        if fused_vf is None or fused_vf < vf:
            return False
        if fused_vf > vf:
            return True
        # the same tile: fused, fewer rows are computed twice by the overlapping last tile
        # (56 pixels in tiles of 6 compute 60, 3136 compute 3138: ResNet-50's 1x1 and 3x3 convs
        # on 56x56 and 28x28 maps 5-18% faster). The fused rows need a div / mod per row and
        # tap, hoisted out of the channel loop: not for a short one (the 3 channels of a
        # first conv: its 7x7 taps over 112 pixels ran 24% slower fused)
        reds = [e for e, k in zip(ext, kinds) if k == "R"]
        if (reds[-1] or 0) < FUSED_ROWS_MIN_CHANNELS:
            return False
        _, rows = self._tile_shape(ext[v], ext[u])
        return _computed_rows(ext[u], rows, predicate) \
            - _computed_rows(ext[u - 1] * ext[u], fused_rows, predicate) >= FUSED_ROWS_GAIN

    def _pack_weights(self, blk, vf: int) -> None:
        """Give a weight operand read along the vector axis the layout [.. // vf, ..., vf]
        (each tile's weights contiguous). The repacking block is marked as a layout-rewrite
        preprocess, which the pipeline splits out and folds at compile time."""
        sch = self.sch
        block = sch.get(blk)
        for idx, region in enumerate(block.reads):
            buf = region.source
            if buf.name not in self.constants or len(buf.shape) < 2:
                continue
            last = _int(buf.shape[-1])
            if not last or last % vf or last == vf:
                continue
            ndim = len(buf.shape)
            packer = sch.cache_read(blk, idx, "global")
            # 1, not True: a trace replayed from a tuning database gives back an integer
            sch.annotate(packer, "meta_schedule.layout_rewrite_preproc", 1)
            sch.transform_layout(blk, ("read", idx), tirx.IndexMap.from_func(
                lambda *ax: (ax[-1] // vf, *ax[:-1], ax[-1] % vf), ndim=ndim))
            return
        raise ValueError("no weight operand to pack")

    def _inline_epilogues(self, wb) -> None:
        """Fuse chains of elementwise consumers (bias, activation, residual) into ``wb``."""
        while True:
            consumers = self.sch.get_consumers(wb)
            # a value read by two consumers must stay materialized (GELU reads x twice)
            if len(consumers) != 1:
                return
            # nor a consumer that writes fewer elements (the slice after a conv whose output
            # channels kiln.optimize.channel_pad padded): inlined into the tile's write-back
            # it would store its padded lanes past the real output (TVM 0.27 does not guard
            # them), so it stays a pass of its own
            if _buffer_bytes(self.sch.get(consumers[0]).writes[0].source) \
                    < _buffer_bytes(self.sch.get(wb).writes[0].source):
                return
            try:
                self.sch.reverse_compute_inline(consumers[0])
            except Exception:  # noqa: BLE001 - not inlinable: scheduled on its own
                return

    def _vectorize_innermost(self, blk) -> None:
        loops = self.sch.get_loops(blk)
        ext = _int(self.sch.get(loops[-1]).extent)
        if ext and ext <= 64 and ext % 2 == 0:
            self._vectorize_lanes(loops[-1])

    def _vectorize_lanes(self, loop) -> None:
        """Vectorize ``loop``; one of 3 or 5 vectors is unrolled over single vectors instead,
        since LLVM widens a 24- or 40-lane vector to the next power of two (the 5-vector tile
        of a 1000-channel conv ran 3.5x slower as one 40-lane loop)."""
        ext, lanes = _int(self.sch.get(loop).extent), self.cfg.vector_lanes
        count = _vector_count(ext, lanes)
        if count > 1 and count & (count - 1):
            outer, loop = self.sch.split(loop, [count, lanes])
            self.sch.unroll(outer)
        self.sch.vectorize(loop)

    def row_reduction(self, blk) -> bool:
        sch = self.sch
        kinds = _iter_kinds(sch.get(blk))
        loops = sch.get_loops(blk)
        lead = []
        for lp, k in zip(loops, kinds):
            if k != "S":
                break
            lead.append(lp)
        if not lead:
            return False
        fused = sch.fuse(*lead) if len(lead) > 1 else lead[0]
        ext = _int(sch.get(fused).extent)
        if ext is None or ext >= self.cfg.min_parallel:
            sch.parallel(fused)
        return True

    def channel_reduction(self, blk) -> bool:
        """A reduction over the outer axes of its input whose output keeps the contiguous
        last axis (pooling and global means of an NHWC feature map): the channels are split
        into vectors, the window (or the whole map) is summed into one accumulator vector at
        a time, and the pixels times channel vectors run in parallel. The row rule gave each
        channel a scalar loop of strided loads (EfficientNet's squeeze-excite means over a
        112x112x32 map ran a chain of 12544 dependent adds per channel)."""
        sch, cfg = self.sch, self.cfg
        block = sch.get(blk)
        kinds = _iter_kinds(block)
        loops = sch.get_loops(blk)
        if len(loops) != len(kinds) or "R" not in kinds or kinds[-1] != "R" \
                or block.init is None:
            return False
        first_r = kinds.index("R")
        if "S" in kinds[first_r:] or first_r == 0:
            return False
        c = first_r - 1
        c_var = block.iter_vars[c].var
        red_vars = {block.iter_vars[i].var for i in range(first_r, len(kinds))}
        inputs = _input_reads(block)
        if not inputs or not all(
                r.region and _vars_in(r.region[-1].min) == {c_var}
                and red_vars & set().union(*(_vars_in(rng.min) for rng in r.region[:-1]))
                for r in inputs):
            return False
        vf = _divisor(_int(block.iter_vars[c].dom.extent), cfg.vector_lanes)
        if not vf:
            return False
        co, ci = sch.split(loops[c], [None, vf])
        sch.reorder(*loops[:c], co, *loops[first_r:], ci)
        outer = [*loops[:c], co]
        fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
        ext = _int(sch.get(fused).extent)
        if ext is None or ext >= cfg.min_parallel:
            sch.parallel(fused)
        sch.vectorize(ci)
        init = sch.decompose_reduction(blk, loops[first_r])
        sch.vectorize(sch.get_loops(init)[-1])
        return True

    def transpose(self, blk) -> bool:
        """An injective block that reads an input in another order than it writes (a
        transpose: the NCHW->NHWC input of a CNN, the heads of attention): the leading axes
        are fused into a parallel loop of at least PARALLEL_CHUNKS iterations, the next ones
        stay plain loops and the last axis is the vector, so that every index is affine in
        the loops. Fusing all axes into 8-lane vectors (the injective rule) computed each
        lane's indices by div/mod and gathered them: MobileNetV2 b8's input transpose, with
        3 channels last, took 1534 us that way and 144 us this way (built and timed alone;
        tuning had found a record like this one at 0.25x the default)."""
        sch, cfg = self.sch, self.cfg
        block = sch.get(blk)
        body = block.body
        loops = sch.get_loops(blk)
        if not isinstance(body, tirx.BufferStore) or len(loops) < 2 \
                or len(loops) != len(block.iter_vars):
            return False
        reads = _input_reads(block)
        # a scalar operand (a clip's bounds) moves nothing
        moved = [r for r in reads if r.region and not (
            len(r.region) == len(body.indices)
            and _same_indices([rng.min for rng in r.region], body.indices))]
        if not moved:
            return False
        last = _int(sch.get(loops[-1]).extent)
        if not last or last < 2:
            return False
        src = self._source_contiguous_axis(block, moved) if last >= cfg.vector_lanes else None
        ext_src = _int(sch.get(loops[src]).extent) if src is not None else None
        tile = _divisor(ext_src, cfg.vector_lanes) if ext_src else None
        outer = [lp for k, lp in enumerate(loops[:-1]) if k != src or not tile]
        if last <= 2 * cfg.vector_lanes:
            vec = loops[-1]
        else:
            vf = _divisor(last, cfg.vector_lanes)
            if not vf:
                return False
            vo, vec = sch.split(loops[-1], [None, vf])
            outer.append(vo)
        if tile:
            # a tile of ``tile`` rows of the input's contiguous axis by the vector: each
            # vector gathers one element of ``tile`` rows, the next rows' vectors read on
            # along the same cache lines (a vector alone, down a 1 KB stride, missed on
            # every element: attention's key transpose ran 2.8x slower)
            so, si = sch.split(loops[src], [None, tile])
            outer.insert(len(outer) - (1 if last > 2 * cfg.vector_lanes else 0), so)
            sch.reorder(*outer, si, vec)
        lead, n = [], 1
        for lp in outer:
            lead.append(lp)
            n *= _int(sch.get(lp).extent) or PARALLEL_CHUNKS
            if n >= PARALLEL_CHUNKS:
                break
        fused = sch.fuse(*lead) if len(lead) > 1 else lead[0]
        if n >= cfg.min_parallel:
            sch.parallel(fused)
        self._vectorize_lanes(vec)
        return True

    def _source_contiguous_axis(self, block, moved) -> int | None:
        """The output axis (not the last) along which a moved input is contiguous: the
        innermost of the block's axes in the input's last index (None where that index also
        uses the last axis: the vector already reads along the input's rows)."""
        pos = {iv.var: k for k, iv in enumerate(block.iter_vars)}
        axes = set()
        for r in moved:
            axes |= {pos[v] for v in _vars_in(r.region[-1].min) if v in pos}
        last = len(block.iter_vars) - 1
        if not axes or last in axes:
            return None
        return max(axes)

    def injective(self, blk) -> bool:
        sch, cfg = self.sch, self.cfg
        loops = sch.get_loops(blk)
        if not loops:
            return False
        fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
        ext = _int(sch.get(fused).extent)
        vf = _divisor(ext, cfg.vector_lanes)
        if vf and ext // vf >= cfg.min_parallel:
            outer, inner = sch.split(fused, [None, vf])
            sch.parallel(outer)
            sch.vectorize(inner)
        elif ext is None or ext >= cfg.min_parallel:
            sch.parallel(fused)
        return True

    def winograd_transform(self, blk) -> bool:
        """A Winograd transform (kiln.optimize.winograd): its elementwise epilogue fused in,
        parallel over tiles and channel vectors, its first stage computed inside it (per row
        of the input tile, per output tile), the tile loops of both stages unrolled (each
        coefficient becomes a constant), vectorized over the channels. The first stage's
        buffer stays under 1 KB, which TVM keeps on the stack (registers, once unrolled)
        instead of allocating a workspace per tile."""
        sch = self.sch
        m = int(sch.get(blk).annotations[WINOGRAD])
        self._inline_epilogues(blk)
        loops = sch.get_loops(blk)
        if len(loops) == 3:  # input: V[e, p, c], e = xi * (m + 2) + nu
            e, p, c = loops
            c_o, c_i = sch.split(c, [None, self._channel_vector(c)])
            xi, nu = sch.split(e, [None, m + 2])
            sch.reorder(p, c_o, xi, nu, c_i)
            outer = sch.fuse(p, c_o)
            unrolled, stage_at, depth = [xi, nu], xi, 2
        else:  # output: Y[b, h, w, k]
            b, h, w, k = loops
            h_o, h_i = sch.split(h, [None, m])
            w_o, w_i = sch.split(w, [None, m])
            k_o, k_i = sch.split(k, [None, self._channel_vector(k)])
            sch.reorder(b, h_o, w_o, k_o, h_i, w_i, k_i)
            outer = sch.fuse(b, h_o, w_o, k_o)
            unrolled, stage_at, depth = [h_i, w_i], outer, 1
        sch.parallel(outer)
        for loop in unrolled:
            sch.unroll(loop)
        self._vectorize_lanes(sch.get_loops(blk)[-1])
        for producer in sch.get_producers(blk):
            if WINOGRAD_STAGE not in sch.get(producer).annotations:
                continue
            sch.compute_at(producer, stage_at)
            *tile, lanes = sch.get_loops(producer)[depth:]
            for loop in tile:
                sch.unroll(loop)
            self._vectorize_lanes(lanes)
        return True

    def _channel_vector(self, loop) -> int:
        ext = _int(self.sch.get(loop).extent)
        return _divisor(ext, self.cfg.vector_lanes) or 1

    def _live(self):
        """(name, block) of every root-level block that still exists."""
        for name in [self.sch.get(b).name_hint for b in self.blocks()]:
            try:
                yield name, self.sch.get_sblock(name)
            except Exception:  # noqa: BLE001 - inlined by an earlier rule
                continue

    def _try(self, rule, *args) -> bool:
        snapshot = self.sch.copy()
        try:
            return bool(rule(*args))
        except Exception:  # noqa: BLE001 - leave the block as it was
            self.sch = snapshot
            return False

    def run(self) -> tirx.PrimFunc | None:
        changed, done = False, set()
        before = len(self.blocks())
        self._try(self.inline_copies)
        self._try(self.inline_elementwise)
        changed = len(self.blocks()) != before
        for name, blk in self._live():
            if WINOGRAD in self.sch.get(blk).annotations:
                if self._try(self.winograd_transform, blk):
                    changed = True
                    done.add(name)
        for name, blk in self._live():
            if name in done:
                continue
            axes = self.gemm_axes(blk)
            if axes is not None and self._try(self.tiled_reduction, blk, *axes):
                changed = True
                done.add(name)
        for name, blk in self._live():
            if name in done or _is_scheduled_tile(self.sch, blk) \
                    or WINOGRAD_STAGE in self.sch.get(blk).annotations:
                continue
            kinds = _iter_kinds(self.sch.get(blk))
            if "R" in kinds:
                changed |= self._try(self.channel_reduction, blk) \
                    or self._try(self.row_reduction, blk)
            else:
                changed |= self._try(self.transpose, blk) or self._try(self.injective, blk)
        return self.sch.mod["main"] if changed else None


def _overlap_last_tile(sch, blocks) -> None:
    """Turn the predicated last row tile of the tile's init, update and write-back blocks
    into a full tile that overlaps the one before it: rows ``min(start, E - U) + r``
    instead of ``start + r`` where ``start + r < E``. LLVM kept the predicate as a branch
    inside the reduction loop and spilled the predicated rows' accumulators on every step
    (MobileNetV2 batch 8's 7x7 1x1 convs, 49 pixels in tiles of 6, ran at 28 GMAC/s; 55-58
    with the overlap). The overlapping rows are computed twice, each time in the tile's
    own accumulator (allocated inside the parallel loop), and written twice with the same
    value. All three blocks or none: they must agree on the rows of a tile."""
    plan = []
    for blk in blocks:
        loops = sch.get_loops(blk)
        parent = sch.get(loops[-1]) if loops else None
        realize = getattr(parent, "body", None)
        pred = getattr(realize, "predicate", None)
        if not isinstance(realize, s_tir.SBlockRealize) or not isinstance(pred, tirx.LT) \
                or not isinstance(pred.a, tirx.Add) or not isinstance(pred.a.b, tirx.Var):
            return
        total, row = _int(pred.b), pred.a.b
        rows = next((_int(sch.get(lp).extent) for lp in loops
                     if sch.get(lp).loop_var.same_as(row)), None)
        if not total or not rows or rows > total:
            return
        # the binding of the same iter: ``start + r`` over a domain of E (the predicate may
        # spell ``start`` differently, e.g. with a redundant modulo)
        hits = [i for i, (iv, e) in enumerate(zip(realize.block.iter_vars, realize.iter_values))
                if isinstance(e, tirx.Add) and isinstance(e.b, tirx.Var) and e.b.same_as(row)
                and _int(iv.dom.extent) == total]
        others = [e for i, e in enumerate(realize.iter_values) if i not in hits]
        if len(hits) != 1 or any(v.same_as(row) for e in others for v in _vars_in(e)):
            return
        values = list(realize.iter_values)
        values[hits[0]] = tirx.Min(values[hits[0]].a, pred.b - rows) + row
        plan.append((loops[-1], parent, realize, values))
    for loop_rv, parent, realize, values in plan:
        new = s_tir.SBlockRealize(values, True, realize.block)
        loop = tirx.For(parent.loop_var, parent.min, parent.extent, parent.kind, new,
                        parent.thread_binding, parent.annotations)
        sch.state.replace(sch.get_sref(loop_rv), loop, {realize.block: realize.block})


def overlap_annotated_tiles(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """Repeat ``_overlap_last_tile`` on the tiles a replayed trace marked with OVERLAP_TILE (a
    tuning record of Kiln's schedule: the rewrite itself is not a traced instruction)."""
    sch = s_tir.Schedule(func)
    groups: dict[str, list] = {}
    for blk in sch.get_child_blocks(sch.get_sblock("root")) if _has_root(sch) else []:
        tile = sch.get(blk).annotations.get(OVERLAP_TILE)
        if tile is not None:
            groups.setdefault(str(tile), []).append(blk)
    for blocks in groups.values():
        if len(blocks) == 3:
            _overlap_last_tile(sch, blocks)
    return sch.mod["main"] if groups else func


def _vector_count(extent: int | None, lanes: int) -> int:
    """Whole vectors of ``lanes`` in ``extent`` (0: not a multiple, or symbolic)."""
    return extent // lanes if extent and extent % lanes == 0 else 0


def _input_reads(block) -> list:
    """The regions ``block`` reads, except those of the buffers it writes (an accumulator)."""
    out = [w.source for w in block.writes]
    return [r for r in block.reads if not any(r.source.same_as(o) for o in out)]


def _buffer_bytes(buf) -> int:
    """Size of a buffer in bytes (0 when a dimension is symbolic)."""
    n = 1
    for dim in buf.shape:
        n *= _int(dim) or 0
    return n * (tvm.DataType(buf.dtype).bits // 8)


def _fuse_axes_map(pos: int, width: int, ndim: int) -> tirx.IndexMap:
    """The index map that fuses axis ``pos`` (of extent ``width``) into the axis above it."""
    return tirx.IndexMap.from_func(
        lambda *ax: (*ax[:pos - 1], ax[pos - 1] * width + ax[pos], *ax[pos + 1:]), ndim=ndim)


def _is_load(expr) -> bool:
    """Whether ``expr`` is a plain buffer load (its class is tvm.ir.expr.TensorLoad in TVM
    0.27; tirx.BufferLoad is a factory)."""
    return type(expr).__name__ in ("TensorLoad", "BufferLoad")


def _same_indices(a, b) -> bool:
    """Whether a copy reads the element it writes (not a transpose or a reshape)."""
    return len(a) == len(b) and all(tvm_ffi.structural_equal(x, y) for x, y in zip(a, b))


def _row_tile(extent: int, max_rows: int, predicate: bool = True) -> int:
    """Rows of the register tile: ``max_rows`` with the last tile predicated when that wastes
    at most PREDICATED_ROWS_WASTE (56 pixels as 10 tiles of 6 rows: 3x3 convs on 56x56 and
    28x28 maps ran 19-25% faster than as 14 tiles of 4); else the largest divisor of
    ``extent`` up to ``max_rows``, so that no predicate is needed; when that is under half of
    ``max_rows`` (a prime extent such as 197 tokens, or 13 / 55 pixels, left one-row tiles:
    each broadcast input fed a single FMA and the kernels ran 3-4x slower), ``max_rows``
    again. ``predicate=False`` (a short reduction) keeps the divisor while it is at least half
    of ``max_rows``. A "predicated" last tile is made to overlap the one before it by
    ``_overlap_last_tile`` wherever the tile's blocks allow."""
    best = max(d for d in range(1, max_rows + 1) if extent % d == 0)
    if best == max_rows or extent < max_rows:
        return best
    if predicate and -(-extent // max_rows) * max_rows <= PREDICATED_ROWS_WASTE * extent:
        return max_rows
    if 2 * best >= max_rows and best > 1:
        return best
    return max_rows


def _computed_rows(extent: int, max_rows: int, predicate: bool) -> float:
    """Rows computed per row needed, in tiles of ``_row_tile`` rows (the last one overlapping)."""
    rows = _row_tile(extent, max_rows, predicate)
    return -(-extent // rows) * rows / extent


def _row_axis(candidates: list[int], extents: list[int | None]) -> int | None:
    """The U axis of the register tile: the innermost candidate long enough for a tile
    (the output columns of an NHWC conv: neighbouring pixels, contiguous inputs), else the
    longest one."""
    for i, ext in reversed(list(zip(candidates, extents))):
        if ext and ext >= 4:
            return i
    return max(zip(candidates, extents), key=lambda t: t[1] or 0, default=(None, 0))[0]


def _has_root(sch) -> bool:
    try:
        sch.get_sblock("root")
        return True
    except Exception:  # noqa: BLE001
        return False


def _is_scheduled_tile(sch, blk) -> bool:
    """Blocks already placed inside a parallel loop by the tiled-reduction rule."""
    return any(sch.get(lp).kind == tirx.ForKind.PARALLEL for lp in sch.get_loops(blk))


def _constant_params(mod: tvm.IRModule) -> dict[str, frozenset]:
    """PrimFunc name -> names of its params that every call binds to a Relax constant."""
    from tvm import relax

    call_tir = tvm.ir.Op.get("relax.call_tir")
    seen: dict[str, set[int] | None] = {}

    def visit(expr) -> None:
        if isinstance(expr, tvm.ir.expr.Call) and expr.op.same_as(call_tir):
            name = expr.args[0].name_hint
            consts = {i for i, a in enumerate(expr.args[1].fields)
                      if isinstance(a, tvm.ir.expr.Constant)}
            seen[name] = consts if name not in seen else (seen[name] or set()) & consts

    for _gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    out = {}
    for name, idx in seen.items():
        func = mod[name]
        out[name] = frozenset(func.params[i].name for i in (idx or ()) if i < len(func.params))
    return out


def schedule_cpu(cfg: CPUScheduleConfig):
    """A module pass applying the default CPU schedules to every unscheduled PrimFunc."""

    @tvm.transform.module_pass(opt_level=0, name="KilnDefaultCPUSchedule")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        updates = {}
        constants = _constant_params(mod)
        for gv, func in mod.functions_items():
            if isinstance(func, tirx.PrimFunc) and not func.attrs.get("tirx.is_scheduled", False):
                new = _Scheduler(func, cfg, constants.get(gv.name_hint, frozenset())).run()
                if new is not None:
                    updates[gv] = new.with_attr("tirx.is_scheduled", True)
        for gv, func in updates.items():
            mod[gv] = func
        return mod

    return _pass
