"""Reductions (sum, mean, max over axes) and the normalisations built on them (softmax, log_softmax)."""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..ir.types import is_float
from .cuda_lowering import block_kernel, block_logsumexp, block_reduce
from .registry import OpDef, register


def _axes(attrs, rank: int) -> list[int]:
    for a in attrs["axes"]:
        if not -rank <= a < rank:
            raise ShapeError(f"axis {a} out of range for rank {rank}")
    return sorted({a % rank for a in attrs["axes"]})


def _reduce_infer(types, attrs):
    (t,) = types
    axes = _axes(attrs, t.rank)
    if attrs.get("keepdims", False):
        shape = [1 if a in axes else d for a, d in enumerate(t.shape)]
    else:
        shape = [d for a, d in enumerate(t.shape) if a not in axes]
    return [t.with_shape(shape)]


def _keepdims_shape(x, axes):
    return [1 if a in axes else d for a, d in enumerate(x.shape)]


def _expand_grad(b, node, g):
    """The output grad reshaped to keepdims form and broadcast back to the input's shape."""
    x = node.inputs[0]
    axes = _axes(node.attrs, x.type.rank)
    if not node.attrs.get("keepdims", False):
        g = b.add1("reshape", [g], {"shape": _keepdims_shape(x, axes)})
    return b.add1("broadcast_like", [g, x])


def _sum_vjp(b, node, grads, needs):
    return [_expand_grad(b, node, grads[0])]


def _mean_vjp(b, node, grads, needs):
    x = node.inputs[0]
    count = b.add1("numel", [x], {"axes": _axes(node.attrs, x.type.rank), "dtype": x.dtype})
    return [b.add1("div", [_expand_grad(b, node, grads[0]), count])]


def _max_vjp(b, node, grads, needs):
    # every element equal to the maximum receives the gradient
    x = node.inputs[0]
    y = node.outputs[0]
    y_full = _expand_grad(b, node, y)
    mask = b.add1("cast", [b.add1("equal", [x, y_full])], {"dtype": x.dtype})
    return [b.add1("mul", [_expand_grad(b, node, grads[0]), mask])]


_INIT = {"sum": "0.0", "mean": "0.0", "max": "-np.inf", "prod": "1.0"}
_STEP = {"sum": "acc += {v}", "mean": "acc += {v}", "max": "acc = max(acc, {v})", "prod": "acc *= {v}"}


def _reduce_cpu(kind):
    def lower(node, name):
        x = node.inputs[0]
        rank = x.type.rank
        axes = _axes(node.attrs, rank)
        kept = [a for a in range(rank) if a not in axes]
        keep = node.attrs.get("keepdims", False)
        out_idx = [f"i{a}" if a in kept else "0" for a in range(rank)] if keep else [f"i{a}" for a in kept]
        lines = [f"def {name}(x, out):"]
        trailing = next((t for t in range(rank, 0, -1) if all(a in axes for a in range(rank - t, rank))), 0)
        if trailing > 1:  # reduced trailing axes are one contiguous run: one long loop that vectorises
            lines.append(f"    v = x.reshape(x.shape[:{rank - trailing}] + (-1,))")
            axes = [a for a in axes if a < rank - trailing] + [rank - trailing]
            rank -= trailing - 1
        else:
            lines.append("    v = x")
        depth = 1
        for n, a in enumerate(kept):
            lines.append("    " * depth + f"for i{a} in {'prange' if n == 0 else 'range'}(v.shape[{a}]):")
            depth += 1
        lines.append("    " * depth + f"acc = {_INIT[kind]}")
        for a in axes:
            lines.append("    " * depth + f"for i{a} in range(v.shape[{a}]):")
            depth += 1
        lines.append("    " * depth + _STEP[kind].format(v=f"v[{', '.join(f'i{a}' for a in range(rank))}]"))
        depth -= len(axes)
        result = "acc"
        if kind == "mean":
            result = "acc / (" + " * ".join(f"v.shape[{a}]" for a in axes) + ")"
        lines.append("    " * depth + f"out[{', '.join(out_idx) if out_idx else '()'}] = {result}")
        return "\n".join(lines)

    return lower


def _ref(fn):
    return lambda xs, k: [np.asarray(fn(xs[0], axis=tuple(k["axes"]), keepdims=k.get("keepdims", False)),
                                     dtype=xs[0].dtype)]


_COMBINE = {"sum": "{} + {}", "mean": "{} + {}", "max": "max({}, {})", "prod": "{} * {}"}


def _reduce_cuda(kind):
    """Split block reduction: block ``i`` takes output ``i // parts`` and the ``i % parts``-th slice of its
    reduced elements (BLOCK * CHUNK of them, the threads reading consecutive ones), combines them in shared
    memory and, when there are several parts, adds them atomically. So a large reduction (a bias gradient over
    N*H*W) keeps the GPU busy with one atomic per block. A product has one part (no atomic product exists)."""
    def lower(node, name):
        x = node.inputs[0]
        rank = x.type.rank
        axes = _axes(node.attrs, rank)
        kept = [a for a in range(rank) if a not in axes]
        keep = node.attrs.get("keepdims", False)
        out_idx = [f"i{a}" if a in kept else "0" for a in range(rank)] if keep else [f"i{a}" for a in kept]
        count = " * ".join(f"x.shape[{a}]" for a in axes) or "1"
        parts = "1" if kind == "prod" else f"(({count}) + BLOCK * CHUNK - 1) // (BLOCK * CHUNK)"
        body = f"    parts = {parts}\n    o = i // parts\n    rest = o\n"
        for a in reversed(kept):
            body += f"    i{a} = rest % x.shape[{a}]\n    rest //= x.shape[{a}]\n"
        body += (f"    acc = {_INIT[kind].replace('np.', 'math.')}\n"
                 f"    for flat in range(i % parts * BLOCK + tid, {count}, parts * BLOCK):\n        rest = flat\n")
        for a in reversed(axes):
            body += f"        i{a} = rest % x.shape[{a}]\n        rest //= x.shape[{a}]\n"
        body += "        " + _STEP[kind].format(v=f"x[{', '.join(f'i{a}' for a in range(rank))}]") + "\n"
        body += block_reduce("acc", _COMBINE[kind]) + "\n"
        if kind == "mean":
            body += f"    acc = acc / ({count})\n"
        target = out_idx[0] if len(out_idx) == 1 else f"({', '.join(out_idx)})" if out_idx else "0"
        view = "out" if out_idx else "out.reshape(1)"
        if kind == "prod":
            body += f"    if tid == 0:\n        {view}[{target}] = acc"
            return block_kernel(name, "x, out", "out.size", body)
        body += f"    if tid == 0:\n        cuda.atomic.{'max' if kind == 'max' else 'add'}({view}, {target}, acc)"
        fill = "out = -math.inf" if kind == "max" else "out = 0.0"
        return block_kernel(name, "x, out", f"out.size * ({parts})", body, fill=fill)

    return lower


def _max_ref(x, axis, keepdims):
    if x.size == 0 and x.dtype.kind == "f":  # -inf over no elements, as the kernels
        return np.max(x, axis=axis, keepdims=keepdims, initial=-np.inf)
    return np.max(x, axis=axis, keepdims=keepdims)


for _kind, _fn, _vjp in [("sum", np.sum, _sum_vjp), ("mean", np.mean, _mean_vjp), ("max", _max_ref, _max_vjp)]:
    register(OpDef(_kind, "kernel", _reduce_infer, _ref(_fn), vjp=_vjp,
                   lower={"cpu": _reduce_cpu(_kind), "cuda": _reduce_cuda(_kind)}, reassociate=True))


def _prod_vjp(b, node, grads, needs):  # g * y / x: exact for non-zero inputs
    x, y = node.inputs[0], node.outputs[0]
    return [b.add1("div", [b.add1("mul", [_expand_grad(b, node, grads[0]), _expand_grad(b, node, y)]), x])]


register(OpDef("prod", "kernel", _reduce_infer, _ref(np.prod), vjp=_prod_vjp,
               lower={"cpu": _reduce_cpu("prod"), "cuda": _reduce_cuda("prod")}))


# ---- softmax and log_softmax along one axis -------------------------------------------------------------------
def _softmax_infer(types, attrs):
    (t,) = types
    if not is_float(t.dtype):
        raise ShapeError(f"needs a float tensor, got {t}")
    if not -t.rank <= attrs["axis"] < t.rank:
        raise ShapeError(f"axis {attrs['axis']} out of range for {t}")
    return [t]


def _softmax_ref(log: bool):
    def ref(xs, k):
        x = xs[0]
        z = x - x.max(axis=k["axis"], keepdims=True)
        lse = np.log(np.exp(z).sum(axis=k["axis"], keepdims=True))
        return [(z - lse if log else np.exp(z - lse)).astype(x.dtype)]

    return ref


def _softmax_vjp(b, node, grads, needs):  # y * (g - sum(g * y))
    (g,), (y,) = grads, node.outputs
    s = b.add1("sum", [b.add1("mul", [g, y])], {"axes": [node.attrs["axis"]], "keepdims": True})
    return [b.add1("mul", [y, b.add1("sub", [g, s])])]


def _log_softmax_vjp(b, node, grads, needs):  # g - exp(y) * sum(g)
    (g,), (y,) = grads, node.outputs
    s = b.add1("sum", [g], {"axes": [node.attrs["axis"]], "keepdims": True})
    return [b.add1("sub", [g, b.add1("mul", [b.add1("exp", [y]), s])])]


def _softmax_cpu(log: bool):
    def lower(node, name):
        x = node.inputs[0]
        rank = x.type.rank
        axis = node.attrs["axis"] % rank
        outer = " * ".join(f"x.shape[{a}]" for a in range(axis)) or "1"
        inner = " * ".join(f"x.shape[{a}]" for a in range(axis + 1, rank)) or "1"
        write = "z - lse" if log else "np.exp(z - lse)"
        return f"""def {name}(x, out):
    outer = {outer}
    n = x.shape[{axis}]
    inner = {inner}
    x3 = x.reshape((outer, n, inner))
    o3 = out.reshape((outer, n, inner))
    for i in prange(outer):
        for j in range(inner):
            m = x3[i, 0, j]
            for k in range(1, n):
                m = max(m, x3[i, k, j])
            s = 0.0
            for k in range(n):
                s += np.exp(x3[i, k, j] - m)
            lse = np.log(s)
            for k in range(n):
                z = x3[i, k, j] - m
                o3[i, k, j] = {write}"""

    return lower


def _softmax_cuda(log: bool):
    """A block per (outer, inner) row along the axis: the maximum and the sum of exponentials are block
    reductions, the threads striding along the row."""
    def lower(node, name):
        rank = node.inputs[0].type.rank
        axis = node.attrs["axis"] % rank
        inner = " * ".join(f"x.shape[{a}]" for a in range(axis + 1, rank)) or "1"
        write = "x3[a, k, b] - lse" if log else "math.exp(x3[a, k, b] - lse)"
        body = f"""    n = x.shape[{axis}]
    inner = {inner}
    x3 = x.reshape((x.size // (n * inner), n, inner))
    o3 = out.reshape((x.size // (n * inner), n, inner))
    a = i // inner
    b = i % inner
{block_logsumexp("x3[a, k, b]", "n")}
    for k in range(tid, n, BLOCK):
        o3[a, k, b] = {write}"""
        return block_kernel(name, "x, out", f"x.size // x.shape[{axis}]", body)

    return lower


register(OpDef("softmax", "kernel", _softmax_infer, _softmax_ref(False), vjp=_softmax_vjp,
               lower={"cpu": _softmax_cpu(False), "cuda": _softmax_cuda(False)}))
register(OpDef("log_softmax", "kernel", _softmax_infer, _softmax_ref(True), vjp=_log_softmax_vjp,
               lower={"cpu": _softmax_cpu(True), "cuda": _softmax_cuda(True)}))
