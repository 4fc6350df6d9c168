"""conv2d {stride, padding, dilation, groups} and its two backward ops.

CPU lowering: all three ops work one sample at a time, per group, in register tiles (codegen/cpu/fma_tile.py)
where they fit. With unit strides the forward op and the input gradient are correlations on "wide" rows
(_wide, _tiled_src); a weight gradient whose kernel rows fit a tile, any stride, multiplies gy transposed by
broadcasts from the padded input planes (_tiled_weight_grad_src), and one with fewer output channels than a
vector has lanes and unit strides takes dot products of gy's wide rows with the input planes at each tap
(_dot_weight_grad_src). Otherwise one BLAS product per group with the [C/g*R*S, P*Q] im2col matrix of that
sample (at most a few hundred KB for small CNNs) kept in cache: the forward product writes straight into the
output and adds the bias in place, the weight gradient adds gy[n] @ im2col(x[n]).T into a per-chunk partial
sum, and the input gradient scatters w.T @ gy[n] back through col2im. im2col and col2im go through a
zero-padded copy of each channel, so no index can be negative and LLVM vectorises the copies. BENCHMARKS.md
has the measurements behind each choice.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import ShapeError
from ..ir.types import TensorType, dtype_of, is_float
from ..codegen.cpu.fma_tile import vector_registers
from .cpu_chunks import chunked_kernel
from .cuda_lowering import Operand, cuda_kernel, tiled_gemm, unravel
from .registry import OpDef, expect_rank, get_op, register


def _pair(v):
    return list(v) if isinstance(v, (list, tuple)) else [v, v]


def conv_out_size(size, k, stride, pad, dil):
    return (size + 2 * pad - dil * (k - 1) - 1) // stride + 1


def _geometry(attrs):
    return (_pair(attrs.get("stride", 1)), _pair(attrs.get("padding", 0)), _pair(attrs.get("dilation", 1)),
            attrs.get("groups", 1))


def _infer(types, attrs):
    x, w = types[0], types[1]
    expect_rank(x, 4, "conv2d input")
    expect_rank(w, 4, "conv2d weight")
    stride, pad, dil, groups = _geometry(attrs)
    n, c, h, wd = x.shape
    k, cg, r, s = w.shape
    if x.dtype != w.dtype or not is_float(x.dtype):
        raise ShapeError(f"input {x} and weight {w} must share a float dtype")
    if c != cg * groups or k % groups:
        raise ShapeError(f"input {x} has {c} channels but weight {w} with groups={groups} expects {cg * groups}")
    if len(types) == 3 and tuple(types[2].shape) != (k,):
        raise ShapeError(f"bias {types[2]} must have shape [{k}]")
    p = conv_out_size(h, r, stride[0], pad[0], dil[0])
    q = conv_out_size(wd, s, stride[1], pad[1], dil[1])
    if p <= 0 or q <= 0:
        raise ShapeError(f"kernel {r}x{s} does not fit input {x} with padding {pad} and dilation {dil}")
    return [x.with_shape((n, k, p, q))]


def _im2col_ref(x, kh, kw, stride, pad, dil):
    """[N, C, H, W] -> [N, C, kh, kw, P, Q] patches (zero padded)."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    p = conv_out_size(h, kh, stride[0], pad[0], dil[0])
    q = conv_out_size(w, kw, stride[1], pad[1], dil[1])
    cols = np.empty((n, c, kh, kw, p, q), x.dtype)
    for r in range(kh):
        for s in range(kw):
            r0, s0 = r * dil[0], s * dil[1]
            cols[:, :, r, s] = xp[:, :, r0:r0 + stride[0] * p:stride[0], s0:s0 + stride[1] * q:stride[1]]
    return cols


def _ref(xs, attrs):
    x, w = xs[0], xs[1]
    stride, pad, dil, groups = _geometry(attrs)
    k, cg, kh, kw = w.shape
    cols = _im2col_ref(x, kh, kw, stride, pad, dil)
    kg = k // groups
    outs = [np.einsum("ncrspq,kcrs->nkpq", cols[:, g * cg:(g + 1) * cg], w[g * kg:(g + 1) * kg])
            for g in range(groups)]
    out = np.concatenate(outs, axis=1)
    if len(xs) == 3:
        out = out + xs[2][None, :, None, None]
    return [out.astype(x.dtype)]


def _vjp(b, node, grads, needs):
    (g,) = grads
    x, w = node.inputs[0], node.inputs[1]
    attrs = dict(node.attrs)
    gx = gw = gb = None
    if needs[0]:
        gx = b.add1("conv2d_backward_input", [g, w, x], attrs)
    if needs[1]:
        gw = b.add1("conv2d_backward_weight", [x, g, w], attrs)
    if len(node.inputs) == 3 and needs[2]:
        gb = b.add1("sum", [g], {"axes": [0, 2, 3], "keepdims": False})
    return [gx, gw] + ([gb] if len(node.inputs) == 3 else [])


def _check_output_grad(gy, x, w, attrs) -> None:
    expected = _infer([x, w], attrs)[0]
    if gy != expected:
        raise ShapeError(f"output gradient {gy} does not match the conv output {expected}")


# conv2d_backward_input(gy, w, x): the gradient w.r.t. x (x only lends its shape).
def _bwd_input_infer(types, attrs):
    gy, w, x = types
    _check_output_grad(gy, x, w, attrs)
    return [x]


def _bwd_input_ref(xs, attrs):
    gy, w, x = xs
    stride, pad, dil, groups = _geometry(attrs)
    k, cg, kh, kw = w.shape
    kg = k // groups
    n, c, h, wd = x.shape
    p, q = gy.shape[2:]
    gxp = np.zeros((n, c, h + 2 * pad[0], wd + 2 * pad[1]), gy.dtype)
    for grp in range(groups):
        gcols = np.einsum("nkpq,kcrs->ncrspq", gy[:, grp * kg:(grp + 1) * kg], w[grp * kg:(grp + 1) * kg])
        for r in range(kh):
            for s in range(kw):
                r0, s0 = r * dil[0], s * dil[1]
                gxp[:, grp * cg:(grp + 1) * cg, r0:r0 + stride[0] * p:stride[0],
                    s0:s0 + stride[1] * q:stride[1]] += gcols[:, :, r, s]
    return [gxp[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + wd].copy()]


# conv2d_backward_weight(x, gy, w): the gradient w.r.t. w (w only lends its shape).
def _bwd_weight_infer(types, attrs):
    x, gy, w = types
    _check_output_grad(gy, x, w, attrs)
    return [w]


def _bwd_weight_ref(xs, attrs):
    x, gy, w = xs
    stride, pad, dil, groups = _geometry(attrs)
    k, cg, kh, kw = w.shape
    kg = k // groups
    cols = _im2col_ref(x, kh, kw, stride, pad, dil)
    parts = [np.einsum("ncrspq,nkpq->kcrs", cols[:, g * cg:(g + 1) * cg], gy[:, g * kg:(g + 1) * kg])
             for g in range(groups)]
    return [np.concatenate(parts, axis=0).astype(x.dtype)]


# ---- CPU lowering without tiles: per sample, a cache-resident im2col matrix and one BLAS product ---------------
# Stride and dilation are constants of the source (unit strides make the copies contiguous, vectorised loops);
# the padding (ph, pw) is a run-time parameter, so convolutions differing only in padding share compiled code.
def _padding(node) -> dict[str, int]:
    ph, pw = _geometry(node.attrs)[1]
    return {"ph": ph, "pw": pw}


def _padded_src(image: str, slack: int = 0) -> str:
    """The shape of the zero-padded plane of array ``image`` that im2col reads from and col2im adds into, with
    ``slack`` more columns of zeros."""
    return f"({image}.shape[2] + 2 * ph, {image}.shape[3] + 2 * pw{_plus(slack)})"


#: im2col of a conv with unit stride and dilation along the width copies each row segment of Q entries as Q
#: rounded up to a multiple of this, into matrix rows and a padded plane with that much room to spare
IM2COL_SLACK = 16


def _plus(slack: int) -> str:
    return f" + {slack}" if slack else ""


def _slack(attrs) -> int:
    (_, sw), _, (_, dw), _ = _geometry(attrs)
    return IM2COL_SLACK if (sw, dw) == (1, 1) else 0


def _im2col_scratch(attrs) -> list[tuple[str, str, str]]:
    """The per-chunk matrix im2col writes (``col``; its first P * Q columns are the matrix) and the plane it
    reads (``xp``)."""
    slack = _slack(attrs)
    return [("col", f"(Cg * R * S, P * Q{_plus(slack)})", "_empty"),
            ("xp", _padded_src("x", slack), "_zeros")]


def _im2col_src(name, attrs):
    """``name(x, n, c0, R, S, P, Q, col, xp, ph, pw)``: col[(c*R + r)*S + s, p*Q + q] = xp[p*sh + r*dh,
    q*sw + s*dw], where xp is channel c0 + c of sample n copied into a zero-padded plane (``xp``'s border
    stays zero). One sample at a time, so the matrix stays in cache for the product. Every index is a loop
    variable, or one plus a constant: numba checks possibly negative indices for wraparound, which stops
    LLVM from vectorising (a 24-float copy measured 35 ns indexed as src[q + shift] with shift < 0, 2 ns like
    this); the run-time padding offsets go into slices, checked once per row.

    With unit stride and dilation along the width, each segment is copied as QW entries, Q rounded up to a
    multiple of IM2COL_SLACK: whole vectors, no scalar remainder loop (LeNet's conv2, Q = 10: 5.1 -> 3.4 us a
    sample). The entries past Q land where the next segment, or the row's slack, is written after them."""
    (sh, sw), _, (dh, dw), _ = _geometry(attrs)
    slack = _slack(attrs)
    segment = f"""                    src = xp[p * {sh} + r * {dh}, s:s + QW]
                    dst = row[p * Q:p * Q + QW]
                    for q in range(QW):
                        dst[q] = src[q]""" if slack else f"""                    src = xp[p * {sh} + r * {dh}]
                    base = p * Q
                    for q in range(Q):
                        row[base + q] = src[s * {dw} + q * {sw}]"""
    rounded = f"\n    QW = (Q + {slack - 1}) // {slack} * {slack}" if slack else ""
    return f"""def {name}(x, n, c0, R, S, P, Q, col, xp, ph, pw):
    H, W = x.shape[2], x.shape[3]{rounded}
    for c in range(col.shape[0] // (R * S)):
        plane = x[n, c0 + c]
        for h in range(H):
            src = plane[h]
            dst = xp[h + ph, pw:pw + W]
            for w in range(W):
                dst[w] = src[w]
        for r in range(R):
            for s in range(S):
                row = col[(c * R + r) * S + s]
                for p in range(P):
{segment}"""


def _col2im_src(name, attrs):
    """``name(dcol, out, n, c0, R, S, P, Q, gp, ph, pw)``: the adjoint of im2col: each column entry is added to
    its pixel of the zero-padded plane ``gp``, whose interior then becomes channel c0 + c of sample n."""
    (sh, sw), _, (dh, dw), _ = _geometry(attrs)
    return f"""def {name}(dcol, out, n, c0, R, S, P, Q, gp, ph, pw):
    H, W = out.shape[2], out.shape[3]
    for c in range(dcol.shape[0] // (R * S)):
        gp[...] = 0
        for r in range(R):
            for s in range(S):
                row = dcol[(c * R + r) * S + s]
                for p in range(P):
                    dst = gp[p * {sh} + r * {dh}]
                    base = p * Q
                    for q in range(Q):
                        dst[s * {dw} + q * {sw}] += row[base + q]
        plane = out[n, c0 + c]
        for h in range(H):
            src = gp[h + ph, pw:pw + W]
            dst = plane[h]
            for w in range(W):
                dst[w] = src[w]"""


# A unit-stride conv and its input gradient are correlations, computed on "wide" rows: output position (p, q)
# is column p * Wp + q of a [.., OH * Wp] result, Wp the width of the zero-padded planes read, so tap (r, s) of
# every position reads the flattened planes at one offset, r * dh * Wp + s * dw, plus the column, and a run of
# consecutive positions is one contiguous load per tap: register tiles (_tiled_src, codegen/cpu/fma_tile.py),
# no im2col, no col2im. The columns q >= OW are computed and dropped: Wp / OW times the work, which the tiles'
# speed more than pays for (BENCHMARKS.md). A row's right padding need not be stored: a read past the row's
# end lands in the next row's left padding, as zero, so Wp is the padded width less the left padding where the
# reads past the data fit in it (_pitch; LeNet's conv2 14 / 10, its input gradient 14 / 14, conv1 30 / 28).
def _pitch(out_width: str, reach: str, left: str, width: str) -> str:
    """The expression of Wp, the row pitch of zero-padded planes holding ``width`` columns of data from column
    ``left`` on, read by ``out_width`` positions each ``reach`` columns wide: at least the positions, and the
    data up to where reads stop; the full padded width less the left padding that reads past a row's end
    wrap into (none where ``left`` crops)."""
    full = f"{out_width} + {reach}"
    return f"max({out_width}, {full} - max({left}, 0), min({left} + {width}, {full}))"


def _wide(attrs) -> bool:
    """Whether a conv and its input gradient run in register tiles on wide rows: unit strides."""
    return _geometry(attrs)[0] == [1, 1]


# Each op is a chunked kernel (cpu_chunks.py): the batch is cut into one chunk of samples per thread, and each
# chunk, with scratch matrices of its own, runs its samples one at a time around one BLAS product per group.
_CHUNK = """    N, K, P, Q = {shaped}.shape
    Cg, R, S = w.shape[1], w.shape[2], w.shape[3]
    Kg = K // {groups}
{setup}{scratch}    for g in range({groups}):
        k0 = g * Kg
{per_group}        for n in range(lo, hi):
{per_sample}{finish}"""


def _chunked(groups: int, name: str, params: str, shaped: str, setup: str, scratch: list[tuple[str, str, str]],
             per_group: str, per_sample: str, reduced: tuple[str, ...] = (), finish: str = "") -> str:
    """The chunk and kernel functions of a conv op. ``shaped``: the param of shape [N, K, P, Q] (the output of
    the forward op, the output gradient of the backward ones); ``setup``: lines run once per chunk;
    ``scratch``: (name, shape, ``_empty`` or ``_zeros``: codegen/cpu/arrays.py) of each per-chunk matrix, in
    the first param's dtype; ``finish``: lines run once per chunk after its samples; ``reduced``: as
    chunked_kernel's."""
    indent = lambda text, pad: "".join(pad + line + "\n" for line in text.strip("\n").split("\n")) if text else ""
    allocs = "".join(f"    {n} = {fill}({shape}, {params.split(',')[0]}.dtype)\n" for n, shape, fill in scratch)
    chunk = _CHUNK.format(shaped=shaped, setup=indent(setup, "    "), scratch=allocs, groups=groups,
                          per_group=indent(per_group, "        "), per_sample=indent(per_sample, "            "),
                          finish=indent(finish, "    "))
    return chunked_kernel(name, params, f"{shaped}.shape[0]", chunk.rstrip("\n"), reduced)


def _forward_cpu(node, name, epilogue: str = ""):
    """``epilogue``: the parameters of fused elementwise consumers, applied to each sample as it is done.
    Unit-stride convs multiply-add in register tiles: with lanes over output channels where a group's fill a
    vector (_channel_tiled_src), else over positions on wide rows (_tiled_src); the others multiply im2col's
    matrix by BLAS."""
    groups = _geometry(node.attrs)[3]
    has_bias = len(node.inputs) == 3
    done = "" if _wide(node.attrs) or not has_bias else """
for k in range(Kg):
    bias = b[k0 + k]
    row = o3[n, k0 + k]
    for pq in range(P * Q):
        row[pq] += bias"""
    if epilogue:  # after the last group wrote its channels of sample n
        done += f"\nif g == {groups - 1}:\n    {name}_epilogue(n, n + 1, {epilogue})"
    params = ("x, w, b, out" if has_bias else "x, w, out") + ", ph, pw" + (f", {epilogue}" if epilogue else "")
    setup = "w2 = w.reshape((K, Cg * R * S))\no3 = out.reshape((N, K, P * Q))\n"
    shape = _channel_tile_shape(node)
    if shape is not None:
        lines = _channel_tiled_src(node, *shape, bias="b[k0 + o]" if has_bias else "0")
        return _chunked(groups, name, params, "out", setup + lines[0], lines[1], lines[2], lines[3] + done)
    if _wide(node.attrs):
        lines = _tiled_src(node, rows=node.inputs[1].type.shape[0] // groups, out_rows="Kg", positions=("P", "Q"),
                           src="x", channels="Cg", first="g * Cg", top="ph", left="pw",
                           weight="w2[k0 + o, (c * R + r) * S + s]", dest="o3[n, k0 + o]",
                           bias="b[k0 + o]" if has_bias else "0")
        return _chunked(groups, name, params, "out", setup + lines[0], lines[1], lines[2], lines[3] + done)
    return _im2col_src(f"{name}_im2col", node.attrs) + "\n\n\n" + _chunked(
        groups, name, params, "out", setup, _im2col_scratch(node.attrs),
        "wg = np.ascontiguousarray(w2[k0:k0 + Kg])\ncols = col[:, :P * Q]",
        f"{name}_im2col(x, n, g * Cg, R, S, P, Q, col, xp, ph, pw)\n_gemm(wg, cols, o3[n, k0:k0 + Kg], 0.0)" + done)


def _tile_shape(rows: int) -> tuple[int, int, int]:
    """(rows, vectors, vector bytes) of a register tile (codegen/cpu/fma_tile.py) covering ``rows`` output rows
    on this machine: at most half its vector registers' worth of rows (16 with AVX-512), and as many vectors
    per row as three quarters of the registers hold (the loads and broadcasts need the rest), at most 4."""
    width, registers = vector_registers()
    tile = min(rows, registers // 2)
    return tile, max(1, min(4, registers * 3 // 4 // tile)), width


def _tiled_src(node, *, rows: int, out_rows: str, positions: tuple[str, str], src: str, channels: str, first: str,
               top: str, left: str, weight: str, dest: str, bias: str = "0",
               skip_rows: bool = False) -> tuple[str, list, str, str]:
    """(setup, scratch, per-group and per-sample lines) of a unit-stride correlation in register tiles, the form
    of a conv and of its input gradient: out[o, j] for o < ``out_rows`` (``rows``, statically) and j = p * Wp + q
    a position on wide rows (see _wide), p < OH and q < OW (``positions``), is the sum over taps t (kernel row r,
    channel c, column s, in that order) of wt[t, o] * xpf[c * plane + r * dh * Wp + s * dw + j], xpf the group's
    ``channels`` planes of ``src`` (from channel ``first``), placed ``top`` rows and ``left`` columns into zero
    planes of OH + (R - 1) * dh rows of pitch Wp (_pitch), flattened (a negative offset crops). _fma_tile
    computes ``cols`` vectors of V positions by a tile of rows at a time into ``ow`` (the vectors past the last
    whole tile one at a time), whose columns q < OW of each wide row then go to ``dest`` (row o of the result,
    flat) plus ``bias``. ``weight``: wt[t, o] as an expression of c, r, s, o. With ``skip_rows`` each tile takes
    only the taps of the kernel rows that reach a row of src from one of its positions, in tiles of at most 2
    vectors, which span fewer rows: an input gradient's padding is the taps' reach on both sides (kernels
    alone: LeNet's conv2 input gradient in tiles of 2 took 0.81-0.90x the time of all taps in tiles of 4, in
    tiles of 4 0.90-0.93x; a conv's few rows of padding did not pay for the tap ranges, 1.1x on LeNet's
    conv1). The tile is a constant of the source, sized for the compiling machine (_tile_shape; with AVX-512,
    LeNet's conv1 6 rows by 4 vectors of 16 floats, its conv2's input gradient 6 by 2)."""
    _, _, (dh, dw), _ = _geometry(node.attrs)
    tile, cols, width = _tile_shape(rows)
    cols = min(cols, 2) if skip_rows else cols

    def call(span: str, vectors: int) -> str:  # a tile's _fma_tile, over the taps reaching src (skip_rows)
        if not skip_rows:
            return f"_fma_tile(xpf, offsets, wt[ot], firsts, tile, j0, 0, {tile}, {vectors}, {tile}, {width})"
        return (f"t0 = max(0, -((min(OH - 1, (j0 + {span} - 1) // Wp) - h0 - ({top})) // {dh})) * {channels} * S\n"
                f"        t1 = min(R, -((j0 // Wp - h1 - ({top})) // {dh})) * {channels} * S\n"
                f"        _fma_tile(xpf, offsets[t0:t1], wt[ot], firsts[t0:t1], tile, j0, 0, {tile}, {vectors}, "
                f"{tile}, {width})")

    rest = f"""
    for j0 in range(LT, L, V):
        {call("V", 1)}""" if cols > 1 else ""
    firsts = "\n".join(_multiples("firsts", f"{channels} * R * S", str(tile), "of each tap's weights in a row of wt"))
    setup = f"""V = {width} // {src}.itemsize  # lanes of a tile's vectors
OH, OW = {positions[0]}, {positions[1]}  # the result's positions
Hp = OH + (R - 1) * {dh}  # the padded planes' rows, and their pitch
Wp = {_pitch("OW", f"(S - 1) * {dw}", left, f"{src}.shape[3]")}
plane = Hp * Wp
L = (OH * Wp + V - 1) // V * V  # wide positions, whole vectors
LT = L // ({cols} * V) * {cols} * V  # those in whole tiles
OT = ({out_rows} + {tile - 1}) // {tile}  # tiles of output rows
offsets = _empty({channels} * R * S, np.int64)  # of each tap's reads in xpf
{firsts}
h0, h1 = max(0, -({top})), min({src}.shape[2], Hp - ({top}))  # the rows and columns of src inside them
w0, w1 = max(0, -({left})), min({src}.shape[3], Wp - ({left}))
"""
    scratch = [("xpf", f"({channels} * plane + (R - 1) * {dh} * Wp + (S - 1) * {dw} + L,)", "_zeros"),
               ("wt", f"(OT, {channels} * R * S * {tile})", "_zeros"), ("ow", f"({tile}, L)", "_empty")]
    per_group = f"""for c in range({channels}):
    for r in range(R):
        for s in range(S):
            t = (r * {channels} + c) * S + s  # by kernel row: a tile takes the rows reaching its data
            offsets[t] = c * plane + r * {dh} * Wp + s * {dw}
            for o in range({out_rows}):
                wt[o // {tile}, t * {tile} + o % {tile}] = {weight}"""
    per_sample = f"""for c in range({channels}):  # slices, so that every index is a loop variable (see _im2col_src)
    plane_in = {src}[n, {first} + c]
    for h in range(h0, h1):
        at = c * plane + (h + {top}) * Wp + {left}
        row_in, row_xp = plane_in[h, w0:w1], xpf[at + w0:at + w1]
        for q in range(w1 - w0):
            row_xp[q] = row_in[q]
for ot in range(OT):
    tile = ow[:min({tile}, {out_rows} - ot * {tile})]
    for j0 in range(0, LT, {cols} * V):
        {call(f"{cols} * V", cols)}{rest}
    for i in range(tile.shape[0]):
        o = ot * {tile} + i
        add = {bias}
        wide = tile[i]
        row_out = {dest}
        for p in range(OH):
            src_p, dst_p = wide[p * Wp:p * Wp + OW], row_out[p * OW:(p + 1) * OW]
            for q in range(OW):
                dst_p[q] = src_p[q] + add"""
    return setup, scratch, per_group, per_sample


#: per sample: the group's input planes of x into xpf's zero-padded planes of pitch Wp, ph rows and pw columns in
_PLANES_INTO_XPF = """for c in range(Cg):  # the group's input planes into xpf's zero-padded ones
    plane_in = x[n, g * Cg + c]
    for h in range(H):
        at = c * plane + (h + ph) * Wp + pw
        row_in, row_xp = plane_in[h], xpf[at:at + W]
        for w_ in range(W):
            row_xp[w_] = row_in[w_]
"""


def _multiples(name: str, count: str, step: str, what: str) -> list[str]:
    """Setup lines of ``name`` = [0, step, 2 * step, ...], ``count`` int64 entries: np.arange(count) * step,
    without the two library functions numba would compile for it (codegen/cpu/arrays.py)."""
    return [f"{name} = _empty({count}, np.int64)  # {what}", f"for i in range({count}):", f"    {name}[i] = i * {step}"]


def _tap_offsets(count: str, dh: int, dw: int) -> list[str]:
    """Setup lines of x_at[t], the offset in xpf of tap t = (c, r, s): ``count`` entries, those past the taps
    (a tile's padding) the first tap's."""
    return [f"x_at = _zeros({count}, np.int64)  # of each tap's reads in xpf",
            "for c in range(Cg):",
            "    for r in range(R):",
            "        for s in range(S):",
            f"            x_at[(c * R + r) * S + s] = c * plane + r * {dh} * Wp + s * {dw}"]


def _channel_tile_shape(node) -> tuple[int, int, int, int] | None:
    """(output rows, positions per row, vectors of output channels, vector bytes) of a unit-stride conv's
    register tile with lanes over output channels (_channel_tiled_src) on this machine, None where a group's
    channels do not fill a vector or the output's height and width are not constants of the graph. The
    positions of an output row are split evenly into as few runs as fit the registers left by the channel
    vectors, and as many whole runs of rows as fit share a tile (LeNet's conv2 with AVX-512: 2 rows of 10
    positions by 1 vector of 16 channels)."""
    width, registers = vector_registers()
    (sh, sw), _, _, groups = _geometry(node.attrs)
    p, q = node.outputs[0].type.shape[2:]
    lanes = width // node.inputs[0].type.np_dtype.itemsize
    kg = node.inputs[1].type.shape[0] // groups
    if (sh, sw) != (1, 1) or kg < lanes or not (isinstance(p, int) and isinstance(q, int)):
        return None
    cols = min(-(-kg // lanes), 4)
    budget = (registers - 4) // cols  # accumulators per vector of channels: the rest hold loads
    run = -(-q // -(-q // budget))
    rows = min(p, max(1, budget // run))
    return -(-p // -(-p // rows)), run, cols, width


def _channel_tiled_src(node, rows: int, run: int, cols: int, width: int, bias: str) -> tuple[str, list, str, str]:
    """(setup, scratch, per-group and per-sample lines) of a unit-stride conv in register tiles whose lanes are
    output channels, the weight gradient's tile (_tiled_weight_grad_src) turned around: _fma_tile's vector
    operand is a tap's weights for a vector of the group's channels (wk), its broadcasts the zero-padded input
    planes (xpf) at each tap's offset plus the tile's positions, ``rows`` output rows of ``run`` positions, a
    row Wp apart. Only the P x Q positions are computed (no wide rows' extra columns): LeNet's conv2 does 0.69x
    the multiply-adds of _tiled_src's 16 x 1 tiles, in 0.83x the time (the kernel alone, one thread). The
    tile's [position, channel] sums go to the output transposed, plus ``bias``, a row of channels at a time
    (written a position at a time, across the rows, the copy took 3 of the kernel's 7.5 us a sample)."""
    _, _, (dh, dw), _ = _geometry(node.attrs)
    setup = "\n".join([
        f"V = {width} // x.itemsize  # lanes of a tile's vectors",
        f"KV = (Kg + {cols} * V - 1) // ({cols} * V) * {cols} * V  # a group's channels in whole tiles of vectors",
        "H, W = x.shape[2], x.shape[3]",
        f"Wp = {_pitch('Q', f'(S - 1) * {dw}', 'pw', 'W')}  # the zero-padded planes' pitch",
        f"plane = (P + (R - 1) * {dh}) * Wp",
        *_multiples("w_at", "Cg * R * S", "KV", "of each tap's weights in wk"),
        *_tap_offsets("Cg * R * S", dh, dw)])
    scratch = [("xpf", f"(Cg * plane + {rows + 1} * Wp + (S - 1) * {dw} + {run},)", "_zeros"),
               ("wk", "(Cg * R * S * KV,)", "_zeros"), ("ot", f"({rows * run}, KV)", "_empty")]
    per_group = """for t in range(Cg * R * S):  # the group's weights, a row of channels per tap
    for o in range(Kg):
        wk[t * KV + o] = w2[k0 + o, t]"""
    per_sample = _PLANES_INTO_XPF + f"""for p0 in range(0, P, {rows}):
    for q0 in range(0, Q, {run}):
        taps = xpf[p0 * Wp + q0:]
        for j0 in range(0, KV, {cols} * V):
            _fma_tile(wk, w_at, taps, x_at, ot, j0, Wp, {rows * run}, {cols}, {run}, {width})
        for o in range(Kg):  # the sums, a row per position, transposed into the output's rows of channels
            add = {bias}
            row_out = o3[n, k0 + o]
            for i in range(min({rows}, P - p0)):
                at = (p0 + i) * Q + q0
                dst = row_out[at:at + min({run}, Q - q0)]
                for q in range(dst.size):
                    dst[q] = ot[i * {run} + q, o] + add"""
    return setup, scratch, per_group, per_sample


#: a weight gradient with at least this many taps per output channel (C/groups * R * S) is computed transposed
TRANSPOSED_WEIGHT_GRAD = 128


def _backward_weight_cpu(node, name, bias_grad: bool = False, prologue=None):
    """The weight gradient (and, with ``bias_grad``, the bias gradient the fusion pass gave the kernel,
    fusion.py): in register tiles with lanes over output channels where a group's channels fill a vector
    (_weight_tile_shape), else in tiles of dot products along the positions for unit strides
    (_dot_tile_shape), else by im2col and BLAS.
    With ``prologue`` (the producer of gy, fusion.py), each sample of gy is computed into a scratch first."""
    gy = _gy_source(prologue, name)
    shape = _weight_tile_shape(node)
    if shape is not None:
        return gy.helper + _tiled_weight_grad_src(node, name, bias_grad, gy, *shape)
    shape = _dot_tile_shape(node)
    if shape is not None:
        return gy.helper + _dot_weight_grad_src(node, name, bias_grad, gy, *shape)
    return gy.helper + _blas_weight_grad_src(node, name, bias_grad, gy)


class _GySource(NamedTuple):
    """How a weight gradient's chunk reads sample n of gy, as ``g3[sample]`` (a [K, P * Q] view)."""

    params: str  # the kernel's parameters in place of gy
    shaped: str  # the one of them shaped like gy
    helper: str  # the prologue's source
    scratch: list  # the chunk's scratch for a sample of gy
    per_group: str  # defines g3
    per_sample: str  # run first for each sample
    sample: str  # g3's index of sample n


def _gy_source(prologue, name: str) -> _GySource:
    """gy as the kernel's parameter, or computed one sample at a time by ``prologue``'s sample_prologue into
    gys: its parameters are the producer's inputs (q0, q1, ...), one of them shaped like its output."""
    if prologue is None:
        return _GySource("gy", "gy", "", [], "g3 = gy.reshape((N, K, P * Q))", "", "n")
    params = ", ".join(f"q{i}" for i in range(len(prologue.inputs)))
    shaped = next(f"q{i}" for i, v in enumerate(prologue.inputs) if v.type.shape == prologue.outputs[0].type.shape)
    helper = get_op(prologue.op).sample_prologue(prologue, f"{name}_prologue") + "\n\n\n"
    return _GySource(params, shaped, helper, [("gys", "(1, K, P, Q)", "_empty")],
                     "g3 = gys.reshape((1, K, P * Q))", f"{name}_prologue({params}, gys, n)\n", "0")


def _bias_sum(bias_grad: bool, row: str, to: str) -> tuple[str, str, str]:
    """(before, inside, after) lines of a loop over a sample's gy row ``row`` that add it up into ``to``."""
    if not bias_grad:
        return "", "", ""
    return "\n    total = x.dtype.type(0)", f"\n        total += {row}[j]", f"\n    {to} += total"


def _weight_grad_chunked(groups: int, name: str, bias_grad: bool, gy: _GySource, setup: str, scratch: list,
                         per_group: str, per_sample: str, finish: str = "") -> str:
    """A weight gradient's chunk and kernel functions (_chunked): its parameters, x, gy's source, w, out (and
    gb, the bias gradient), and its rows of partial sums, ``acc`` [K, Cg * R * S] (and ``acc_b``), set up
    before ``setup``."""
    sums = "acc = partial[t, :out.size].reshape((K, Cg * R * S))\n" + \
        ("acc_b = partial[t, out.size:]\n" if bias_grad else "")
    return _chunked(groups, name, f"x, {gy.params}, w, out" + (", gb" if bias_grad else "") + ", ph, pw", gy.shaped,
                    sums + setup, scratch, per_group, per_sample, reduced=("out", "gb") if bias_grad else ("out",),
                    finish=finish)


def _weight_tile_shape(node) -> tuple[int, int, int] | None:
    """(tap rows r per tile, vectors of output channels, vector bytes) of the weight gradient's register tile
    (_tiled_weight_grad_src) on this machine: a group's output channels in as many vectors as fit, and as many
    rows of S taps as fit the registers left, spread evenly over R. None (dot tiles, or im2col and BLAS) where
    a group has fewer output channels than a vector has lanes, where a row of taps does not fit, or where the
    taps along a row are not adjacent (dilation along the width). With few channels most lanes idle: LeNet's
    conv1 (6 channels) took 1.4x BLAS's time in tiles of 8 lanes, 2.1x in 16, where conv2 (16) took
    0.51-0.53x (the kernel alone, in-process A/B at batch 64 and 256; BENCHMARKS.md)."""
    width, registers = vector_registers()
    _, _, (_, dw), groups = _geometry(node.attrs)
    k, _, r, s = node.inputs[-1].type.shape
    budget = registers - 4  # the rest hold a vector of gy and the broadcasts
    lanes = width // node.inputs[0].type.np_dtype.itemsize
    if dw != 1 or k // groups < lanes or s > budget:
        return None
    cols = min(-(-(k // groups) // lanes), budget // s)
    rows = max(1, min(r, budget // (s * cols)))
    return -(-r // -(-r // rows)), cols, width


def _tiled_weight_grad_src(node, name, bias_grad: bool, gy: _GySource, rows: int, cols: int, width: int):
    """Per sample: gw[k, c, r, s] += sum over positions j = (p, q) of gy[n, k, j] * xp[c, p * sh + r * dh,
    q * sw + s], in register tiles of ``rows`` x S taps by ``cols`` vectors of output channels: _fma_tile's
    vector operand is gy transposed (gyt, a row of channels per position), its broadcasts the zero-padded
    input planes (xpf) at each position's first tap plus the tap's offset, r * dh * Wp + s. No im2col matrix,
    no BLAS: each position costs ``cols`` vector loads and rows * S * cols multiply-adds (LeNet's conv2: 25
    by 1 vector of 16 channels). Each sample's sums (gw_n, [tap, channel]) are added into the chunk's (acc_t),
    written transposed into its row of partial sums at the end: the per-sample sums round less than one long
    running sum (a BatchNorm CNN's conv weight gradient 2.6x closer to float64's)."""
    (sh, sw), _, (dh, _), groups = _geometry(node.attrs)
    s = node.inputs[-1].type.shape[3]
    before, inside, after = _bias_sum(bias_grad, "row_k", "acc_b[k0 + k]")
    setup = "\n".join([
        f"V = {width} // x.itemsize  # lanes of a tile's vectors",
        f"KV = (Kg + {cols} * V - 1) // ({cols} * V) * {cols} * V  # a group's channels in whole tiles of vectors",
        "H, W = x.shape[2], x.shape[3]",
        "Wp = W + 2 * pw  # the zero-padded planes",
        "plane = (H + 2 * ph) * Wp",
        *_multiples("gyt_at", "P * Q", "KV", "of each position's channels in gyt"),
        "x_at = _empty(P * Q, np.int64)  # of each position's first tap in a plane of xpf",
        "for p in range(P):",
        "    for q in range(Q):",
        f"        x_at[p * Q + q] = p * {sh} * Wp + q * {sw}"])
    scratch = [("xpf", f"(Cg * plane + {rows} * {dh} * Wp,)", "_zeros"),  # room for a tile's rows past R
               ("gyt", "(P * Q * KV,)", "_zeros"), ("gw_n", "(Cg * R * S * KV,)", "_empty"),
               ("acc_t", f"({groups} * Cg * R * S * KV,)", "_zeros")] + gy.scratch
    per_sample = gy.per_sample + _PLANES_INTO_XPF + f"""for k in range(Kg):  # the group's gy rows, transposed{before}
    row_k = g3[{gy.sample}, k0 + k]
    for j in range(P * Q):
        gyt[j * KV + k] = row_k[j]{inside}{after}
gw_t = gw_n.reshape((Cg * R * S, KV))
for c in range(Cg):
    for r0 in range(0, R, {rows}):
        first = (c * R + r0) * S
        tile = gw_t[first:first + min({rows}, R - r0) * S]
        taps = xpf[c * plane + r0 * {dh} * Wp:]
        for j0 in range(0, KV, {cols} * V):
            _fma_tile(gyt, gyt_at, taps, x_at, tile, j0, {dh} * Wp, {rows * s}, {cols}, {s}, {width})
sums = acc_t[g * gw_n.size:(g + 1) * gw_n.size]  # the sample's own sums first: fewer rounding errors
for j in range(gw_n.size):
    sums[j] += gw_n[j]"""
    finish = """for k in range(K):
    row_k, g, kk = acc[k], k // Kg, k % Kg
    for j in range(Cg * R * S):
        row_k[j] = acc_t[(g * Cg * R * S + j) * KV + kk]"""
    return _weight_grad_chunked(groups, name, bias_grad, gy, setup, scratch, gy.per_group, per_sample, finish)


def _dot_tile_shape(node) -> tuple[int, int, int] | None:
    """(output channels, taps, vector bytes) of the weight gradient's tile of dot products
    (_dot_weight_grad_src) on this machine, None for a strided conv. Each step of the tile loads a vector of
    gy per channel (aligned) and of the input per tap (unaligned: about two loads' worth) for channels * taps
    multiply-adds; the shape is the one with the fewest steps' worth of those, over all tiles, whose
    accumulators and gy vectors fit the registers (LeNet's conv1, 6 channels by 25 taps: 3 x 5 with AVX-512,
    3 x 3 with AVX2)."""
    if _geometry(node.attrs)[0] != [1, 1]:
        return None
    width, registers = vector_registers()
    k, cg, r, s = node.inputs[-1].type.shape
    kg, taps = k // _geometry(node.attrs)[3], cg * r * s

    def cost(shape):
        rows, cols = shape
        return -(-kg // rows) * -(-taps // cols) * max(rows * cols, rows + 2 * cols)

    fits = [(rows, cols) for rows in range(1, min(kg, registers) + 1) for cols in range(1, min(taps, registers) + 1)
            if rows * cols + rows + 1 <= registers - 2]
    return *min(fits, key=cost), width


def _dot_weight_grad_src(node, name, bias_grad: bool, gy: _GySource, rows: int, cols: int, width: int):
    """Per sample: gw[k, t] += the dot product, along wide positions j (see _wide), of gyw[k, j], gy on wide
    rows (zeros in the columns q >= Q), and xpf[t's offset + j], the zero-padded input planes flattened, t a
    tap (c, r, s) at offset c * plane + r * dh * Wp + s * dw: _dot_tile computes ``rows`` channels by ``cols``
    taps at a time, both operands contiguous along j. This suits few output channels, where the lanes of
    _tiled_weight_grad_src's vectors would idle: LeNet's conv1 (6 channels, 25 taps). Each sample's dot
    products are added into the chunk's row of partial sums, one add per weight."""
    (_, _, (dh, dw), groups), (k, cg, r, s) = _geometry(node.attrs), node.inputs[-1].type.shape
    kt, tt = -(-(k // groups) // rows) * rows, -(-(cg * r * s) // cols) * cols  # whole tiles of rows and taps
    before, inside, after = _bias_sum(bias_grad, "row_k", "acc_b[k0 + k]")
    setup = "\n".join([
        f"V = {width} // x.itemsize  # lanes of a tile's vectors",
        "H, W = x.shape[2], x.shape[3]",
        f"Wp = {_pitch('Q', f'(S - 1) * {dw}', 'pw', 'W')}  # the zero-padded planes' pitch",
        "plane = (H + 2 * ph) * Wp",
        "L = (P * Wp + V - 1) // V * V  # wide positions, whole vectors",
        *_multiples("gy_at", str(kt), "L", "of each channel's row in gyw"),
        *_tap_offsets(str(tt), dh, dw)])
    scratch = [("xpf", f"(Cg * plane + (R - 1) * {dh} * Wp + (S - 1) * {dw} + L,)", "_zeros"),
               ("gyw", f"({kt} * L,)", "_zeros"), ("gw_n", "(Kg, Cg * R * S)", "_empty")] + gy.scratch
    bias = f"\n    for j in range(P * Q):{inside}{after}" if bias_grad else ""
    per_sample = gy.per_sample + _PLANES_INTO_XPF + f"""for k in range(Kg):  # gy's rows onto wide rows{before}
    row_k = g3[{gy.sample}, k0 + k]{bias}
    for p in range(P):
        row_in, row_w = row_k[p * Q:(p + 1) * Q], gyw[k * L + p * Wp:k * L + p * Wp + Q]
        for q in range(Q):
            row_w[q] = row_in[q]
for k_ in range(0, Kg, {rows}):
    for t_ in range(0, Cg * R * S, {cols}):
        _dot_tile(gyw, gy_at[k_:k_ + {rows}], xpf, x_at[t_:t_ + {cols}], gw_n[k_:k_ + {rows}, t_:t_ + {cols}], L,
                  {rows}, {cols}, {width})
for k in range(Kg):
    row_acc, row_n = acc[k0 + k], gw_n[k]
    for j in range(Cg * R * S):
        row_acc[j] += row_n[j]"""
    return _weight_grad_chunked(groups, name, bias_grad, gy, setup, scratch, gy.per_group, per_sample)


def _blas_weight_grad_src(node, name, bias_grad: bool, gy: _GySource):
    """Per sample: gw[group rows] += gy[n, group rows] @ im2col(x[n]).T, accumulated by BLAS (beta = 1) into
    the chunk's row of partial sums, so nothing batch-sized is built; the kernel adds the rows up. With
    ``bias_grad`` (the fusion pass gave the kernel the conv's bias gradient, fusion.py), the chunk also adds
    each sample's gy rows into the bias part of its row, reading them while the product has them in cache.

    Both operands of that product run along the pixels, so one of them is transposed for BLAS, which OpenBLAS
    does slowly when im2col has many rows: a 16x100 by 100x150 product (LeNet's conv2) took 12.3 us against
    5.6 us for the same product with both operands untransposed (one thread; 2.0-2.5x at 150-288 taps, 1.3x
    at 576, none or the other way at 25 and 72). With TRANSPOSED_WEIGHT_GRAD taps or more the chunk computes
    gw.T += im2col(x[n]) @ gy[n].T instead, after copying gy[n] transposed (about 1 us), and writes its sum
    transposed into its row at the end. The choice is made at run time from w's shape, so convolutions on
    either side of it share one compiled kernel."""
    groups = _geometry(node.attrs)[3]
    before, inside, after = _bias_sum(bias_grad, "gy_k", "acc_b[k]")
    bias = f"""
for k in range(k0, k0 + Kg):
    gy_k = g3[{gy.sample}, k]{before}
    for j in range(P * Q):{inside}{after}""" if bias_grad else ""
    setup = "\n".join([f"transposed = Cg * R * S >= {TRANSPOSED_WEIGHT_GRAD}",
                       "acc_t = _zeros((Cg * R * S, K) if transposed else (0, 0), x.dtype)",
                       "gy_t = _empty((P * Q, Kg) if transposed else (0, 0), x.dtype)"])
    return _im2col_src(f"{name}_im2col", node.attrs) + "\n\n\n" + _weight_grad_chunked(
        groups, name, bias_grad, gy, setup,
        _im2col_scratch(node.attrs) + gy.scratch, gy.per_group + "\ncols = col[:, :P * Q]",
        gy.per_sample + f"""{name}_im2col(x, n, g * Cg, R, S, P, Q, col, xp, ph, pw)
if transposed:  # loops, not gy_t[...] = g3[...].T: numba compiles a transposed array copy for seconds
    for k in range(Kg):
        row_k = g3[{gy.sample}, k0 + k]
        for j in range(P * Q):
            gy_t[j, k] = row_k[j]
    _gemm(cols, gy_t, acc_t[:, k0:k0 + Kg], 1.0)
else:
    _gemm(g3[{gy.sample}, k0:k0 + Kg], cols.T, acc[k0:k0 + Kg], 1.0){bias}""", """if transposed:
    for k in range(K):
        row_k = acc[k]
        for j in range(Cg * R * S):
            row_k[j] = acc_t[j, k]""")


def _backward_input_cpu(node, name, params="gy, w, x, out, ph, pw"):
    """Unit strides: the correlation of gy, padded by the taps' reach less the conv's padding, with the flipped
    weights, in register tiles (_tiled_src: the gradient of input channel o at (h, w) sums
    w[k, o, R-1-r, S-1-s] * gy[k, h + r*dh - (R-1)*dh + ph, w + s*dw - (S-1)*dw + pw]). Other strides: per
    sample, the column gradient w[group].T @ gy[n, group], added back to the pixels it came from."""
    (_, _, (dh, dw), groups), cg = _geometry(node.attrs), node.inputs[1].type.shape[1]
    if _wide(node.attrs):
        lines = _tiled_src(node, rows=cg, out_rows="Cg", positions=("out.shape[2]", "out.shape[3]"), src="gy",
                           channels="Kg", first="k0", top=f"(R - 1) * {dh} - ph", left=f"(S - 1) * {dw} - pw",
                           weight="w[k0 + c, o, R - 1 - r, S - 1 - s]", dest="o3[n, g * Cg + o]", skip_rows=True)
        setup = "o3 = out.reshape((N, out.shape[1], out.shape[2] * out.shape[3]))\n" + lines[0]
        return _chunked(groups, name, params, "gy", setup, lines[1], lines[2], lines[3])
    return _col2im_src(f"{name}_col2im", node.attrs) + "\n\n\n" + _chunked(
        groups, name, params, "gy", "w2 = w.reshape((K, Cg * R * S))\ng3 = gy.reshape((N, K, P * Q))",
        [("dcol", "(Cg * R * S, P * Q)", "_empty"), ("gp", _padded_src("out"), "_empty")],
        "wt = np.ascontiguousarray(w2[k0:k0 + Kg].T)",
        f"_gemm(wt, g3[n, k0:k0 + Kg], dcol, 0.0)\n{name}_col2im(dcol, out, n, g * Cg, R, S, P, Q, gp, ph, pw)")


def _flops(node, sizes):
    n, k, p, q = node.outputs[0].type.concrete(sizes)
    _, cg, r, s = node.inputs[1].type.shape
    return 2 * n * k * p * q * cg * r * s


def _bwd_flops(node, sizes):
    gy = node.inputs[1] if node.op == "conv2d_backward_weight" else node.inputs[0]
    w = node.inputs[2] if node.op == "conv2d_backward_weight" else node.inputs[1]
    n, k, p, q = gy.type.concrete(sizes)
    _, cg, r, s = w.type.shape
    return 2 * n * k * p * q * cg * r * s


# ---- CUDA lowering: implicit GEMMs on the tiles of cuda_lowering.tiled_gemm ----------------------------------
# Each op is one product per group t (T = groups) whose image-side operand is gathered from the arrays as the
# tiles stage it: no im2col matrix is built. A depthwise convolution (one row or column per group's product)
# keeps one thread per output element: its tile would use each gathered element for one output only, so the
# staging would buy nothing, and all but one row (or column) of the tile's threads would idle.
def _tile_pays(*extents: int) -> bool:
    """Whether a tiled product with these static extents (of its per-group M, N) beats direct loops."""
    return min(extents) > 1


def _sizes(image: str, outputs: str, product: str) -> str:
    """Setup lines: a comment stating group t's ``product``, and the extents the reads use (``image`` and
    ``outputs`` have the conv's input and output shapes)."""
    return f"""    # group t: {product}
    Cg, R, S = w.shape[1], w.shape[2], w.shape[3]
    H, W, P, Q = {image}.shape[2], {image}.shape[3], {outputs}.shape[2], {outputs}.shape[3]
"""


def _coords(index: str, names: tuple[str, str, str], inner: tuple[str, str]) -> str:
    """A line splitting the flat ``index`` into three coordinates, the last two of extents ``inner`` (C order)."""
    (a, b, c), (nb, nc) = names, inner
    return f"    {a}, {b}, {c} = {index} // ({nb} * {nc}), {index} // {nc} % {nb}, {index} % {nc}"


def _im2col(attrs, patch: str, pixel: str) -> Operand:
    """Group t's im2col matrix of x, gathered: entry (``patch`` = (c, r, s), ``pixel`` = (n, p, q)) is
    x[n, t*Cg + c, p*sh - ph + r*dh, q*sw - pw + s*dw], zero in the padding. x is contiguous along q, a
    coordinate of the pixel."""
    (sh, sw), (ph, pw), (dh, dw), _ = _geometry(attrs)
    lines = [_coords(patch, ("c", "r", "s"), ("R", "S")), _coords(pixel, ("n", "p", "q"), ("P", "Q")),
             f"    h, wc = p * {sh} - {ph} + r * {dh}, q * {sw} - {pw} + s * {dw}  # read by tap (r, s) of (p, q)"]
    read = "x[n, t * Cg + c, h, wc] if 0 <= h < H and 0 <= wc < W else 0.0"
    return Operand(read, pixel == "k", "\n".join(lines))


def _forward_cuda(node, name):
    """out[n, t*Kg + row, p, q] = w[t*Kg + row, (c, r, s)] @ im2col(x)[(c, r, s), (n, p, q)] + b[t*Kg + row]:
    M = Kg, N = batch*P*Q (the whole batch in one column space, so a batch of one still fills the tiles),
    K = Cg*R*S."""
    groups = _geometry(node.attrs)[3]
    has_bias = len(node.inputs) == 3
    params = "x, w, b, out" if has_bias else "x, w, out"
    if not _tile_pays(node.inputs[1].type.shape[0] // groups):
        return _forward_direct_cuda(node, name, params)
    product = "out[n, t*Kg + row, p, q] = w2[t*Kg + row, :] @ im2col(x)[:, (n, p, q)] (+ b)"
    setup = _sizes("x", "out", product) + "    w2 = w.reshape((w.shape[0], Cg * R * S))\n"
    dims = (str(groups), f"out.shape[1] // {groups}", "out.shape[0] * out.shape[2] * out.shape[3]", "Cg * R * S")
    bias = " + b[t * M + row]" if has_bias else ""
    store = _coords("col", ("n", "p", "q"), ("P", "Q")) + f"\n    out[n, t * M + row, p, q] = value{bias}"
    return tiled_gemm(name, params, node.outputs[0].dtype, setup, dims, Operand("w2[t * M + j, k]", True),
                      _im2col(node.attrs, "k", "j"), store)


def _tap(offset: str, stride: int, size: str) -> tuple[str, str]:
    """The output coordinate whose window reads a pixel at ``offset`` (pixel + padding - tap * dilation) from
    the window's start, and the condition that there is one: ``offset`` a multiple of the stride, inside."""
    if stride == 1:
        return offset, f"0 <= {offset} < {size}"
    return f"{offset} // {stride}", f"0 <= {offset} < {size} * {stride} and {offset} % {stride} == 0"


def _backward_input_cuda(node, name, params="gy, w, x, out"):
    """The gather form (no col2im, no atomics): out[n, t*Cg + row, h, wc] = sum over (k, r, s) of
    w[t*Kg + k, row, r, s] * gy[n, t*Kg + k, p, q], where (p, q) is the output position whose tap (r, s) reads
    (h, wc): M = Cg, N = batch*H*W, K = Kg*R*S. With a stride > 1 a tap reads only the pixels at multiples of
    the stride and B holds zeros for the others (1 - 1/(sh*sw) of its entries): every stride runs the same
    regular product rather than direct loops that skip them."""
    (sh, sw), (ph, pw), (dh, dw), groups = _geometry(node.attrs)
    if not _tile_pays(node.inputs[1].type.shape[1]):
        return _backward_input_direct_cuda(node, name, params)
    product = "out[n, t*Cg + row, h, wc] = w3[t*Kg + k, row, (r, s)] @ gy[n, t*Kg + k, taps (r, s) of (h, wc)]"
    setup = _sizes("out", "gy", product) + f"""    Kg = gy.shape[1] // {groups}
    w3 = w.reshape((w.shape[0], Cg, R * S))
"""
    dims = (str(groups), f"out.shape[1] // {groups}", "out.shape[0] * out.shape[2] * out.shape[3]", "Kg * R * S")
    (p, p_in), (q, q_in) = _tap("hp", sh, "P"), _tap("wp", sw, "Q")
    lines = [_coords("k", ("co", "r", "s"), ("R", "S")), _coords("j", ("n", "h", "wc"), ("H", "W")),
             f"    hp, wp = h + {ph} - r * {dh}, wc + {pw} - s * {dw}  # (p * sh, q * sw) if tap (r, s) of (p, q)"]
    gathered = Operand(f"gy[n, t * Kg + co, {p}, {q}] if {p_in} and {q_in} else 0.0", False, "\n".join(lines))
    store = _coords("col", ("n", "h", "wc"), ("H", "W")) + "\n    out[n, t * M + row, h, wc] = value"
    return tiled_gemm(name, params, node.outputs[0].dtype, setup, dims,
                      Operand("w3[t * Kg + k // (R * S), j, k % (R * S)]", True), gathered, store)


def _backward_weight_cuda(node, name):
    """out[t*Kg + row, (c, r, s)] = sum over (n, p, q) of gy[n, t*Kg + row, p, q] * im2col(x)[(c, r, s), (n, p, q)]:
    M = Kg, N = Cg*R*S, K = batch*P*Q. K is long and M*N small, so the reduction is split: each unit of work
    reduces one SLICE of K and adds its tile to the zeroed output atomically, and the grid has enough blocks."""
    groups = _geometry(node.attrs)[3]
    k_out, cg, r, s = node.inputs[2].type.shape
    if not _tile_pays(k_out // groups, cg * r * s):
        return _backward_weight_direct_cuda(node, name)
    product = "out[t*Kg + row, (c, r, s)] += g3[n, t*Kg + row, (p, q)] @ im2col(x)[(c, r, s), (n, p, q)]"
    setup = _sizes("x", "gy", product) + """    g3 = gy.reshape((gy.shape[0], gy.shape[1], P * Q))
    o2 = out.reshape((out.shape[0], Cg * R * S))
"""
    dims = (str(groups), f"out.shape[0] // {groups}", "out.shape[1] * out.shape[2] * out.shape[3]",
            "gy.shape[0] * gy.shape[2] * gy.shape[3]")
    a = Operand("g3[k // (P * Q), t * M + j, k % (P * Q)]", True)
    return tiled_gemm(name, "x, gy, w, out", node.outputs[0].dtype, setup, dims, a, _im2col(node.attrs, "j", "k"),
                      "    cuda.atomic.add(o2, (t * M + row, col), value)", split_k=True, fill="out = 0.0")


# Direct loops, for depthwise convolutions (see above).
def _forward_direct_cuda(node, name, params):
    """One thread per output element."""
    (sh, sw), (ph, pw), (dh, dw), groups = _geometry(node.attrs)
    body = unravel(["n", "k", "p", "q"], "out") + f"""    Cg, R, S = w.shape[1], w.shape[2], w.shape[3]
    H, W = x.shape[2], x.shape[3]
    c0 = (k // (out.shape[1] // {groups})) * Cg
    acc = {"b[k]" if len(node.inputs) == 3 else "0.0"}
    for c in range(Cg):
        for r in range(R):
            h = p * {sh} - {ph} + r * {dh}
            if h >= 0 and h < H:
                for s in range(S):
                    wc = q * {sw} - {pw} + s * {dw}
                    if wc >= 0 and wc < W:
                        acc += x[n, c0 + c, h, wc] * w[k, c, r, s]
    out[n, k, p, q] = acc"""
    return cuda_kernel(name, params, "out.size", body)


def _backward_input_direct_cuda(node, name, params):
    """Gather form: each input pixel sums the output positions whose windows cover it (no atomics)."""
    (sh, sw), (ph, pw), (dh, dw), groups = _geometry(node.attrs)
    body = unravel(["n", "ci", "h", "wc"], "out") + f"""    K, P, Q = gy.shape[1], gy.shape[2], gy.shape[3]
    Cg, R, S = w.shape[1], w.shape[2], w.shape[3]
    Kg = K // {groups}
    g = ci // Cg
    c = ci % Cg
    acc = 0.0
    for r in range(R):
        ph_ = h + {ph} - r * {dh}
        if ph_ >= 0 and ph_ % {sh} == 0 and ph_ // {sh} < P:
            p = ph_ // {sh}
            for s in range(S):
                qw = wc + {pw} - s * {dw}
                if qw >= 0 and qw % {sw} == 0 and qw // {sw} < Q:
                    q = qw // {sw}
                    for k in range(g * Kg, (g + 1) * Kg):
                        acc += gy[n, k, p, q] * w[k, c, r, s]
    out[n, ci, h, wc] = acc"""
    return cuda_kernel(name, params, "out.size", body)


def _backward_weight_direct_cuda(node, name):
    """One thread per (sample, weight element) sums over the output positions; samples combine atomically."""
    (sh, sw), (ph, pw), (dh, dw), groups = _geometry(node.attrs)
    body = f"""    n = i // out.size
    rest = i % out.size
    s = rest % out.shape[3]
    rest //= out.shape[3]
    r = rest % out.shape[2]
    rest //= out.shape[2]
    c = rest % out.shape[1]
    k = rest // out.shape[1]
    K, P, Q = gy.shape[1], gy.shape[2], gy.shape[3]
    H, W = x.shape[2], x.shape[3]
    ci = (k // (K // {groups})) * out.shape[1] + c
    acc = 0.0
    for p in range(P):
        h = p * {sh} - {ph} + r * {dh}
        if h >= 0 and h < H:
            for q in range(Q):
                wc = q * {sw} - {pw} + s * {dw}
                if wc >= 0 and wc < W:
                    acc += gy[n, k, p, q] * x[n, ci, h, wc]
    cuda.atomic.add(out, (k, c, r, s), acc)"""
    return cuda_kernel(name, "x, gy, w, out", "out.size * x.shape[0]", body, fill="out = 0.0")


register(OpDef("conv2d", "kernel", _infer, _ref, vjp=_vjp, lower={"cpu": _forward_cpu, "cuda": _forward_cuda},
               flops=_flops, epilogue=True, runtime_attrs=_padding))
register(OpDef("conv2d_backward_input", "kernel", _bwd_input_infer, _bwd_input_ref,
               lower={"cpu": _backward_input_cpu, "cuda": _backward_input_cuda}, flops=_bwd_flops,
               runtime_attrs=_padding))
register(OpDef("conv2d_backward_weight", "kernel", _bwd_weight_infer, _bwd_weight_ref,
               lower={"cpu": _backward_weight_cpu, "cuda": _backward_weight_cuda}, flops=_bwd_flops,
               runtime_attrs=_padding, bias_grad=lambda node: 1, prologue=True, reassociate=True))  # gy


# ---- conv_transpose2d(x, w) {stride, padding, dilation, groups, output_padding} ---------------------------------
# The gradient of conv2d w.r.t. its input, as a layer (ONNX's ConvTranspose): w is [C_in, C_out/groups, R, S].
# It reuses conv2d_backward_input's lowerings, which read only the output's shape.
def _transpose_out_size(size, k, stride, pad, dil, extra):
    return (size - 1) * stride - 2 * pad + dil * (k - 1) + 1 + extra


def _transpose_infer(types, attrs):
    x, w = types
    expect_rank(x, 4, "conv_transpose2d input")
    expect_rank(w, 4, "conv_transpose2d weight")
    stride, pad, dil, groups = _geometry(attrs)
    extra = _pair(attrs.get("output_padding", 0))
    if x.dtype != w.dtype or not is_float(x.dtype):
        raise ShapeError(f"input {x} and weight {w} must share a float dtype")
    if x.shape[1] != w.shape[0] or w.shape[0] % groups:
        raise ShapeError(f"input {x} does not match weight {w} ([C_in, C_out/groups, R, S]) with groups={groups}")
    if any(e >= max(s, d) for e, s, d in zip(extra, stride, dil)):
        raise ShapeError(f"output_padding {extra} must be smaller than the stride {stride} or the dilation {dil}")
    h, wd = (_transpose_out_size(x.shape[2 + a], w.shape[2 + a], stride[a], pad[a], dil[a], extra[a]) for a in (0, 1))
    if h <= 0 or wd <= 0:
        raise ShapeError(f"padding {pad} leaves no output for input {x} and weight {w}")
    return [x.with_shape((x.shape[0], w.shape[1] * groups, h, wd))]


def _transpose_ref(xs, attrs):
    x, w = xs
    shape = _transpose_infer([TensorType(dtype_of(a.dtype), a.shape) for a in xs], attrs)[0].shape
    return _bwd_input_ref([x, w, np.empty(shape, x.dtype)], attrs)


def _transpose_vjp(b, node, grads, needs):
    (g,) = grads
    x, w = node.inputs
    attrs = {k: v for k, v in node.attrs.items() if k != "output_padding"}
    return [b.add1("conv2d", [g, w], attrs) if needs[0] else None,
            b.add1("conv2d_backward_weight", [g, x, w], attrs) if needs[1] else None]


register(OpDef("conv_transpose2d", "kernel", _transpose_infer, _transpose_ref, vjp=_transpose_vjp,
               lower={"cpu": lambda node, name: _backward_input_cpu(node, name, "gy, w, out, ph, pw"),
                      "cuda": lambda node, name: _backward_input_cuda(node, name, "gy, w, out")},
               flops=_bwd_flops, runtime_attrs=_padding))
