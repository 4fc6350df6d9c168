"""Classification losses over [N, C] scores and int64 class labels [N]: cross_entropy and nll_loss.

``reduction`` is "mean", "sum" or "none"; cross_entropy also takes ``label_smoothing`` as PyTorch does.
The other losses (MSE, L1, BCE with logits) are compositions of elementwise ops and ``mean``.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..ir.types import TensorType, is_float
from .cuda_lowering import block_kernel, block_logsumexp, block_reduce, cuda_kernel
from .registry import OpDef, expect_rank, register

REDUCTIONS = ("mean", "sum", "none")


def _infer(types, attrs):
    x, t = types[0], types[1]
    expect_rank(x, 2, "loss input")
    expect_rank(t, 1, "loss target")
    if not is_float(x.dtype):
        raise ShapeError(f"scores must be float, got {x}")
    if t.dtype != "i64":
        raise ShapeError(f"target must hold int64 class indices, got {t}")
    if t.shape[0] != x.shape[0]:
        raise ShapeError(f"target {t} and scores {x} disagree on the batch size")
    if attrs.get("reduction", "mean") not in REDUCTIONS:
        raise ShapeError(f"reduction must be one of {REDUCTIONS}, got {attrs['reduction']!r}")
    shape = (x.shape[0],) if attrs.get("reduction", "mean") == "none" else ()
    return [TensorType(x.dtype, shape)]


def _check_labels(t, c):
    if t.size and (t.min() < 0 or t.max() >= c):
        bad = t[(t < 0) | (t >= c)][0]
        raise ShapeError(f"class label {bad} out of range [0, {c})")


def _reduce(per_sample, attrs, dtype):
    red = attrs.get("reduction", "mean")
    out = per_sample if red == "none" else (per_sample.mean() if red == "mean" else per_sample.sum())
    return np.asarray(out, dtype=dtype)


def _log_softmax(x):
    z = x - x.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _ce_target_dist(t, c, eps, dtype):
    dist = np.full((t.shape[0], c), eps / c, dtype)
    dist[np.arange(t.shape[0]), t] += 1 - eps
    return dist


def _ce_ref(xs, attrs):
    x, t = xs
    _check_labels(t, x.shape[1])
    eps = attrs.get("label_smoothing", 0.0)
    per = -(_ce_target_dist(t, x.shape[1], eps, x.dtype) * _log_softmax(x)).sum(axis=1)
    return [_reduce(per, attrs, x.dtype)]


def _grad_scale(g, attrs, n):
    red = attrs.get("reduction", "mean")
    return g[:, None] if red == "none" else (g / n if red == "mean" else g)


def _ce_bwd_ref(xs, attrs):
    x, t, g = xs
    eps = attrs.get("label_smoothing", 0.0)
    p = np.exp(_log_softmax(x))
    return [((p - _ce_target_dist(t, x.shape[1], eps, x.dtype)) * _grad_scale(g, attrs, x.shape[0])).astype(x.dtype)]


def _nll_ref(xs, attrs):
    x, t = xs
    _check_labels(t, x.shape[1])
    return [_reduce(-x[np.arange(t.shape[0]), t], attrs, x.dtype)]


def _nll_bwd_ref(xs, attrs):
    x, t, g = xs
    out = np.zeros_like(x)
    out[np.arange(t.shape[0]), t] = -1
    return [(out * _grad_scale(g, attrs, x.shape[0])).astype(x.dtype)]


def _vjp(backward_op):
    def vjp(b, node, grads, needs):
        x, t = node.inputs
        return [b.add1(backward_op, [x, t, grads[0]], node.attrs), None]

    return vjp


def _bwd_infer(types, attrs):
    return [types[0]]


# ---- CPU lowering -----------------------------------------------------------------------------------------
# a serial pre-pass: a raise inside the prange loop would stop numba from parallelising it
_LABEL_CHECK = """    for i in range(N):
        if t[i] < 0 or t[i] >= C:
            raise ValueError("loss: a class label is out of range")"""


def _finish(attrs) -> str:
    red = attrs.get("reduction", "mean")
    if red == "none":
        return ""
    return f"    out[()] = total{' / N' if red == 'mean' else ''}"


def _per_sample(attrs, expr: str) -> str:
    if attrs.get("reduction", "mean") == "none":
        return f"        out[i] = {expr}"
    return f"        total += {expr}"


def _ce_cpu(node, name):
    eps = float(node.attrs.get("label_smoothing", 0.0))
    return f"""def {name}(x, t, out):
    N, C = x.shape
{_LABEL_CHECK}
    total = 0.0
    for i in prange(N):
        m = x[i, 0]
        for c in range(1, C):
            m = max(m, x[i, c])
        s = 0.0
        row = 0.0
        for c in range(C):
            s += np.exp(x[i, c] - m)
            row += x[i, c]
        lse = m + np.log(s)
{_per_sample(node.attrs, f"{1 - eps!r} * (lse - x[i, t[i]]) + {eps / 1.0!r} / C * (C * lse - row)")}
{_finish(node.attrs)}"""


def _scale_src(attrs) -> str:
    """Per-sample gradient scale; 0-d reads are hoisted by the caller (numba's parfors cannot index 0-d arrays)."""
    red = attrs.get("reduction", "mean")
    return {"none": "g[i]", "mean": "g0 / N", "sum": "g0"}[red]


def _hoist_g(attrs) -> str:
    return "" if attrs.get("reduction", "mean") == "none" else "\n    g0 = g[()]"


def _ce_bwd_cpu(node, name):
    eps = float(node.attrs.get("label_smoothing", 0.0))
    return f"""def {name}(x, t, g, out):
    N, C = x.shape{_hoist_g(node.attrs)}
    for i in prange(N):
        scale = {_scale_src(node.attrs)}
        m = x[i, 0]
        for c in range(1, C):
            m = max(m, x[i, c])
        s = 0.0
        for c in range(C):
            s += np.exp(x[i, c] - m)
        for c in range(C):
            target = {eps!r} / C + ({1 - eps!r} if c == t[i] else 0.0)
            out[i, c] = (np.exp(x[i, c] - m) / s - target) * scale"""


def _nll_cpu(node, name):
    return f"""def {name}(x, t, out):
    N, C = x.shape
{_LABEL_CHECK}
    total = 0.0
    for i in prange(N):
{_per_sample(node.attrs, "-x[i, t[i]]")}
{_finish(node.attrs)}"""


def _nll_bwd_cpu(node, name):
    return f"""def {name}(x, t, g, out):
    N, C = x.shape{_hoist_g(node.attrs)}
    for i in prange(N):
        scale = {_scale_src(node.attrs)}
        for c in range(C):
            out[i, c] = -scale if c == t[i] else 0.0"""


# ---- CUDA lowering: labels are range-checked on the host before launch -----------------------------------------
def _store_cuda(attrs, value: str, indent: str = "    ") -> str:
    """Thread 0 of a block stores row ``r``'s loss, or adds it (or its share of the mean) to the total."""
    red = attrs.get("reduction", "mean")
    store = f"out[r] = {value}" if red == "none" else \
        f"cuda.atomic.add(out.reshape(1), 0, {f'({value}) / N' if red == 'mean' else value})"
    return f"{indent}if tid == 0:\n{indent}    {store}"


def _fill(attrs) -> str:
    return "" if attrs.get("reduction", "mean") == "none" else "out = 0.0"


def _ce_cuda(node, name):
    """A block per sample: the row's maximum, log-sum-exp and sum are block reductions over the classes."""
    eps = float(node.attrs.get("label_smoothing", 0.0))
    body = f"""    N, C = x.shape
    r = i
{block_logsumexp("x[r, k]", "C", row_sum=True)}
{_store_cuda(node.attrs, f"{1 - eps!r} * (lse - x[r, t[r]]) + {eps!r} / C * (C * lse - row)")}"""
    return block_kernel(name, "x, t, out", "x.shape[0]", body, fill=_fill(node.attrs))


def _nll_cuda(node, name):
    """A block per BLOCK samples, one a thread; their sum is a block reduction unless every loss is kept."""
    body = """    N = x.shape[0]
    r = i * BLOCK + tid
    loss = -x[r, t[r]] if r < N else 0.0"""
    if node.attrs.get("reduction", "mean") == "none":
        body += "\n    if r < N:\n        out[r] = loss"
    else:
        body += "\n" + block_reduce("loss", "{} + {}") + "\n" + _store_cuda(node.attrs, "loss")
    return block_kernel(name, "x, t, out", "(x.shape[0] + BLOCK - 1) // BLOCK", body, fill=_fill(node.attrs))


def _scale_cuda(attrs) -> str:
    return {"none": "g[r]", "mean": "g[()] / N", "sum": "g[()]"}[attrs.get("reduction", "mean")]


def _ce_bwd_cuda(node, name):
    """A block per sample: the row's log-sum-exp once (block reductions), then its threads write the classes."""
    eps = float(node.attrs.get("label_smoothing", 0.0))
    body = f"""    N, C = x.shape
    r = i
{block_logsumexp("x[r, k]", "C")}
    for k in range(tid, C, BLOCK):
        target = {eps!r} / C + ({1 - eps!r} if k == t[r] else 0.0)
        out[r, k] = (math.exp(x[r, k] - lse) - target) * ({_scale_cuda(node.attrs)})"""
    return block_kernel(name, "x, t, g, out", "x.shape[0]", body)


def _nll_bwd_cuda(node, name):
    """One thread per (sample, class)."""
    body = f"""    N, C = x.shape
    r = i // C
    k = i % C
    out[r, k] = (-1.0 if k == t[r] else 0.0) * ({_scale_cuda(node.attrs)})"""
    return cuda_kernel(name, "x, t, g, out", "x.size", body)


register(OpDef("cross_entropy", "kernel", _infer, _ce_ref, vjp=_vjp("cross_entropy_backward"),
               lower={"cpu": _ce_cpu, "cuda": _ce_cuda}))
register(OpDef("cross_entropy_backward", "kernel", _bwd_infer, _ce_bwd_ref,
               lower={"cpu": _ce_bwd_cpu, "cuda": _ce_bwd_cuda}))
register(OpDef("nll_loss", "kernel", _infer, _nll_ref, vjp=_vjp("nll_loss_backward"),
               lower={"cpu": _nll_cpu, "cuda": _nll_cuda}))
register(OpDef("nll_loss_backward", "kernel", _bwd_infer, _nll_bwd_ref,
               lower={"cpu": _nll_bwd_cpu, "cuda": _nll_bwd_cuda}))
