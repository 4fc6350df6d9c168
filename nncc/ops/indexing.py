"""Indexing ops: gather, strided slices, padding and arg-reductions, with the scatter ops their VJPs need.

``strided_slice`` and ``pad`` are both index maps: each output element reads the input at a source index
computed per axis (``start + i * step`` for a slice; ``i - before`` folded back by the padding mode for a pad).
Their backward ops run the same map in reverse, adding each output gradient into its source element.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..ir.types import TensorType
from .cuda_lowering import cuda_kernel, unravel
from .registry import OpDef, register


def _norm_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise ShapeError(f"axis {axis} out of range for rank {rank}")
    return axis % rank


def _prod_src(array: str, axes) -> str:
    return " * ".join(f"{array}.shape[{a}]" for a in axes) or "1"


def _loops(rank: int, shape_of: str, body: list[str], per_axis: list[str], parallel: bool) -> list[str]:
    """Nested loops ``i0, i1, ...`` over ``shape_of``; ``per_axis[a]`` runs inside loop ``a``; then ``body``."""
    lines = []
    for a in range(rank):
        loop = "prange" if a == 0 and parallel else "range"
        lines.append("    " * (a + 1) + f"for i{a} in {loop}({shape_of}.shape[{a}]):")
        if per_axis[a]:
            lines.append("    " * (a + 2) + per_axis[a])
    return lines + ["    " * (rank + 1) + line for line in body]


# ---- gather(data, indices) {axis}: ONNX Gather / numpy take ---------------------------------------------------
def _gather_infer(types, attrs):
    x, idx = types
    if idx.dtype not in ("i64", "i32"):
        raise ShapeError(f"indices must be int64 or int32, got {idx}")
    axis = _norm_axis(attrs["axis"], x.rank)
    return [x.with_shape(tuple(x.shape[:axis]) + tuple(idx.shape) + tuple(x.shape[axis + 1:]))]


def _gather_ref(xs, attrs):
    x, idx = xs
    axis = _norm_axis(attrs["axis"], x.ndim)
    if idx.size and (idx.min() < -x.shape[axis] or idx.max() >= x.shape[axis]):
        raise ShapeError(f"gather: an index is out of range [-{x.shape[axis]}, {x.shape[axis]})")
    return [np.ascontiguousarray(np.take(x, idx, axis=axis))]


def _gather_sizes(axis: int, rank: int, data: str) -> str:
    return (f"    A = {data}.shape[{axis}]\n    outer = {_prod_src(data, range(axis))}\n"
            f"    inner = {_prod_src(data, range(axis + 1, rank))}\n    flat = idx.reshape((idx.size,))\n")


def _gather_cpu(node, name):
    rank = node.inputs[0].type.rank
    axis = _norm_axis(node.attrs["axis"], rank)
    return f"""def {name}(x, idx, out):
{_gather_sizes(axis, rank, "x")}    for j in range(flat.size):
        if flat[j] < -A or flat[j] >= A:
            raise IndexError("gather: an index is out of range")
    x3 = x.reshape((outer, A, inner))
    o3 = out.reshape((outer, flat.size, inner))
    for o in prange(outer):
        for j in range(flat.size):
            k = flat[j] + A if flat[j] < 0 else flat[j]
            for t in range(inner):
                o3[o, j, t] = x3[o, k, t]"""


def _gather_cuda(node, name):
    rank = node.inputs[0].type.rank
    axis = _norm_axis(node.attrs["axis"], rank)
    body = _gather_sizes(axis, rank, "x") + """    t = i % inner
    j = (i // inner) % flat.size
    o = i // (inner * flat.size)
    k = flat[j] + A if flat[j] < 0 else flat[j]
    out.reshape((out.size,))[i] = x.reshape((outer, A, inner))[o, k, t]"""
    return cuda_kernel(name, "x, idx, out", "out.size", body)


# gather_backward(g, indices, data) {axis}: the gradient w.r.t. data (data lends its shape); repeated indices add.
def _gather_bwd_infer(types, attrs):
    g, idx, x = types
    if _gather_infer([x, idx], attrs)[0].shape != g.shape:
        raise ShapeError(f"output gradient {g} does not match gather({x}, {idx})")
    return [x.with_dtype(g.dtype)]


def _gather_bwd_ref(xs, attrs):
    g, idx, x = xs
    axis = _norm_axis(attrs["axis"], x.ndim)
    out = np.zeros(x.shape, g.dtype)
    moved = np.moveaxis(out, axis, 0)  # a view: np.add.at on it writes into out
    flat = idx.reshape(-1) % x.shape[axis]
    gm = np.moveaxis(g.reshape(x.shape[:axis] + (flat.size,) + x.shape[axis + 1:]), axis, 0)
    np.add.at(moved, flat, gm)
    return [out]


def _gather_bwd_cpu(node, name):
    rank = node.inputs[2].type.rank
    axis = _norm_axis(node.attrs["axis"], rank)
    return f"""def {name}(g, idx, x, out):
{_gather_sizes(axis, rank, "out")}    out[...] = 0
    o3 = out.reshape((outer, A, inner))
    g3 = g.reshape((outer, flat.size, inner))
    for o in prange(outer):
        for j in range(flat.size):
            k = flat[j] + A if flat[j] < 0 else flat[j]
            for t in range(inner):
                o3[o, k, t] += g3[o, j, t]"""


def _gather_bwd_cuda(node, name):
    rank = node.inputs[2].type.rank
    axis = _norm_axis(node.attrs["axis"], rank)
    body = _gather_sizes(axis, rank, "out") + """    t = i % inner
    j = (i // inner) % flat.size
    o = i // (inner * flat.size)
    k = flat[j] + A if flat[j] < 0 else flat[j]
    cuda.atomic.add(out.reshape((outer, A, inner)), (o, k, t), g.reshape((g.size,))[i])"""
    return cuda_kernel(name, "g, idx, x, out", "g.size", body, fill="out = 0.0")


register(OpDef("gather", "kernel", _gather_infer, _gather_ref,
               vjp=lambda b, node, grads, needs: [
                   b.add1("gather_backward", [grads[0], node.inputs[1], node.inputs[0]], node.attrs), None],
               lower={"cpu": _gather_cpu, "cuda": _gather_cuda}))
register(OpDef("gather_backward", "kernel", _gather_bwd_infer, _gather_bwd_ref,
               lower={"cpu": _gather_bwd_cpu, "cuda": _gather_bwd_cuda}))


# ---- index maps: strided_slice {axes, starts, stops, steps} and pad {pads, mode, value} -----------------------
def _slice_params(attrs, rank):
    """{axis: (start, step, size)} with the sizes of Python's range(start, stop, step)."""
    out = {}
    for axis, start, stop, step in zip(attrs["axes"], attrs["starts"], attrs["stops"], attrs["steps"]):
        if step == 0:
            raise ShapeError("slice step must not be 0")
        out[_norm_axis(axis, rank)] = (start, step, len(range(start, stop, step)))
    return out


def _slice_infer(types, attrs):
    (t,) = types
    shape = list(t.shape)
    for axis, (start, step, size) in _slice_params(attrs, t.rank).items():
        dim = t.shape[axis]
        if not isinstance(dim, int):
            raise ShapeError(f"cannot slice the symbolic axis {axis} of {t}")
        if size and not (0 <= start < dim and 0 <= start + (size - 1) * step < dim):
            raise ShapeError(f"slice from {start} by {step} ({size} elements) is out of range for axis {axis} of {t}")
        shape[axis] = size
    return [t.with_shape(shape)]


def _slice_grid(attrs, shape):
    """The open-mesh index of the sliced elements of an array of ``shape``."""
    params = _slice_params(attrs, len(shape))
    return np.ix_(*(np.arange(params[a][0], params[a][0] + params[a][1] * params[a][2], params[a][1])
                    if a in params else np.arange(shape[a]) for a in range(len(shape))))


def _slice_ref(xs, attrs):
    return [np.ascontiguousarray(xs[0][_slice_grid(attrs, xs[0].shape)])]


def _slice_maps(node, rank):
    params = _slice_params(node.attrs, rank)
    return [f"s{a} = {params[a][0]} + i{a} * {params[a][1]}" if a in params else f"s{a} = i{a}"
            for a in range(rank)], None


def _slice_bwd_ref(xs, attrs):
    g, x = xs
    out = np.zeros(x.shape, g.dtype)
    out[_slice_grid(attrs, x.shape)] = g
    return [out]


_MODES = ("constant", "reflect", "edge", "wrap")


def _pad_params(attrs, rank):
    pads = [int(p) for p in attrs["pads"]]
    if len(pads) != 2 * rank:
        raise ShapeError(f"pads {pads} must list a start and an end for each of the {rank} axes")
    if attrs.get("mode", "constant") not in _MODES:
        raise ShapeError(f"pad mode must be one of {_MODES}, got {attrs['mode']!r}")
    return pads[:rank], pads[rank:]


def _pad_infer(types, attrs):
    (t,) = types
    before, after = _pad_params(attrs, t.rank)
    shape = []
    for axis, (d, b, e) in enumerate(zip(t.shape, before, after)):
        if not isinstance(d, int):
            if b or e:
                raise ShapeError(f"cannot pad the symbolic axis {axis} of {t}")
            shape.append(d)
            continue
        if d + b + e < 0 or (attrs.get("mode", "constant") != "constant" and d == 0 and d + b + e > 0):
            raise ShapeError(f"pads {attrs['pads']} do not fit {t} in mode {attrs.get('mode', 'constant')!r}")
        shape.append(d + b + e)
    return [t.with_shape(shape)]


def _pad_source(mode: str, index, before: int, size: int):
    """The source index (numpy arrays) of output positions ``index`` along one axis, and whether it is inside."""
    s = index - before
    if mode == "edge":
        s = np.clip(s, 0, size - 1)
    elif mode == "wrap":
        s = s % size
    elif mode == "reflect":
        period = max(2 * (size - 1), 1)
        s = s % period
        s = np.where(s >= size, period - s, s)
    return s, (s >= 0) & (s < size)


def _pad_index(x, out_shape, attrs):
    before, _ = _pad_params(attrs, x.ndim)
    mode = attrs.get("mode", "constant")
    grids = np.meshgrid(*(np.arange(n) for n in out_shape), indexing="ij")
    parts = [_pad_source(mode, g, b, n) for g, b, n in zip(grids, before, x.shape)]
    src = tuple(np.clip(s, 0, max(n - 1, 0)) for (s, _), n in zip(parts, x.shape))
    inside = np.logical_and.reduce([ok for _, ok in parts]) if parts else np.ones((), bool)
    return src, inside


def _pad_ref(xs, attrs):
    x = xs[0]
    out_shape = _pad_infer([TensorType("f32", x.shape)], attrs)[0].shape
    out = np.full(out_shape, attrs.get("value", 0), x.dtype)
    if x.size:
        src, inside = _pad_index(x, out_shape, attrs)
        out[inside] = x[src][inside]
    return [out]


def _pad_bwd_ref(xs, attrs):
    g, x = xs
    out = np.zeros(x.shape, g.dtype)
    if x.size:
        src, inside = _pad_index(x, g.shape, attrs)
        np.add.at(out, tuple(s[inside] for s in src), g[inside])
    return [out]


def _pad_maps(node, rank, size_of: str):
    """Per-axis source lines for the pad map, and the inside test (constant mode)."""
    before, _ = _pad_params(node.attrs, rank)
    mode = node.attrs.get("mode", "constant")
    maps = []
    for a in range(rank):
        n = f"{size_of}.shape[{a}]"
        shifted = f"i{a} - {before[a]}"
        maps.append({"constant": f"s{a} = {shifted}", "edge": f"s{a} = min(max({shifted}, 0), {n} - 1)",
                     "wrap": f"s{a} = ({shifted}) % {n}", "reflect": f"s{a} = KERNEL_reflect({shifted}, {n})"}[mode])
    inside = " and ".join(f"s{a} >= 0 and s{a} < {size_of}.shape[{a}]" for a in range(rank)) \
        if mode == "constant" else None
    return maps, inside


_REFLECT = """def KERNEL_reflect(s, n):
    if n == 1:
        return 0
    period = 2 * (n - 1)
    s = s % period
    return period - s if s >= n else s


"""


def _helpers(node) -> str:
    return _REFLECT if node.attrs.get("mode") == "reflect" else ""


def _fill_value(node) -> str:
    value = node.attrs.get("value", 0)
    dtype = node.outputs[0].dtype
    if dtype == "bool":
        return repr(bool(value))
    if dtype in ("i64", "i32"):
        return repr(int(value))
    value = float(value)
    return repr(value) if np.isfinite(value) else "math.nan" if np.isnan(value) else f"{'-' * (value < 0)}math.inf"


def _map_maps(node, size_of):
    rank = node.inputs[0].type.rank  # x forward, g backward: the same rank
    if node.op.startswith("strided_slice"):
        return rank, _slice_maps(node, rank)
    return rank, _pad_maps(node, rank, size_of)


def _map_cpu(node, name):
    """Forward: out[i] = x[s(i)] (or the pad value outside x)."""
    rank, (maps, inside) = _map_maps(node, "x")
    src = ", ".join(f"s{a}" for a in range(rank))
    read = f"x[{src}] if {inside} else {_fill_value(node)}" if inside else f"x[{src}]"
    body = [f"out[{', '.join(f'i{a}' for a in range(rank))}] = {read}"]
    return _helpers(node).replace("KERNEL", name) + f"def {name}(x, out):\n" + "\n".join(
        _loops(rank, "out", body, maps, True)).replace("KERNEL", name)


def _map_bwd_cpu(node, name):
    """Backward: out[s(i)] += g[i] for every inside i (serial: reflected sources repeat)."""
    rank, (maps, inside) = _map_maps(node, "out")
    add = f"out[{', '.join(f's{a}' for a in range(rank))}] += g[{', '.join(f'i{a}' for a in range(rank))}]"
    body = [f"if {inside}:", "    " + add] if inside else [add]
    return _helpers(node).replace("KERNEL", name) + f"def {name}(g, x, out):\n    out[...] = 0\n" + "\n".join(
        _loops(rank, "g", body, maps, False)).replace("KERNEL", name)


def _map_cuda(node, name):
    rank, (maps, inside) = _map_maps(node, "x")
    src = ", ".join(f"s{a}" for a in range(rank))
    read = f"x[{src}] if {inside} else {_fill_value(node)}" if inside else f"x[{src}]"
    names = [f"i{a}" for a in range(rank)]
    body = unravel(names, "out") + "".join(f"    {m}\n" for m in maps) + f"    out[{', '.join(names)}] = {read}"
    kernel = cuda_kernel(name, "x, out", "out.size", body.replace("KERNEL", name))
    return _helpers(node).replace("KERNEL", name) + kernel


def _map_bwd_cuda(node, name):
    rank, (maps, inside) = _map_maps(node, "out")
    names = [f"i{a}" for a in range(rank)]
    target = f"({', '.join(f's{a}' for a in range(rank))},)"
    add = f"cuda.atomic.add(out, {target}, g[{', '.join(names)}])"
    body = unravel(names, "g") + "".join(f"    {m}\n" for m in maps) + (
        f"    if {inside}:\n        {add}" if inside else f"    {add}")
    return _helpers(node).replace("KERNEL", name) + cuda_kernel(
        name, "g, x, out", "g.size", body.replace("KERNEL", name), fill="out = 0.0")


def _map_bwd_infer(forward_infer):
    def infer(types, attrs):
        g, x = types
        if forward_infer([x], attrs)[0].shape != g.shape:
            raise ShapeError(f"output gradient {g} does not match the forward output for input {x}")
        return [x.with_dtype(g.dtype)]

    return infer


def _map_vjp(backward_op):
    return lambda b, node, grads, needs: [b.add1(backward_op, [grads[0], node.inputs[0]], node.attrs)]


register(OpDef("strided_slice", "kernel", _slice_infer, _slice_ref, vjp=_map_vjp("strided_slice_backward"),
               lower={"cpu": _map_cpu, "cuda": _map_cuda}))
register(OpDef("strided_slice_backward", "kernel", _map_bwd_infer(_slice_infer), _slice_bwd_ref,
               lower={"cpu": _map_bwd_cpu, "cuda": _map_bwd_cuda}))
register(OpDef("pad", "kernel", _pad_infer, _pad_ref, vjp=_map_vjp("pad_backward"),
               lower={"cpu": _map_cpu, "cuda": _map_cuda}))
register(OpDef("pad_backward", "kernel", _map_bwd_infer(_pad_infer), _pad_bwd_ref,
               lower={"cpu": _map_bwd_cpu, "cuda": _map_bwd_cuda}))


# ---- argmax / argmin {axis, keepdims, select_last_index}: int64 positions of the extremes ------------------------
def _arg_infer(types, attrs):
    (t,) = types
    axis = _norm_axis(attrs["axis"], t.rank)
    if not isinstance(t.shape[axis], int) or t.shape[axis] == 0:
        raise ShapeError(f"cannot take the arg-extreme over axis {axis} of {t}")
    shape = [1 if a == axis else d for a, d in enumerate(t.shape)] if attrs.get("keepdims", True) else \
        [d for a, d in enumerate(t.shape) if a != axis]
    return [TensorType("i64", tuple(shape))]


def _arg_ref(fn):
    def ref(xs, attrs):
        x = xs[0]
        axis = _norm_axis(attrs["axis"], x.ndim)
        if attrs.get("select_last_index", False):  # the last extreme is the first one of the reversed axis
            idx = x.shape[axis] - 1 - fn(np.flip(x, axis), axis=axis)
        else:
            idx = fn(x, axis=axis)
        if attrs.get("keepdims", True):
            idx = np.expand_dims(idx, axis)
        return [np.ascontiguousarray(idx, np.int64)]

    return ref


def _arg_test(kind: str, attrs) -> str:
    better = ">" if kind == "argmax" else "<"
    return better + ("=" if attrs.get("select_last_index", False) else "")


def _arg_cpu(kind):
    def lower(node, name):
        rank = node.inputs[0].type.rank
        axis = _norm_axis(node.attrs["axis"], rank)
        return f"""def {name}(x, out):
    n = x.shape[{axis}]
    outer = {_prod_src("x", range(axis))}
    inner = {_prod_src("x", range(axis + 1, rank))}
    x3 = x.reshape((outer, n, inner))
    o2 = out.reshape((outer, inner))
    for o in prange(outer):
        for t in range(inner):
            best = 0
            for k in range(1, n):
                if x3[o, k, t] {_arg_test(kind, node.attrs)} x3[o, best, t]:
                    best = k
            o2[o, t] = best"""

    return lower


def _arg_cuda(kind):
    def lower(node, name):
        rank = node.inputs[0].type.rank
        axis = _norm_axis(node.attrs["axis"], rank)
        body = f"""    n = x.shape[{axis}]
    inner = {_prod_src("x", range(axis + 1, rank))}
    x3 = x.reshape((x.size // (n * inner), n, inner))
    o = i // inner
    t = i % inner
    best = 0
    for k in range(1, n):
        if x3[o, k, t] {_arg_test(kind, node.attrs)} x3[o, best, t]:
            best = k
    out.reshape((out.size,))[i] = best"""
        return cuda_kernel(name, "x, out", "out.size", body)

    return lower


for _kind, _fn in (("argmax", np.argmax), ("argmin", np.argmin)):
    register(OpDef(_kind, "kernel", _arg_infer, _arg_ref(_fn),
                   lower={"cpu": _arg_cpu(_kind), "cuda": _arg_cuda(_kind)}))
