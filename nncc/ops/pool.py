"""max_pool2d and avg_pool2d {kernel, stride, padding, dilation, ceil_mode, count_include_pad} and backward ops.

The max-pool gradient goes to the first maximum of each window, as PyTorch's does.
"""
from __future__ import annotations

import math

import numpy as np

from ..codegen.cpu.fma_tile import vector_registers
from ..errors import ShapeError
from ..ir.types import is_float
from .cpu_chunks import chunked_kernel
from .cuda_lowering import cuda_kernel, unravel
from .registry import OpDef, expect_rank, register


def _pair(v):
    return list(v) if isinstance(v, (list, tuple)) else [v, v]


def _params(attrs):
    kernel = _pair(attrs["kernel"])
    stride = _pair(attrs.get("stride") or kernel)
    return kernel, stride, _pair(attrs.get("padding", 0)), _pair(attrs.get("dilation", 1)), bool(attrs.get("ceil_mode", False))


def pool_out_size(size, k, stride, pad, dil, ceil_mode):
    span = size + 2 * pad - dil * (k - 1) - 1
    out = (math.ceil(span / stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad:  # the last window must start inside the input
        out -= 1
    return out


def _infer(types, attrs):
    x = types[0]
    expect_rank(x, 4, "pooling input")
    if not is_float(x.dtype):
        raise ShapeError(f"needs a float input, got {x}")
    kernel, stride, pad, dil, ceil_mode = _params(attrs)
    if any(p * 2 > k for p, k in zip(pad, kernel)):
        raise ShapeError(f"padding {pad} must be at most half the kernel {kernel}")
    p = pool_out_size(x.shape[2], kernel[0], stride[0], pad[0], dil[0], ceil_mode)
    q = pool_out_size(x.shape[3], kernel[1], stride[1], pad[1], dil[1], ceil_mode)
    if p <= 0 or q <= 0:
        raise ShapeError(f"kernel {kernel} does not fit input {x}")
    return [x.with_shape((x.shape[0], x.shape[1], p, q))]


def _windows(x, attrs):
    """Yield (p, q, h indices, w indices) of each window, clipped to the input."""
    kernel, stride, pad, dil, ceil_mode = _params(attrs)
    h, w = x.shape[2:]
    ph = pool_out_size(h, kernel[0], stride[0], pad[0], dil[0], ceil_mode)
    pw = pool_out_size(w, kernel[1], stride[1], pad[1], dil[1], ceil_mode)
    for p in range(ph):
        for q in range(pw):
            hs = [p * stride[0] - pad[0] + r * dil[0] for r in range(kernel[0])]
            ws = [q * stride[1] - pad[1] + s * dil[1] for s in range(kernel[1])]
            yield p, q, hs, ws


def _avg_divisor(hs, ws, x, attrs):
    kernel, stride, pad, dil, _ = _params(attrs)
    if attrs.get("count_include_pad", True):  # window clipped to the padded input
        h, w = x.shape[2:]
        return sum(-pad[0] <= i < h + pad[0] for i in hs) * sum(-pad[1] <= j < w + pad[1] for j in ws)
    return sum(0 <= i < x.shape[2] for i in hs) * sum(0 <= j < x.shape[3] for j in ws)


def _inside(idx, size):
    return [i for i in idx if 0 <= i < size]


def _max_ref(xs, attrs):
    x = xs[0]
    out = np.empty(_infer_shape(x, attrs), x.dtype)
    for p, q, hs, ws in _windows(x, attrs):
        win = x[:, :, _inside(hs, x.shape[2])][:, :, :, _inside(ws, x.shape[3])]
        out[:, :, p, q] = win.max(axis=(2, 3))
    return [out]


def _max_bwd_ref(xs, attrs):
    x, gy = xs
    gx = np.zeros_like(x)
    n, c = x.shape[:2]
    for p, q, hs, ws in _windows(x, attrs):
        hi, wi = _inside(hs, x.shape[2]), _inside(ws, x.shape[3])
        win = x[:, :, hi][:, :, :, wi].reshape(n, c, -1)
        arg = win.argmax(axis=2)
        for a in range(n):
            for b in range(c):
                i, j = divmod(int(arg[a, b]), len(wi))
                gx[a, b, hi[i], wi[j]] += gy[a, b, p, q]
    return [np.where(x > 0, gx, 0).astype(x.dtype) if attrs.get("relu_mask") else gx]


def _avg_ref(xs, attrs):
    x = xs[0]
    out = np.empty(_infer_shape(x, attrs), x.dtype)
    for p, q, hs, ws in _windows(x, attrs):
        win = x[:, :, _inside(hs, x.shape[2])][:, :, :, _inside(ws, x.shape[3])]
        out[:, :, p, q] = win.sum(axis=(2, 3)) / _avg_divisor(hs, ws, x, attrs)
    return [out]


def _avg_bwd_ref(xs, attrs):
    gy, x = xs
    gx = np.zeros_like(x)
    for p, q, hs, ws in _windows(x, attrs):
        share = gy[:, :, p, q] / _avg_divisor(hs, ws, x, attrs)
        for i in _inside(hs, x.shape[2]):
            for j in _inside(ws, x.shape[3]):
                gx[:, :, i, j] += share
    return [gx]


def _infer_shape(x, attrs):
    kernel, stride, pad, dil, ceil_mode = _params(attrs)
    return (x.shape[0], x.shape[1],
            pool_out_size(x.shape[2], kernel[0], stride[0], pad[0], dil[0], ceil_mode),
            pool_out_size(x.shape[3], kernel[1], stride[1], pad[1], dil[1], ceil_mode))


# ---- CPU lowering: windows inside the input: chunks of whole samples on threads (cpu_chunks.py); otherwise one
# loop over (n, c) planes (parallel with parallel=True), windows clipped to the input
def _window_loops(attrs, body: str, per_window_init: str, per_window_end: str) -> str:
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), _ = _params(attrs)
    return f"""    N, C, H, W = x.shape
    P, Q = gy_or_out.shape[2], gy_or_out.shape[3]
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        for p in range(P):
            for q in range(Q):
{per_window_init}
                for r in range({kh}):
                    h = p * {sh} - {ph} + r * {dh}
                    if h < 0 or h >= H:
                        continue
                    for s in range({kw}):
                        w = q * {sw} - {pw} + s * {dw}
                        if 0 <= w < W:
{body}
{per_window_end}"""


def _max_cpu(node, name):
    kernel, stride, pad, dil, ceil_mode = _params(node.attrs)
    if _tiling(node.attrs):
        return _sample_chunks(name, "x, gy_or_out", _window_rows(
            kernel, "        out_n = gy_or_out[n].reshape(-1)",
            f"_max_row(x_n, at, W, out_n, row * Q, Q, {kernel[0]}, {kernel[1]}, {_width()})"))
    if not (any(pad) or ceil_mode):
        return _sample_chunks(name, "x, gy_or_out", _inside_windows(
            kernel, stride, dil, "            o = gy_or_out[n, c]", "                    o[p, q] = m"))
    return f"def {name}(x, gy_or_out):\n" + _window_loops(
        node.attrs, "                            m = max(m, x[n, c, h, w])",
        "                m = -np.inf", "                gy_or_out[n, c, p, q] = m")


def _max_bwd_cpu(node, name, epilogue: str = ""):
    """``epilogue``: the parameters of fused elementwise consumers, applied to each sample's gradient as soon as
    its planes are done. With ``relu_mask`` a window's gradient counts only where its maximum is positive."""
    kernel, stride, pad, dil, ceil_mode = _params(node.attrs)
    params = "x, gy_or_out, gx" + (f", {epilogue}" if epilogue else "")
    if any(pad) or ceil_mode:
        tail = f"\n    {name}_epilogue(0, gx.shape[0], {epilogue})" if epilogue else ""
        return _max_bwd_checked_cpu(node, name, params) + tail
    sample_done = f"\n        {name}_epilogue(n, n + 1, {epilogue})" if epilogue else ""
    if _tiling(node.attrs):
        body = _tiling_windows_bwd(node, "gx[n]")
    else:  # windows may overlap: their gradients add up
        body = _inside_windows(
            kernel, stride, dil, _plane_grad("gx[n, c]"),
            f"{_window_grad(node.attrs)}                    d[p * {stride[0]} + (tap // {kernel[1]}) * {dil[0]}, "
            f"q * {stride[1]} + (tap % {kernel[1]}) * {dil[1]}] += grad",
            ("    zero = gx.dtype.type(0)\n" if node.attrs.get("relu_mask") else "") + "    gx[lo:hi] = 0\n")
    return _sample_chunks(name, params, body + sample_done)


def _tiling(attrs) -> bool:
    """Whether the windows tile the input: no padding or ceil_mode, stride = kernel, no dilation."""
    kernel, stride, pad, dil, ceil_mode = _params(attrs)
    return not (any(pad) or ceil_mode) and tuple(stride) == tuple(kernel) and tuple(dil) == (1, 1)


def _tiling_windows_bwd(node, sample: str) -> str:
    """The loops of a max-pool backward over windows that tile the input, writing the gradient of sample n of
    the chunk's samples [lo, hi) into ``sample``: a row of windows at a time (_max_row_bwd), each window
    writing its gradient to its first maximum and zero to its other taps, so there is no zeroing pass and no
    read-modify-write; only the pixels past the last window row and column, if any, are zeroed."""
    kernel = _params(node.attrs)[0]
    mask = int(bool(node.attrs.get("relu_mask")))
    return _window_rows(kernel, f"""        g_n = gy_or_out[n].reshape(-1)
        d = {sample}
        if P * {kernel[0]} < H or Q * {kernel[1]} < W:
            d[:, P * {kernel[0]}:] = 0
            d[:, :, Q * {kernel[1]}:] = 0
        d_n = d.reshape(-1)""", f"_max_row_bwd(x_n, at, W, g_n, row * Q, d_n, Q, {kernel[0]}, {kernel[1]}, {mask}, "
                                f"{_width()})")


def _width() -> int:
    """Bytes of the vectors of _max_row and _max_row_bwd on this machine (codegen/cpu/window_rows.py)."""
    return vector_registers()[0]


def _window_rows(kernel, per_sample: str, per_row: str) -> str:
    """Loops over the rows of windows of the chunk's samples [lo, hi), for windows that tile the input:
    ``per_row`` (a call of codegen/cpu/window_rows.py) does row p of plane c, ``row`` = c * P + p, whose
    windows start at ``at`` in the sample's flattened planes (``x_n``)."""
    return f"""    N, C, H, W = x.shape
    P, Q = gy_or_out.shape[2], gy_or_out.shape[3]
    for n in range(lo, hi):  # whole samples per chunk: an epilogue may follow each
        x_n = x[n].reshape(-1)
{per_sample}
        for c in range(C):
            for p in range(P):
                row, at = c * P + p, (c * H + p * {kernel[0]}) * W
                {per_row}"""


def _plane_grad(plane: str) -> str:
    """Per plane (n, c): its gy ``g`` and the gradient plane ``d`` it writes (``plane``)."""
    return f"            g = gy_or_out[n, c]\n            d = {plane}"


def _window_grad(attrs) -> str:
    """Per window: the gradient ``grad`` its first maximum receives."""
    return f"                    grad = {_masked('g[p, q]', attrs)}\n"


def _max_bwd_sample(node, name: str):
    """``name(x, gy_or_out, gx, lo)``: sample lo's gradient into gx[0], for a weight gradient that reads it
    one sample at a time (its prologue: the gradient never goes to memory); windows that tile the input only."""
    if not _tiling(node.attrs):
        return None
    return f"def {name}(x, gy_or_out, gx, lo):\n    hi = lo + 1\n" + _tiling_windows_bwd(node, "gx[0]")


def _masked(grad: str, attrs, zero: str = "zero") -> str:
    """A window's gradient ``grad`` as its first maximum ``m`` receives it: zero where the window's ReLU mask
    (``relu_mask``, simplify.py) drops it, the window's maximum not positive."""
    return f"{grad} if m > {zero} else {zero}" if attrs.get("relu_mask") else grad


def _sample_chunks(name: str, params: str, body: str) -> str:
    """A chunked kernel (cpu_chunks.py) whose chunk runs ``body`` on its samples [lo, hi) of x."""
    return chunked_kernel(name, params, "x.shape[0]", body)


def _inside_windows(kernel, stride, dil, per_plane: str, per_window: str, per_chunk: str = "") -> str:
    """Loops over the windows of every (n, c) plane, whole samples per thread, when each window lies inside the
    input (no padding, no ceil_mode): no bounds checks, the first tap seeds the maximum ``m`` in the input's
    dtype, and ``tap`` numbers the first tap holding it. ~6x faster than the checked loops on LeNet's 2x2
    pools (max-pool backward 0.18 vs 1.2 ms at batch 64), whose float64 running maximum and per-tap bounds
    tests kept them slow. The loops cover the chunk's samples [lo, hi), after ``per_chunk``."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dil
    return f"""    N, C, H, W = x.shape
    P, Q = gy_or_out.shape[2], gy_or_out.shape[3]
{per_chunk}    for n in range(lo, hi):  # whole samples per chunk: an epilogue may follow each
        for c in range(C):
            plane = x[n, c]
{per_plane}
            for p in range(P):
                for q in range(Q):
                    m = plane[p * {sh}, q * {sw}]
                    tap = 0
                    for r in range({kh}):
                        row = plane[p * {sh} + r * {dh}]
                        for s in range({kw}):
                            v = row[q * {sw} + s * {dw}]
                            better = v > m  # selects, not branches: random maxima mispredict
                            m = v if better else m
                            tap = r * {kw} + s if better else tap
{per_window}"""


def _max_bwd_checked_cpu(node, name, params):
    return f"def {name}({params}):\n    gx[...] = 0\n" + _window_loops(
        node.attrs,
        "                            v = x[n, c, h, w]\n"
        "                            if v > m:\n"
        "                                m = v\n"
        "                                bh = h\n"
        "                                bw = w",
        "                m = -np.inf\n                bh = -1\n                bw = -1",
        "                if bh >= 0:\n"
        f"                    gx[n, c, bh, bw] += {_masked('gy_or_out[n, c, p, q]', node.attrs, '0')}")


def _divisor_src(attrs) -> str:
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), _ = _params(attrs)
    lo_h, hi_h, lo_w, hi_w = (-ph, "H + " + str(ph), -pw, "W + " + str(pw)) if attrs.get(
        "count_include_pad", True) else (0, "H", 0, "W")
    return f"""                cnt_h = 0
                for r in range({kh}):
                    if {lo_h} <= p * {sh} - {ph} + r * {dh} < {hi_h}:
                        cnt_h += 1
                cnt_w = 0
                for s in range({kw}):
                    if {lo_w} <= q * {sw} - {pw} + s * {dw} < {hi_w}:
                        cnt_w += 1
                d = cnt_h * cnt_w"""


def _avg_cpu(node, name):
    return f"def {name}(x, gy_or_out):\n" + _window_loops(
        node.attrs, "                            acc += x[n, c, h, w]",
        "                acc = 0.0\n" + _divisor_src(node.attrs), "                gy_or_out[n, c, p, q] = acc / d")


def _avg_bwd_cpu(node, name):
    return f"def {name}(gy_or_out, x, gx):\n    gx[...] = 0\n" + _window_loops(
        node.attrs, "                            gx[n, c, h, w] += share",
        _divisor_src(node.attrs) + "\n                share = gy_or_out[n, c, p, q] / d", "")


def _max_vjp(b, node, grads, needs):
    return [b.add1("max_pool2d_backward", [node.inputs[0], grads[0]], node.attrs)]


def _avg_vjp(b, node, grads, needs):
    return [b.add1("avg_pool2d_backward", [grads[0], node.inputs[0]], node.attrs)]


def _bwd_infer(index_of_x):
    return lambda types, attrs: [types[index_of_x]]


# ---- CUDA lowering: forward one thread per output; backward one thread per input pixel (gather, no atomics) ----
def _window_cuda(attrs, body: str, init: str) -> str:
    """Loops over the window of output (p, q), clipped to the input."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), _ = _params(attrs)
    return f"""{init}
    for r in range({kh}):
        h = p * {sh} - {ph} + r * {dh}
        if h >= 0 and h < H:
            for s in range({kw}):
                wc = q * {sw} - {pw} + s * {dw}
                if wc >= 0 and wc < W:
{body}"""


def _covering_windows_cuda(attrs, body: str) -> str:
    """Loops over the output windows (p, q) that contain input pixel (h0, w0); ``body`` is indented by 20."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), _ = _params(attrs)
    return f"""    for r in range({kh}):
        hp = h0 + {ph} - r * {dh}
        if hp >= 0 and hp % {sh} == 0 and hp // {sh} < P:
            p = hp // {sh}
            for s in range({kw}):
                wq = w0 + {pw} - s * {dw}
                if wq >= 0 and wq % {sw} == 0 and wq // {sw} < Q:
                    q = wq // {sw}
{body}"""


def _max_cuda(node, name):
    body = unravel(["n", "c", "p", "q"], "out") + "    H, W = x.shape[2], x.shape[3]\n" + _window_cuda(
        node.attrs, "                    m = max(m, x[n, c, h, wc])", "    m = -math.inf") + "\n    out[n, c, p, q] = m"
    return cuda_kernel(name, "x, out", "out.size", body)


def _max_bwd_cuda(node, name):
    """The gradient of window (p, q) goes to its first maximum; a pixel collects it from every window it wins."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), _ = _params(node.attrs)
    first_max = f"""                    m = -math.inf
                    bh = -1
                    bw = -1
                    for r2 in range({kh}):
                        h = p * {sh} - {ph} + r2 * {dh}
                        if h >= 0 and h < H:
                            for s2 in range({kw}):
                                wc = q * {sw} - {pw} + s2 * {dw}
                                if wc >= 0 and wc < W and x[n, c, h, wc] > m:
                                    m = x[n, c, h, wc]
                                    bh = h
                                    bw = wc
                    if bh == h0 and bw == w0:
                        acc += {_masked("gy[n, c, p, q]", node.attrs, "0.0")}"""
    body = unravel(["n", "c", "h0", "w0"], "gx") + """    H, W = x.shape[2], x.shape[3]
    P, Q = gy.shape[2], gy.shape[3]
    acc = 0.0
""" + _covering_windows_cuda(node.attrs, first_max) + "\n    gx[n, c, h0, w0] = acc"
    return cuda_kernel(name, "x, gy, gx", "gx.size", body)


def _divisor_cuda(attrs) -> str:
    return "\n".join(line[12:] if line.startswith("            ") else line
                     for line in _divisor_src(attrs).split("\n"))


def _avg_cuda(node, name):
    body = unravel(["n", "c", "p", "q"], "out") + "    H, W = x.shape[2], x.shape[3]\n" + _divisor_cuda(node.attrs) + \
        "\n" + _window_cuda(node.attrs, "                    acc += x[n, c, h, wc]", "    acc = 0.0") + \
        "\n    out[n, c, p, q] = acc / d"
    return cuda_kernel(name, "x, out", "out.size", body)


def _avg_bwd_cuda(node, name):
    """Each input pixel gathers gy / window size from every window that contains it."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), _ = _params(node.attrs)
    lo_h, hi_h, lo_w, hi_w = (-ph, f"H + {ph}", -pw, f"W + {pw}") if node.attrs.get(
        "count_include_pad", True) else (0, "H", 0, "W")
    window = f"""                    cnt_h = 0
                    for r2 in range({kh}):
                        if {lo_h} <= p * {sh} - {ph} + r2 * {dh} < {hi_h}:
                            cnt_h += 1
                    cnt_w = 0
                    for s2 in range({kw}):
                        if {lo_w} <= q * {sw} - {pw} + s2 * {dw} < {hi_w}:
                            cnt_w += 1
                    acc += gy[n, c, p, q] / (cnt_h * cnt_w)"""
    body = unravel(["n", "c", "h0", "w0"], "gx") + """    H, W = x.shape[2], x.shape[3]
    P, Q = gy.shape[2], gy.shape[3]
    acc = 0.0
""" + _covering_windows_cuda(node.attrs, window) + "\n    gx[n, c, h0, w0] = acc"
    return cuda_kernel(name, "gy, x, gx", "gx.size", body)


register(OpDef("max_pool2d", "kernel", _infer, _max_ref, vjp=_max_vjp, lower={"cpu": _max_cpu, "cuda": _max_cuda}))
register(OpDef("max_pool2d_backward", "kernel", _bwd_infer(0), _max_bwd_ref,
               lower={"cpu": _max_bwd_cpu, "cuda": _max_bwd_cuda}, epilogue=True, sample_prologue=_max_bwd_sample))
register(OpDef("avg_pool2d", "kernel", _infer, _avg_ref, vjp=_avg_vjp, lower={"cpu": _avg_cpu, "cuda": _avg_cuda}))
register(OpDef("avg_pool2d_backward", "kernel", _bwd_infer(1), _avg_bwd_ref,
               lower={"cpu": _avg_bwd_cpu, "cuda": _avg_bwd_cuda}))
