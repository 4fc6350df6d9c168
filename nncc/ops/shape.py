"""Shape ops: constant, reshape, transpose, concat, slice, broadcast and the runtime element count."""
from __future__ import annotations

from collections import Counter

import numpy as np

from ..errors import ShapeError
from ..ir.types import TensorType, broadcast_shapes, dtype_of
from .cuda_lowering import cuda_kernel, unravel
from .registry import OpDef, register
from .vjp_util import unbroadcast


def _constant_infer(types, attrs):
    value = attrs["value"]
    return [TensorType(dtype_of(value.dtype), value.shape)]


register(OpDef("constant", "kernel", _constant_infer, lambda xs, k: [np.array(k["value"])]))


# ---- reshape: a view of the same buffer ------------------------------------------------------------------
def _split_dims(shape):
    """(product of the int dims, multiset of symbolic dims)."""
    n = 1
    for d in shape:
        if isinstance(d, int):
            n *= d
    return n, Counter(d for d in shape if isinstance(d, str))


def _reshape_infer(types, attrs):
    (t,) = types
    target = list(attrs["shape"])
    n_in, sym_in = _split_dims(t.shape)
    if target.count(-1) > 1:
        raise ShapeError(f"reshape to {target}: at most one -1")
    known = [d for d in target if d != -1]
    n_out, sym_out = _split_dims(known)
    if -1 in target:
        if sym_out != sym_in or n_out == 0 or n_in % n_out:
            raise ShapeError(f"cannot reshape {t} to {target}")
        target[target.index(-1)] = n_in // n_out
    elif sym_out != sym_in or n_out != n_in:
        raise ShapeError(f"cannot reshape {t} to {target}: element counts differ")
    return [t.with_shape(target)]


def _reshape_vjp(b, node, grads, needs):
    return [b.add1("reshape", [grads[0]], {"shape": list(node.inputs[0].shape)})]


register(OpDef("reshape", "view", _reshape_infer, lambda xs, k: [xs[0].reshape(_concrete_target(xs[0], k))],
               vjp=_reshape_vjp, view=lambda arg, shape: f"{arg}.reshape({shape})"))


def _concrete_target(x, attrs):
    """Reference-side reshape target: symbolic dims become -1 (there is at most one unknown)."""
    target = [d if isinstance(d, int) else -1 for d in attrs["shape"]]
    if target.count(-1) > 1:
        raise ShapeError(f"reshape target {attrs['shape']} has several unknown dims")
    return target


# ---- transpose --------------------------------------------------------------------------------------------
def _transpose_infer(types, attrs):
    (t,) = types
    perm = list(attrs["perm"])
    if sorted(perm) != list(range(t.rank)):
        raise ShapeError(f"perm {perm} is not a permutation of the {t.rank} axes of {t}")
    return [t.with_shape([t.shape[p] for p in perm])]


def _transpose_vjp(b, node, grads, needs):
    inverse = list(np.argsort(node.attrs["perm"]))
    return [b.add1("transpose", [grads[0]], {"perm": [int(i) for i in inverse]})]


def _transpose_cpu(node, name):
    rank = node.inputs[0].type.rank
    perm = node.attrs["perm"]
    idx_out = ", ".join(f"i{a}" for a in range(rank))
    idx_in = ", ".join(f"i{perm.index(a)}" for a in range(rank))
    lines = [f"def {name}(x, out):"]
    for a in range(rank):
        loop = "prange" if a == 0 else "range"
        lines.append("    " * (a + 1) + f"for i{a} in {loop}(out.shape[{a}]):")
    lines.append("    " * (rank + 1) + f"out[{idx_out}] = x[{idx_in}]")
    return "\n".join(lines)


def _transpose_cuda(node, name):
    perm = node.attrs["perm"]
    names = [f"i{a}" for a in range(len(perm))]
    src = ", ".join(f"i{perm.index(a)}" for a in range(len(perm)))
    return cuda_kernel(name, "x, out", "out.size", unravel(names, "out") + f"    out[{', '.join(names)}] = x[{src}]")


register(OpDef("transpose", "kernel", _transpose_infer, lambda xs, k: [np.ascontiguousarray(xs[0].transpose(k["perm"]))],
               vjp=_transpose_vjp, lower={"cpu": _transpose_cpu, "cuda": _transpose_cuda}))


# ---- concat and slice -------------------------------------------------------------------------------------
def _norm_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise ShapeError(f"axis {axis} out of range for rank {rank}")
    return axis % rank


def _concat_infer(types, attrs):
    first = types[0]
    axis = _norm_axis(attrs["axis"], first.rank)
    total = 0
    for t in types:
        if t.dtype != first.dtype or t.rank != first.rank or any(
                t.shape[a] != first.shape[a] for a in range(t.rank) if a != axis):
            raise ShapeError(f"cannot concatenate {', '.join(map(str, types))} along axis {axis}")
        if not isinstance(t.shape[axis], int):
            raise ShapeError(f"cannot concatenate along the symbolic axis {axis}")
        total += t.shape[axis]
    shape = list(first.shape)
    shape[axis] = total
    return [first.with_shape(shape)]


def _concat_vjp(b, node, grads, needs):
    axis = _norm_axis(node.attrs["axis"], node.inputs[0].type.rank)
    out, start = [], 0
    for v, need in zip(node.inputs, needs):
        stop = start + v.shape[axis]
        out.append(b.add1("slice", [grads[0]], {"axis": axis, "start": start, "stop": stop}) if need else None)
        start = stop
    return out


def _concat_cpu(node, name):
    axis = _norm_axis(node.attrs["axis"], node.inputs[0].type.rank)
    n = len(node.inputs)
    args = ", ".join(f"x{i}" for i in range(n))
    pre = ":, " * axis
    lines = [f"def {name}({args}, out):", "    at = 0"]
    for i in range(n):
        lines.append(f"    out[{pre}at:at + x{i}.shape[{axis}]] = x{i}")
        lines.append(f"    at += x{i}.shape[{axis}]")
    return "\n".join(lines)


def _concat_cuda(node, name):
    rank = node.inputs[0].type.rank
    axis = _norm_axis(node.attrs["axis"], rank)
    names = [f"i{a}" for a in range(rank)]
    body = unravel(names, "out") + "    at = 0\n"
    for n in range(len(node.inputs)):
        idx = ", ".join(f"i{a} - at" if a == axis else f"i{a}" for a in range(rank))
        body += (f"    if i{axis} >= at and i{axis} < at + x{n}.shape[{axis}]:\n"
                 f"        out[{', '.join(names)}] = x{n}[{idx}]\n    at += x{n}.shape[{axis}]\n")
    args = ", ".join(f"x{n}" for n in range(len(node.inputs)))
    return cuda_kernel(name, f"{args}, out", "out.size", body.rstrip())


register(OpDef("concat", "kernel", _concat_infer, lambda xs, k: [np.concatenate(xs, axis=k["axis"])],
               vjp=_concat_vjp, lower={"cpu": _concat_cpu, "cuda": _concat_cuda}))


def _slice_infer(types, attrs):
    (t,) = types
    axis = _norm_axis(attrs["axis"], t.rank)
    start, stop = attrs["start"], attrs["stop"]
    if not isinstance(t.shape[axis], int) or not 0 <= start <= stop <= t.shape[axis]:
        raise ShapeError(f"slice [{start}:{stop}] out of range for axis {axis} of {t}")
    shape = list(t.shape)
    shape[axis] = stop - start
    return [t.with_shape(shape)]


def _slice_cpu(node, name):
    axis = _norm_axis(node.attrs["axis"], node.inputs[0].type.rank)
    pre = ":, " * axis
    return f"def {name}(x, out):\n    out[...] = x[{pre}{node.attrs['start']}:{node.attrs['stop']}]"


register(OpDef("slice", "kernel", _slice_infer,
               lambda xs, k: [np.ascontiguousarray(np.take(xs[0], range(k["start"], k["stop"]), axis=k["axis"]))],
               lower={"cpu": _slice_cpu, "cuda": lambda node, name: _slice_cuda(node, name)}))


def _slice_cuda(node, name):
    rank = node.inputs[0].type.rank
    axis = _norm_axis(node.attrs["axis"], rank)
    names = [f"i{a}" for a in range(rank)]
    idx = ", ".join(f"i{a} + {node.attrs['start']}" if a == axis else f"i{a}" for a in range(rank))
    return cuda_kernel(name, "x, out", "out.size", unravel(names, "out") + f"    out[{', '.join(names)}] = x[{idx}]")


# ---- broadcasting and runtime sizes ---------------------------------------------------------------------------
def _broadcast_like_infer(types, attrs):
    x, like = types
    if broadcast_shapes(x.shape, like.shape) != tuple(like.shape):
        raise ShapeError(f"cannot broadcast {x} to the shape of {like}")
    return [like.with_dtype(x.dtype)]


# broadcast_like(x, like): x broadcast to like's shape (like only lends its runtime shape).
def _broadcast_like_vjp(b, node, grads, needs):
    return [unbroadcast(b, grads[0], node.inputs[0]) if needs[0] else None, None]


register(OpDef("broadcast_like", "elementwise", _broadcast_like_infer,
               lambda xs, k: [np.ascontiguousarray(np.broadcast_to(xs[0], xs[1].shape))],
               vjp=_broadcast_like_vjp, scalar=lambda a, k, c: a[0]))


def _numel_infer(types, attrs):
    return [TensorType(attrs["dtype"], ())]


def _numel_cpu(node, name):
    axes = node.attrs["axes"]
    prod = " * ".join(f"x.shape[{a}]" for a in axes) or "1"
    return f"def {name}(x, out):\n    out[()] = {prod}"


# numel(x) {axes, dtype}: the runtime product of x's sizes along axes, e.g. the batch size for a mean.
register(OpDef("numel", "kernel", _numel_infer,
               lambda xs, k: [np.array(np.prod([xs[0].shape[a] for a in k["axes"]]),
                                       dtype=TensorType(k["dtype"], ()).np_dtype)],
               lower={"cpu": _numel_cpu, "cuda": lambda node, name: cuda_kernel(
                   name, "x, out", "1", _numel_cpu(node, "unused").split("\n", 1)[1])}))


# broadcast_to(x) {shape}: x broadcast numpy-style to a fixed shape (ONNX's Expand); a symbol in ``shape``
# must come from x itself.
def _broadcast_to_infer(types, attrs):
    (t,) = types
    shape = tuple(attrs["shape"])
    if broadcast_shapes(t.shape, shape) != shape:
        raise ShapeError(f"cannot broadcast {t} to {list(shape)}")
    return [t.with_shape(shape)]


def _broadcast_to_ref(xs, attrs):
    x = xs[0]
    lead = len(attrs["shape"]) - x.ndim
    shape = [x.shape[a - lead] if isinstance(d, str) else d for a, d in enumerate(attrs["shape"])]
    return [np.ascontiguousarray(np.broadcast_to(x, shape))]


register(OpDef("broadcast_to", "elementwise", _broadcast_to_infer, _broadcast_to_ref,
               vjp=lambda b, node, grads, needs: [unbroadcast(b, grads[0], node.inputs[0])],
               scalar=lambda a, k, c: a[0]))
