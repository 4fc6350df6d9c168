"""conv2d {stride, padding, dilation, groups} and its two backward ops.

CPU lowering: the forward conv is direct (one input row at a time into a per-sample accumulator, see
``_forward_cpu``); the backward ops work per sample and group: im2col of one sample (cache resident) and
one small BLAS product each.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..ir.types import is_float
from .registry import OpDef, expect_rank, register


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


# conv2d_backward_input(gy, w, x): the gradient w.r.t. x (x only lends its shape).
def _bwd_input_infer(types, attrs):
    return [types[2]]


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
    return [types[2]]


def _bwd_weight_ref(xs, attrs):
    x, gy, w = xs
    stride, pad, dil, groups = _geometry(attrs)
    k, cg, kh, kw = w.shape
    kg = k // groups
    cols = _im2col_ref(x, kh, kw, stride, pad, dil)
    parts = [np.einsum("ncrspq,nkpq->kcrs", cols[:, g * cg:(g + 1) * cg], gy[:, g * kg:(g + 1) * kg])
             for g in range(groups)]
    return [np.concatenate(parts, axis=0).astype(x.dtype)]


# ---- CPU lowering -----------------------------------------------------------------------------------------
def _im2col_src(name, attrs):
    """``name(x, n, c0, R, S, P, Q, col)``: col[(c*R + r)*S + s, p*Q + q] = x[n, c0 + c, ...] (0 in the padding)."""
    return f"""def {name}(x, n, c0, R, S, P, Q, col):
    H, W = x.shape[2], x.shape[3]
    for crs in range(col.shape[0]):
        ci = c0 + crs // (R * S)
        r = (crs // S) % R
        s = crs % S
        row = col[crs]
        {_row_fill_src(attrs, 8)}"""


def _row_fill_src(attrs, indent: int) -> str:
    """Source that fills ``row[P*Q]`` with input channel ``ci`` of sample ``n`` shifted by tap (r, s).

    Valid output columns [q_lo, q_hi) are computed once per tap, so the copy loop has no branches.
    """
    (sh, sw), (ph, pw), (dh, dw), _ = _geometry(attrs)
    src = f"""off = s * {dw} - {pw}
q_lo = min(Q, max(0, (-off + {sw - 1}) // {sw}))
q_hi = max(q_lo, min(Q, (W - 1 - off) // {sw} + 1))
for p in range(P):
    h = p * {sh} - {ph} + r * {dh}
    base = p * Q
    if h < 0 or h >= H:
        row[base:base + Q] = 0
        continue
    row[base:base + q_lo] = 0
    for q in range(q_lo, q_hi):
        row[base + q] = x[n, ci, h, q * {sw} + off]
    row[base + q_hi:base + Q] = 0"""
    return src.replace("\n", "\n" + " " * indent)


def _forward_cpu(node, name):
    """Per sample: out[n] viewed as [K, P*Q] accumulates w[k, c, r, s] * row for one input row at a time.

    The innermost loop runs over the P*Q contiguous output positions of an L1-resident accumulator, which
    LLVM vectorises; the row is rebuilt once per (c, r, s) and reused by all K/groups output channels.
    """
    groups = _geometry(node.attrs)[3]
    has_bias = len(node.inputs) == 3
    args = "x, w, b, out" if has_bias else "x, w, out"
    return f"""def {name}({args}):
    N, K, P, Q = out.shape
    Cg, R, S = w.shape[1], w.shape[2], w.shape[3]
    H, W = x.shape[2], x.shape[3]
    Kg = K // {groups}
    PQ = P * Q
    for n in prange(N):
        row = np.empty(PQ, x.dtype)
        acc = out[n].reshape((K, PQ))
        for k in range(K):
            acc[k, :] = {"b[k]" if has_bias else "0"}
        for g in range({groups}):
            for c in range(Cg):
                ci = g * Cg + c
                for r in range(R):
                    for s in range(S):
                        {_row_fill_src(node.attrs, 24)}
                        for k in range(g * Kg, (g + 1) * Kg):
                            wv = w[k, c, r, s]
                            for i in range(PQ):
                                acc[k, i] += wv * row[i]"""


def _sample_grad_src(groups: int) -> str:
    """``gyn``: the [K/groups, P*Q] slice of sample n's output gradient for group g (a view when groups == 1)."""
    if groups == 1:
        return "gyn = gy3[n]"
    return "gyn = np.ascontiguousarray(gy3[n, g * Kg:(g + 1) * Kg])"


def _backward_weight_cpu(node, name):
    """Per sample and group: gw[g] += gy[n, g] @ im2col(x[n]).T, with the sample's columns resident in cache."""
    groups = _geometry(node.attrs)[3]
    return _im2col_src(f"{name}_im2col", node.attrs) + f"""


def {name}(x, gy, w, out):
    N, K, P, Q = gy.shape
    Cg, R, S = w.shape[1], w.shape[2], w.shape[3]
    Kg = K // {groups}
    gy3 = gy.reshape((N, K, P * Q))
    col = np.empty((Cg * R * S, P * Q), x.dtype)
    part = np.empty((Kg, Cg * R * S), x.dtype)
    o2 = out.reshape((K, Cg * R * S))
    o2[...] = 0
    for g in range({groups}):
        for n in range(N):
            {name}_im2col(x, n, g * Cg, R, S, P, Q, col)
            {_sample_grad_src(groups)}
            np.dot(gyn, col.T, part)
            o2[g * Kg:(g + 1) * Kg] += part"""


def _backward_input_cpu(node, name):
    """Per sample and group: dcol = w[g].T @ gy[n, g], then col2im adds each column back to its input pixel."""
    (sh, sw), (ph, pw), (dh, dw), groups = _geometry(node.attrs)
    return f"""def {name}(gy, w, x, out):
    N, K, P, Q = gy.shape
    Cg, R, S = w.shape[1], w.shape[2], w.shape[3]
    H, W = out.shape[2], out.shape[3]
    Kg = K // {groups}
    gy3 = gy.reshape((N, K, P * Q))
    w2 = w.reshape((K, Cg * R * S))
    dcol = np.empty((Cg * R * S, P * Q), gy.dtype)
    out[...] = 0
    for g in range({groups}):
        wt = np.ascontiguousarray(w2[g * Kg:(g + 1) * Kg].T)
        for n in range(N):
            {_sample_grad_src(groups)}
            np.dot(wt, gyn, dcol)
            for crs in range(Cg * R * S):
                ci = g * Cg + crs // (R * S)
                r = (crs // S) % R
                s = crs % S
                off = s * {dw} - {pw}
                q_lo = min(Q, max(0, (-off + {sw - 1}) // {sw}))
                q_hi = max(q_lo, min(Q, (W - 1 - off) // {sw} + 1))
                for p in range(P):
                    h = p * {sh} - {ph} + r * {dh}
                    if h < 0 or h >= H:
                        continue
                    for q in range(q_lo, q_hi):
                        out[n, ci, h, q * {sw} + off] += dcol[crs, p * Q + q]"""


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


register(OpDef("conv2d", "kernel", _infer, _ref, vjp=_vjp, lower={"cpu": _forward_cpu}, flops=_flops))
register(OpDef("conv2d_backward_input", "kernel", _bwd_input_infer, _bwd_input_ref,
               lower={"cpu": _backward_input_cpu}, flops=_bwd_flops))
register(OpDef("conv2d_backward_weight", "kernel", _bwd_weight_infer, _bwd_weight_ref,
               lower={"cpu": _backward_weight_cpu}, flops=_bwd_flops))
