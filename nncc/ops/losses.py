"""Classification losses over [N, C] scores and int64 class labels [N]: cross_entropy and nll_loss.

``reduction`` is "mean", "sum" or "none"; cross_entropy also takes ``label_smoothing`` as PyTorch does.
The other losses (MSE, L1, BCE with logits) are compositions of elementwise ops and ``mean``.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..ir.types import TensorType, is_float
from .cuda_lowering import cuda_kernel
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
def _row_stats_cuda() -> str:
    return """    m = x[r, 0]
    for c in range(1, C):
        m = max(m, x[r, c])
    s = 0.0
    row = 0.0
    for c in range(C):
        s += math.exp(x[r, c] - m)
        row += x[r, c]
    lse = m + math.log(s)"""


def _loss_cuda(per_sample: str, needs_stats: bool):
    """Reduction "none": one thread per sample; "mean"/"sum": one thread sums every sample (N is small)."""
    def lower(node, name):
        red = node.attrs.get("reduction", "mean")
        stats = _row_stats_cuda().replace("\n", "\n    ") if needs_stats else ""
        if red == "none":
            body = f"    N, C = x.shape\n    r = i\n{_row_stats_cuda() if needs_stats else ''}\n    out[r] = {per_sample}"
            return cuda_kernel(name, "x, t, out", "x.shape[0]", body)
        body = (f"    N, C = x.shape\n    total = 0.0\n    for r in range(N):\n    {stats}\n"
                f"        total += {per_sample}\n    out[()] = total{' / N' if red == 'mean' else ''}")
        return cuda_kernel(name, "x, t, out", "1", body)

    return lower


def _ce_per_sample(node) -> str:
    eps = float(node.attrs.get("label_smoothing", 0.0))
    return f"{1 - eps!r} * (lse - x[r, t[r]]) + {eps!r} / C * (C * lse - row)"


def _bwd_cuda(target_expr_fn, needs_stats: bool):
    """One thread per (sample, class)."""
    def lower(node, name):
        scale = {"none": "g[r]", "mean": "g[()] / N", "sum": "g[()]"}[node.attrs.get("reduction", "mean")]
        body = f"""    N, C = x.shape
    r = i // C
    k = i % C
{_row_stats_cuda() if needs_stats else ''}
    out[r, k] = ({target_expr_fn(node)}) * ({scale})"""
        return cuda_kernel(name, "x, t, g, out", "x.size", body)

    return lower


def _ce_grad_expr(node) -> str:
    eps = float(node.attrs.get("label_smoothing", 0.0))
    return f"math.exp(x[r, k] - lse) - ({eps!r} / C + ({1 - eps!r} if k == t[r] else 0.0))"


register(OpDef("cross_entropy", "kernel", _infer, _ce_ref, vjp=_vjp("cross_entropy_backward"),
               lower={"cpu": _ce_cpu, "cuda": lambda node, name: _loss_cuda(_ce_per_sample(node), True)(node, name)}))
register(OpDef("cross_entropy_backward", "kernel", _bwd_infer, _ce_bwd_ref,
               lower={"cpu": _ce_bwd_cpu, "cuda": _bwd_cuda(_ce_grad_expr, True)}))
register(OpDef("nll_loss", "kernel", _infer, _nll_ref, vjp=_vjp("nll_loss_backward"),
               lower={"cpu": _nll_cpu, "cuda": _loss_cuda("-x[r, t[r]]", False)}))
register(OpDef("nll_loss_backward", "kernel", _bwd_infer, _nll_bwd_ref,
               lower={"cpu": _nll_bwd_cpu, "cuda": _bwd_cuda(lambda node: "-1.0 if k == t[r] else 0.0", False)}))
