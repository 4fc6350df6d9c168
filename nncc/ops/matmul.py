"""matmul {transpose_a, transpose_b}: 2-D matrix product, lowered to BLAS (numba's np.dot, via SciPy)."""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..ir.types import is_float
from .cuda_lowering import cuda_kernel
from .registry import OpDef, expect_rank, register


def _infer(types, attrs):
    a, b = types
    expect_rank(a, 2, "matmul operand a")
    expect_rank(b, 2, "matmul operand b")
    if a.dtype != b.dtype or not is_float(a.dtype):
        raise ShapeError(f"operands must share a float dtype, got {a} and {b}")
    m, k = a.shape[::-1] if attrs.get("transpose_a") else a.shape
    k2, n = b.shape[::-1] if attrs.get("transpose_b") else b.shape
    if k != k2:
        raise ShapeError(f"inner dimensions differ: {a}{'ᵀ' if attrs.get('transpose_a') else ''} "
                         f"@ {b}{'ᵀ' if attrs.get('transpose_b') else ''}")
    return [a.with_shape((m, n))]


def _ref(xs, attrs):
    a, b = xs
    a = a.T if attrs.get("transpose_a") else a
    b = b.T if attrs.get("transpose_b") else b
    return [(a @ b).astype(xs[0].dtype)]


def _vjp(b, node, grads, needs):
    (g,) = grads
    x, y = node.inputs
    ta, tb = bool(node.attrs.get("transpose_a")), bool(node.attrs.get("transpose_b"))

    def mm(p, q, tp, tq):
        return b.add1("matmul", [p, q], {"transpose_a": tp, "transpose_b": tq})

    if not ta:
        gx = mm(g, y, False, not tb)
    else:
        gx = mm(y, g, tb, True)
    if not tb:
        gy = mm(x, g, not ta, False)
    else:
        gy = mm(g, x, True, ta)
    return [gx if needs[0] else None, gy if needs[1] else None]


def _cpu(node, name):
    a = "a.T" if node.attrs.get("transpose_a") else "a"
    b = "b.T" if node.attrs.get("transpose_b") else "b"
    return f"def {name}(a, b, out):\n    np.dot({a}, {b}, out)"


def _flops(node, sizes):
    m, n = node.outputs[0].type.concrete(sizes)
    a = node.inputs[0].type
    k = a.concrete(sizes)[0 if node.attrs.get("transpose_a") else 1]
    return 2 * m * n * k


def _cuda(node, name):
    """One thread per output element (row r, column c) with a dot product over k."""
    a = "a[k, r]" if node.attrs.get("transpose_a") else "a[r, k]"
    b = "b[c, k]" if node.attrs.get("transpose_b") else "b[k, c]"
    inner = "a.shape[0]" if node.attrs.get("transpose_a") else "a.shape[1]"
    body = f"""    r = i // out.shape[1]
    c = i % out.shape[1]
    acc = 0.0
    for k in range({inner}):
        acc += {a} * {b}
    out[r, c] = acc"""
    return cuda_kernel(name, "a, b, out", "out.size", body)


register(OpDef("matmul", "kernel", _infer, _ref, vjp=_vjp, lower={"cpu": _cpu, "cuda": _cuda}, flops=_flops))


# ---- batch_matmul {transpose_a, transpose_b}: [..., M, K] @ [..., K, N] over equal leading (batch) dims ------
def _batch_infer(types, attrs):
    a, b = types
    if a.rank < 3 or a.rank != b.rank or a.shape[:-2] != b.shape[:-2]:
        raise ShapeError(f"batch_matmul needs operands of equal rank >= 3 with equal batch dims, got {a} and {b}")
    m, n = _infer([a.with_shape(a.shape[-2:]), b.with_shape(b.shape[-2:])], attrs)[0].shape
    return [a.with_shape(tuple(a.shape[:-2]) + (m, n))]


def _batch_ref(xs, attrs):
    a, b = xs
    a = a.swapaxes(-1, -2) if attrs.get("transpose_a") else a
    b = b.swapaxes(-1, -2) if attrs.get("transpose_b") else b
    return [np.ascontiguousarray(a @ b).astype(xs[0].dtype)]


def _batch_vjp(b, node, grads, needs):
    """matmul's rule, batch by batch (the batch dims are equal, so nothing is summed)."""
    (g,) = grads
    x, y = node.inputs
    ta, tb = bool(node.attrs.get("transpose_a")), bool(node.attrs.get("transpose_b"))

    def mm(p, q, tp, tq):
        return b.add1("batch_matmul", [p, q], {"transpose_a": tp, "transpose_b": tq})

    gx = (mm(g, y, False, not tb) if not ta else mm(y, g, tb, True)) if needs[0] else None
    gy = (mm(x, g, not ta, False) if not tb else mm(g, x, True, ta)) if needs[1] else None
    return [gx, gy]


def _batch_cpu(node, name):
    a = "a3[i].T" if node.attrs.get("transpose_a") else "a3[i]"
    b = "b3[i].T" if node.attrs.get("transpose_b") else "b3[i]"
    return f"""def {name}(a, b, out):
    a3 = a.reshape((-1, a.shape[-2], a.shape[-1]))
    b3 = b.reshape((-1, b.shape[-2], b.shape[-1]))
    o3 = out.reshape((-1, out.shape[-2], out.shape[-1]))
    for i in range(o3.shape[0]):
        np.dot({a}, {b}, o3[i])"""


def _batch_cuda(node, name):
    """One thread per output element: batch t, row r, column c."""
    a = "a3[t, k, r]" if node.attrs.get("transpose_a") else "a3[t, r, k]"
    b = "b3[t, c, k]" if node.attrs.get("transpose_b") else "b3[t, k, c]"
    inner = "a.shape[-2]" if node.attrs.get("transpose_a") else "a.shape[-1]"
    body = f"""    M, N = out.shape[-2], out.shape[-1]
    a3 = a.reshape((a.size // (a.shape[-2] * a.shape[-1]), a.shape[-2], a.shape[-1]))
    b3 = b.reshape((b.size // (b.shape[-2] * b.shape[-1]), b.shape[-2], b.shape[-1]))
    t = i // (M * N)
    r = (i // N) % M
    c = i % N
    acc = 0.0
    for k in range({inner}):
        acc += {a} * {b}
    out.reshape(out.size)[i] = acc"""
    return cuda_kernel(name, "a, b, out", "out.size", body)


def _batch_flops(node, sizes):
    out = node.outputs[0].type.concrete(sizes)
    a = node.inputs[0].type.concrete(sizes)
    return 2 * int(np.prod(out)) * a[-2 if node.attrs.get("transpose_a") else -1]


register(OpDef("batch_matmul", "kernel", _batch_infer, _batch_ref, vjp=_batch_vjp,
               lower={"cpu": _batch_cpu, "cuda": _batch_cuda}, flops=_batch_flops))
