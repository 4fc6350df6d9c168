"""matmul {transpose_a, transpose_b}: 2-D matrix product, lowered to BLAS (``_gemm``: numpy's BLAS, codegen/cpu/blas.py)."""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..ir.types import is_float
from .cpu_chunks import chunked_kernel
from .cuda_lowering import tiled_matmul
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


#: multiply-adds from which a product's rows are split between numba's threads (about 5 us of one core's BLAS)
THREADED_PRODUCT = 1 << 18


def _cpu(node, name, epilogue: str = "", bias_grad: bool = False):
    """A chunked kernel (cpu_chunks.py) whose chunks compute rows [lo, hi) of the product, with BLAS on one
    thread each, when the product has THREADED_PRODUCT multiply-adds or more (LeNet's fully connected layers
    from batch 64 or so; their weight gradients, whose rows are the weights', too); else one chunk on the
    calling thread. ``epilogue``: the parameters of fused elementwise consumers, applied to the chunk's rows.
    ``bias_grad`` (a weight gradient a.T @ b, a the output gradient): also the bias gradient ``gb``, a's sum over
    its rows, whose entries [lo, hi) are a chunk's columns of a."""
    ta, tb = node.attrs.get("transpose_a"), node.attrs.get("transpose_b")
    a = "a[:, lo:hi].T" if ta else "a[lo:hi]"
    b = "b.T" if tb else "b"
    params = "a, b, out" + (", gb" if bias_grad else "") + (f", {epilogue}" if epilogue else "")
    body = f"    _gemm({a}, {b}, out[lo:hi], 0.0)" + (f"\n    {name}_epilogue(lo, hi, {epilogue})" if epilogue else "")
    if bias_grad:  # row by row of a, as it lies in memory; slices, so that the loops count from 0
        body += """
    sums = _view(gb, lo, (hi - lo,))
    for k in range(hi - lo):
        sums[k] = 0
    for n in range(a.shape[0]):
        row = a[n, lo:hi]
        for k in range(hi - lo):
            sums[k] += row[k]"""
    depth = "a.shape[0]" if ta else "a.shape[1]"
    return chunked_kernel(name, params, "out.shape[0]", body, worth_threads=f"out.size * {depth} >= {THREADED_PRODUCT}")


def _bias_input(node):
    """The weight gradient a.T @ b computes its bias gradient, the sum of a over its rows, alongside."""
    return 0 if node.attrs.get("transpose_a") else None


def _flops(node, sizes):
    m, n = node.outputs[0].type.concrete(sizes)
    a = node.inputs[0].type
    k = a.concrete(sizes)[0 if node.attrs.get("transpose_a") else 1]
    return 2 * m * n * k


def _cuda(node, name):
    """The tiled product of ``cuda_lowering.tiled_matmul`` on a stack of one matrix."""
    views = "".join(f"    {v}3 = {v}.reshape((1, {v}.shape[0], {v}.shape[1]))\n" for v in ("a", "b", "out"))
    return tiled_matmul(name, views, 2, node.outputs[0].dtype, bool(node.attrs.get("transpose_a")),
                        bool(node.attrs.get("transpose_b")))


register(OpDef("matmul", "kernel", _infer, _ref, vjp=_vjp, lower={"cpu": _cpu, "cuda": _cuda}, flops=_flops,
               epilogue=True, bias_grad=_bias_input))


# ---- batch_matmul {transpose_a, transpose_b}: [..., M, K] @ [..., K, N] over equal leading (batch) dims, or with
# one operand a plain matrix shared by every batch ---------------------------------------------------------------
def _batch_infer(types, attrs):
    a, b = types
    batched = a if a.rank > 2 else b
    if batched.rank < 3 or min(a.rank, b.rank) < 2 or (a.rank > 2 and b.rank > 2 and a.shape[:-2] != b.shape[:-2]):
        raise ShapeError(f"batch_matmul needs operands with equal batch dims (or one a matrix), got {a} and {b}")
    m, n = _infer([a.with_shape(a.shape[-2:]), b.with_shape(b.shape[-2:])], attrs)[0].shape
    return [a.with_shape(tuple(batched.shape[:-2]) + (m, n))]


def _batch_ref(xs, attrs):
    a, b = xs
    a = a.swapaxes(-1, -2) if attrs.get("transpose_a") else a
    b = b.swapaxes(-1, -2) if attrs.get("transpose_b") else b
    return [np.ascontiguousarray(a @ b).astype(xs[0].dtype)]


def _batch_vjp(b, node, grads, needs):
    """matmul's rule, batch by batch; a shared matrix's gradient sums over the batches."""
    (g,) = grads
    x, y = node.inputs
    ta, tb = bool(node.attrs.get("transpose_a")), bool(node.attrs.get("transpose_b"))

    def mm(p, q, tp, tq):
        return b.add1("batch_matmul", [p, q], {"transpose_a": tp, "transpose_b": tq})

    def unbatch(grad, like):
        lead = grad.type.rank - like.type.rank
        return b.add1("sum", [grad], {"axes": list(range(lead)), "keepdims": False}) if lead else grad

    gx = unbatch(mm(g, y, False, not tb) if not ta else mm(y, g, tb, True), x) if needs[0] else None
    gy = unbatch(mm(x, g, not ta, False) if not tb else mm(g, x, True, ta), y) if needs[1] else None
    return [gx, gy]


def _mats(node) -> str:
    """Source viewing a, b and out as stacks of matrices (a shared matrix is a stack of one)."""
    lines = []
    for var, v in zip(("a", "b", "out"), node.inputs + node.outputs):
        m, n = v.type.rank - 2, v.type.rank - 1
        lines.append(f"    {var}3 = {var}.reshape(({var}.size // max({var}.shape[{m}] * {var}.shape[{n}], 1), "
                     f"{var}.shape[{m}], {var}.shape[{n}]))")
    return "\n".join(lines) + "\n"


def _batch_cpu(node, name):
    a = "a3[i % a3.shape[0]].T" if node.attrs.get("transpose_a") else "a3[i % a3.shape[0]]"
    b = "b3[i % b3.shape[0]].T" if node.attrs.get("transpose_b") else "b3[i % b3.shape[0]]"
    return f"""def {name}(a, b, out):
{_mats(node)}    for i in range(out3.shape[0]):
        _gemm({a}, {b}, out3[i], 0.0)"""


def _batch_cuda(node, name):
    """The tiled product of ``cuda_lowering.tiled_matmul``, one output tile of one batch per unit of work."""
    return tiled_matmul(name, _mats(node), node.outputs[0].type.rank, node.outputs[0].dtype,
                        bool(node.attrs.get("transpose_a")), bool(node.attrs.get("transpose_b")))


def _batch_flops(node, sizes):
    out = node.outputs[0].type.concrete(sizes)
    a = node.inputs[0].type.shape
    return 2 * int(np.prod(out)) * a[-2 if node.attrs.get("transpose_a") else -1]


register(OpDef("batch_matmul", "kernel", _batch_infer, _batch_ref, vjp=_batch_vjp,
               lower={"cpu": _batch_cpu, "cuda": _batch_cuda}, flops=_batch_flops))
