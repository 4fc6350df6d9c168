"""ONNX operators as nncc IR: one handler per ONNX op type, written with ``tracing.apply`` and the nncc ops.

A handler takes a ``NodeContext`` (the node's decoded attributes and input values) and returns the values of
the node's outputs. Inputs are traced tensors, numpy arrays (parameters, or data in eager mode) or ``Static``
values (known while tracing); attribute-like inputs (shapes, axes, pads) must be known. Anything a handler does
not support (an attribute, an attribute value, a dtype) raises ``UnsupportedError`` naming the node.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np

from ..errors import ShapeError, UnsupportedError
from ..ir.types import DTYPES, dtype_of
from ..ops.registry import get_op
from .onnx_import import ONNX_DTYPES, OnnxError, Static, broadcast_dims, shape_of, standin_shapes, type_name
from .tracing import Tensor, active_trace, apply, to_value

FLOAT = ("f32", "f64")
INT = ("i64", "i32")
NUMERIC = FLOAT + INT
ANY = NUMERIC + ("bool",)
BOOL = ("bool",)
INT_MAX = 2 ** 31 - 1  # ends at or past this mean "to the end" (exporters write INT64_MAX or INT32_MAX)


class NodeContext:
    """A node being imported: its attributes, its input values and the model's state (training, opset)."""

    def __init__(self, node, inputs: list, model):
        self.node = node
        self.inputs = inputs
        self.model = model

    @property
    def opset(self) -> int:
        return self.model.opset

    @property
    def training(self) -> bool:
        return self.model.training

    def unsupported(self, what: str) -> UnsupportedError:
        return UnsupportedError(f"{self.model.where}: {self.node.op} node {self.node.name!r}: {what} is not supported")

    def has(self, i: int) -> bool:
        return i < len(self.inputs) and self.inputs[i] is not None

    def x(self, i: int):
        """Input ``i`` as data: a traced tensor or a numpy array."""
        if not self.has(i):
            raise OnnxError(f"{self.model.where}: {self.node.op} node {self.node.name!r} lacks its input {i}")
        v = self.inputs[i]
        return v.data(f"input {i} of node {self.node.name!r}") if isinstance(v, Static) else v

    def static(self, i: int) -> np.ndarray:
        """Input ``i``, which must be known while tracing (a constant, an initializer or a shape)."""
        v = self.x(i)
        if isinstance(v, Tensor):
            raise self.unsupported(f"input {i} computed at run time (it must be a constant)")
        return np.asarray(v)

    def dims(self, i: int) -> list:
        """Input ``i`` as a list of ints where the batch size appears as ``N``."""
        v = self.inputs[i] if self.has(i) else None
        if isinstance(v, Static):
            return v.dims(f"input {i} of node {self.node.name!r}")
        return [int(d) for d in self.static(i).reshape(-1)]

    def ints(self, i: int, attr: Optional[str], default=None) -> Optional[list]:
        """Input ``i`` if given, else the attribute ``attr`` (the form older opsets used), else ``default``."""
        if self.has(i):
            return [int(d) for d in self.static(i).reshape(-1)]
        if attr is not None and attr in self.node.attrs:
            return [int(d) for d in self.node.attrs[attr]]
        return default

    def attr(self, name: str, default=None):
        return self.node.attrs.get(name, default)

    def shape(self, i: int) -> tuple:
        return shape_of(self.inputs[i])

    def rank(self, i: int) -> int:
        return len(self.shape(i))

    def dtype(self, i: int) -> str:
        v = self.inputs[i]
        if isinstance(v, Tensor):
            return v.dtype
        return dtype_of((v.values[0] if isinstance(v, Static) else np.asarray(v)).dtype)

    def wants(self, k: int) -> bool:
        """Whether the node's output ``k`` is used."""
        return k < len(self.node.outputs) and bool(self.node.outputs[k])


Handler = Callable[[NodeContext], list]
HANDLERS: dict[str, Handler] = {}


def handler(*ops: str, attrs=(), dtypes=ANY):
    """Register a handler for ONNX ``ops``: other attributes, and input 0 of other dtypes, are unsupported."""
    def register(fn):
        for op in ops:
            HANDLERS[op] = _checked(fn, frozenset(attrs), dtypes)
        return fn

    return register


def _checked(fn, attrs: frozenset, dtypes) -> Handler:
    def run(c: NodeContext) -> list:
        extra = sorted(set(c.node.attrs) - attrs)
        if extra:
            raise c.unsupported(f"attribute{'s' if len(extra) > 1 else ''} {', '.join(extra)}")
        if c.has(0) and c.dtype(0) not in dtypes:
            raise c.unsupported(f"input of dtype {c.dtype(0)}")
        out = fn(c)
        out = list(out) if isinstance(out, (list, tuple)) else [out]
        missing = [k for k in range(len(out), len(c.node.outputs)) if c.wants(k)]
        if missing:
            raise c.unsupported(f"output{'s' if len(missing) > 1 else ''} {missing}")
        return out

    return run


# ---- helpers ---------------------------------------------------------------------------------------------------
def _np_dtype(v) -> np.dtype:
    return DTYPES[v.dtype] if isinstance(v, Tensor) else np.asarray(v).dtype


def _k(value, like) -> np.ndarray:
    """A constant in ``like``'s dtype."""
    return np.asarray(value, dtype=_np_dtype(like))


def _traced(v):
    """A constant as a traced tensor, so an op on it is recorded even when its shape holds the batch symbol."""
    if active_trace() is not None and not isinstance(v, Tensor):
        return Tensor(to_value(v))
    return v


def _reshape(x, shape):
    shape = list(shape)
    return x if list(shape_of(x)) == shape else apply("reshape", [x], {"shape": shape})


def _dtype(v) -> str:
    return v.dtype if isinstance(v, Tensor) else dtype_of(np.asarray(v).dtype)


def _cast(x, dtype: str):
    if _dtype(x) == dtype:
        return x
    if isinstance(x, Tensor):
        return apply("cast", [x], {"dtype": dtype})
    return np.asarray(x).astype(DTYPES[dtype])


def _merge(c: NodeContext, dims) -> object:
    """The product of ``dims``; the batch symbol may only stand alone (times ones)."""
    syms = [d for d in dims if isinstance(d, str)]
    size = math.prod(d for d in dims if not isinstance(d, str))
    if not syms:
        return size
    if len(syms) == 1 and size == 1:
        return syms[0]
    raise c.unsupported(f"merging the batch dimension with others ({list(dims)})")


def _axis(c: NodeContext, axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise ShapeError(f"{c.node.op} node {c.node.name!r}: axis {axis} out of range for rank {rank}")
    return axis % rank


def _reduce(op: str, x, axes, keepdims: bool):
    return apply(op, [x], {"axes": list(axes), "keepdims": bool(keepdims)})


# ---- elementwise -------------------------------------------------------------------------------------------------
for _onnx, _op, _types in [("Add", "add", NUMERIC), ("Sub", "sub", NUMERIC), ("Mul", "mul", NUMERIC),
                           ("Div", "div", FLOAT), ("Equal", "equal", ANY), ("Greater", "greater", NUMERIC),
                           ("Less", "less", NUMERIC), ("GreaterOrEqual", "greater_equal", NUMERIC),
                           ("LessOrEqual", "less_equal", NUMERIC), ("And", "logical_and", BOOL),
                           ("Or", "logical_or", BOOL), ("Xor", "logical_xor", BOOL)]:
    handler(_onnx, dtypes=_types)(lambda c, op=_op: apply(op, [c.x(0), c.x(1)]))

for _onnx, _op, _types in [("Neg", "neg", NUMERIC), ("Abs", "abs", NUMERIC), ("Exp", "exp", FLOAT),
                           ("Log", "log", FLOAT), ("Sqrt", "sqrt", FLOAT), ("Floor", "floor", FLOAT),
                           ("Ceil", "ceil", FLOAT), ("Erf", "erf", FLOAT), ("Relu", "relu", FLOAT),
                           ("Sigmoid", "sigmoid", FLOAT), ("Tanh", "tanh", FLOAT), ("Sign", "sign", FLOAT),
                           ("Not", "logical_not", BOOL)]:
    handler(_onnx, dtypes=_types)(lambda c, op=_op: apply(op, [c.x(0)]))


@handler("Identity")
def _identity(c):
    return c.inputs[0]


@handler("Reciprocal", dtypes=FLOAT)
def _reciprocal(c):
    return apply("div", [_k(1, c.x(0)), c.x(0)])


@handler("Pow", dtypes=FLOAT)
def _pow(c):
    return apply("pow", [c.x(0), _cast(c.x(1), c.dtype(0))])


def _variadic(op: str, mean: bool = False):
    def run(c):
        xs = [c.x(i) for i in range(len(c.inputs))]
        y = xs[0]
        for x in xs[1:]:
            y = apply(op, [y, x])
        return apply("div", [y, _k(len(xs), y)]) if mean else y

    return run


handler("Max", dtypes=NUMERIC)(_variadic("maximum"))
handler("Min", dtypes=NUMERIC)(_variadic("minimum"))
handler("Sum", dtypes=FLOAT)(_variadic("add"))
handler("Mean", dtypes=FLOAT)(_variadic("add", mean=True))


@handler("Clip", attrs=("min", "max"), dtypes=NUMERIC)
def _clip(c):
    x = c.x(0)
    lo = c.x(1) if c.has(1) else c.attr("min")  # attributes before opset 11
    hi = c.x(2) if c.has(2) else c.attr("max")
    if lo is not None:
        x = apply("maximum", [x, _cast(lo, c.dtype(0)) if c.has(1) else _k(lo, x)])
    if hi is not None:
        x = apply("minimum", [x, _cast(hi, c.dtype(0)) if c.has(2) else _k(hi, x)])
    return x


@handler("Where")
def _where(c):
    return apply("where", [c.x(0), c.x(1), c.x(2)])


@handler("Cast", attrs=("to", "saturate"))
def _cast_op(c):
    to = ONNX_DTYPES.get(c.attr("to"))
    if to is None:
        raise c.unsupported(f"casting to {type_name(c.attr('to'))}")
    return _cast(c.x(0), to)


@handler("CastLike", attrs=("saturate",))
def _cast_like(c):
    return _cast(c.x(0), c.dtype(1))


# ---- activations -------------------------------------------------------------------------------------------------
@handler("LeakyRelu", attrs=("alpha",), dtypes=FLOAT)
def _leaky_relu(c):
    return apply("leaky_relu", [c.x(0)], {"alpha": float(c.attr("alpha", 0.01))})


def _elu(x, alpha: float):
    """alpha * (exp(x) - 1) below 0; exp of min(x, 0) so that large inputs give no inf (and no NaN gradient)."""
    neg = apply("mul", [_k(alpha, x), apply("sub", [apply("exp", [apply("minimum", [x, _k(0, x)])]), _k(1, x)])])
    return apply("where", [apply("greater", [x, _k(0, x)]), x, neg])


@handler("Elu", attrs=("alpha",), dtypes=FLOAT)
def _elu_op(c):
    return _elu(c.x(0), c.attr("alpha", 1.0))


@handler("Selu", attrs=("alpha", "gamma"), dtypes=FLOAT)
def _selu(c):
    x = c.x(0)
    return apply("mul", [_k(c.attr("gamma", 1.0507009873554805), x), _elu(x, c.attr("alpha", 1.6732632423543772))])


@handler("Celu", attrs=("alpha",), dtypes=FLOAT)
def _celu(c):
    x, alpha = c.x(0), c.attr("alpha", 1.0)
    neg = apply("mul", [_k(alpha, x), apply("sub", [
        apply("exp", [apply("div", [apply("minimum", [x, _k(0, x)]), _k(alpha, x)])]), _k(1, x)])])
    return apply("add", [apply("relu", [x]), neg])


def _hard_sigmoid(x, alpha: float, beta: float):
    linear = apply("add", [apply("mul", [x, _k(alpha, x)]), _k(beta, x)])
    return apply("maximum", [apply("minimum", [linear, _k(1, x)]), _k(0, x)])


@handler("HardSigmoid", attrs=("alpha", "beta"), dtypes=FLOAT)
def _hard_sigmoid_op(c):
    return _hard_sigmoid(c.x(0), c.attr("alpha", 0.2), c.attr("beta", 0.5))


@handler("HardSwish", dtypes=FLOAT)
def _hard_swish(c):
    x = c.x(0)
    return apply("mul", [x, _hard_sigmoid(x, 1 / 6, 0.5)])


def _softplus(x):
    """log(1 + exp(x)) as relu(x) + log(1 + exp(-|x|)): no overflow for large |x|."""
    tail = apply("log", [apply("add", [apply("exp", [apply("neg", [apply("abs", [x])])]), _k(1, x)])])
    return apply("add", [apply("relu", [x]), tail])


@handler("Softplus", dtypes=FLOAT)
def _softplus_op(c):
    return _softplus(c.x(0))


@handler("Softsign", dtypes=FLOAT)
def _softsign(c):
    x = c.x(0)
    return apply("div", [x, apply("add", [apply("abs", [x]), _k(1, x)])])


@handler("Mish", dtypes=FLOAT)
def _mish(c):
    x = c.x(0)
    return apply("mul", [x, apply("tanh", [_softplus(x)])])


@handler("ThresholdedRelu", attrs=("alpha",), dtypes=FLOAT)
def _thresholded_relu(c):
    x = c.x(0)
    return apply("where", [apply("greater", [x, _k(c.attr("alpha", 1.0), x)]), x, _k(0, x)])


@handler("PRelu", dtypes=FLOAT)
def _prelu(c):
    x, slope = c.x(0), c.x(1)
    return apply("where", [apply("less", [x, _k(0, x)]), apply("mul", [x, slope]), x])


@handler("Gelu", attrs=("approximate",), dtypes=FLOAT)
def _gelu(c):
    x = c.x(0)
    approximate = c.attr("approximate", "none")
    if approximate == "none":
        inner = apply("erf", [apply("mul", [x, _k(1 / math.sqrt(2), x)])])
    elif approximate == "tanh":
        cube = apply("mul", [apply("mul", [x, x]), x])
        arg = apply("add", [x, apply("mul", [cube, _k(0.044715, x)])])
        inner = apply("tanh", [apply("mul", [arg, _k(math.sqrt(2 / math.pi), x)])])
    else:
        raise c.unsupported(f"approximate={approximate!r}")
    return apply("mul", [apply("mul", [x, _k(0.5, x)]), apply("add", [inner, _k(1, x)])])


def _softmax(op: str):
    def run(c):
        x, rank = c.x(0), c.rank(0)
        if c.opset >= 13:
            return apply(op, [x], {"axis": _axis(c, c.attr("axis", -1), rank)})
        # before opset 13 the input is coerced to 2-D at the axis and normalised over the second dim
        axis = _axis(c, c.attr("axis", 1), rank)
        if axis == rank - 1:
            return apply(op, [x], {"axis": axis})
        shape = c.shape(0)
        flat = _reshape(x, [_merge(c, shape[:axis]), _merge(c, shape[axis:])])
        return _reshape(apply(op, [flat], {"axis": 1}), shape)

    return run


handler("Softmax", attrs=("axis",), dtypes=FLOAT)(_softmax("softmax"))
handler("LogSoftmax", attrs=("axis",), dtypes=FLOAT)(_softmax("log_softmax"))


# ---- shapes ------------------------------------------------------------------------------------------------------
@handler("Shape", attrs=("start", "end"))
def _shape(c):
    start, end = c.attr("start", 0), c.attr("end")
    return Static(*(np.array(s[start:end], np.int64) for s in standin_shapes(c.shape(0))))


@handler("Size")
def _size(c):
    return Static(*(np.array(math.prod(s), np.int64) for s in standin_shapes(c.shape(0))))


@handler("Reshape", attrs=("allowzero",))
def _reshape_op(c):
    shape, target = list(c.shape(0)), c.dims(1)
    if not c.attr("allowzero", 0):
        if any(d == 0 and i >= len(shape) for i, d in enumerate(target)):
            raise ShapeError(f"Reshape node {c.node.name!r}: target {target} copies a dim that {shape} lacks")
        target = [shape[i] if d == 0 else d for i, d in enumerate(target)]
    if -1 in target:
        target[target.index(-1)] = _infer_dim(c, shape, target)
    return _reshape(c.x(0), target)


def _infer_dim(c, shape: list, target: list):
    """The size a -1 in ``target`` stands for: per-sample sizes divide; the batch symbol may only map to itself."""
    rest = [d for d in target if d != -1]
    syms_in = sorted(d for d in shape if isinstance(d, str))
    syms_rest = sorted(d for d in rest if isinstance(d, str))
    n_in = math.prod(d for d in shape if not isinstance(d, str))
    n_rest = math.prod(d for d in rest if not isinstance(d, str))
    if syms_in == syms_rest and n_rest and n_in % n_rest == 0:
        return n_in // n_rest
    if syms_in == ["N"] and not syms_rest and n_in == n_rest:
        return "N"
    if syms_in != syms_rest:
        raise c.unsupported(f"reshaping {shape} to {target}, which merges or splits the batch dimension")
    raise ShapeError(f"Reshape node {c.node.name!r}: cannot reshape {shape} to {target}")


@handler("Flatten", attrs=("axis",))
def _flatten(c):
    shape = c.shape(0)
    axis = c.attr("axis", 1)
    axis = axis + len(shape) if axis < 0 else axis
    return _reshape(c.x(0), [_merge(c, shape[:axis]), _merge(c, shape[axis:])])


@handler("Transpose", attrs=("perm",))
def _transpose(c):
    perm = c.attr("perm") or list(reversed(range(c.rank(0))))
    return apply("transpose", [c.x(0)], {"perm": [int(p) for p in perm]})


@handler("Squeeze", attrs=("axes",))
def _squeeze(c):
    shape = c.shape(0)
    axes = c.ints(1, "axes")
    axes = [a for a, d in enumerate(shape) if d == 1] if axes is None else [_axis(c, a, len(shape)) for a in axes]
    for a in axes:
        if shape[a] != 1:
            raise c.unsupported(f"squeezing axis {a} of {list(shape)}") if isinstance(shape[a], str) else \
                ShapeError(f"Squeeze node {c.node.name!r}: axis {a} of {list(shape)} is not 1")
    return _reshape(c.x(0), [d for a, d in enumerate(shape) if a not in axes])


@handler("Unsqueeze", attrs=("axes",))
def _unsqueeze(c):
    shape = list(c.shape(0))
    rank = len(shape) + len(c.ints(1, "axes"))
    axes = sorted(_axis(c, a, rank) for a in c.ints(1, "axes"))
    for a in axes:
        shape.insert(a, 1)
    return _reshape(c.x(0), shape)


@handler("Concat", attrs=("axis",))
def _concat(c):
    xs = [c.x(i) for i in range(len(c.inputs))]
    axis = _axis(c, c.attr("axis"), c.rank(0))
    return xs[0] if len(xs) == 1 else apply("concat", [_traced(x) for x in xs], {"axis": axis})


def _strided(x, axes, starts, stops, steps):
    if not axes:
        return x
    return apply("strided_slice", [x], {"axes": axes, "starts": starts, "stops": stops, "steps": steps})


@handler("Split", attrs=("axis", "split", "num_outputs"))
def _split(c):
    shape = c.shape(0)
    axis = _axis(c, c.attr("axis", 0), len(shape))
    dim = shape[axis]
    if isinstance(dim, str):
        raise c.unsupported("splitting the batch dimension")
    sizes = c.ints(1, "split")
    if sizes is None:
        n = len(c.node.outputs)
        chunk = -(-dim // n)
        sizes = [min(chunk, dim - k * chunk) for k in range(n)]
    if sum(sizes) != dim or any(s < 0 for s in sizes):
        raise ShapeError(f"Split node {c.node.name!r}: sizes {sizes} do not add up to axis {axis} of {list(shape)}")
    x, outs, start = c.x(0), [], 0
    for size in sizes:
        outs.append(_strided(x, [axis], [start], [start + size], [1]) if size != dim else x)
        start += size
    return outs


@handler("Slice", attrs=("starts", "ends", "axes"))
def _slice(c):
    shape = c.shape(0)
    starts, ends = c.ints(1, "starts"), c.ints(2, "ends")
    axes = c.ints(3, "axes", list(range(len(starts))))
    steps = c.ints(4, None, [1] * len(starts))
    params = ([], [], [], [])
    for axis, start, end, step in zip(axes, starts, ends, steps):
        axis = _axis(c, axis, len(shape))
        dim = shape[axis]
        if step == 0:
            raise ShapeError(f"Slice node {c.node.name!r}: step 0")
        if isinstance(dim, str):
            if (start, step) == (0, 1) and end >= INT_MAX:
                continue
            raise c.unsupported(f"slicing the batch dimension [{start}:{end}:{step}]")
        start, end = _slice_bounds(start, end, step, dim)
        if (start, step) == (0, 1) and end >= dim:
            continue
        for param, value in zip(params, (axis, start, end, step)):
            param.append(value)
    return _strided(c.x(0), *params)


def _slice_bounds(start: int, end: int, step: int, dim: int) -> tuple[int, int]:
    """ONNX's clamping: negative bounds count from the end; a negative step may stop before index 0 (-1)."""
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        return min(max(start, 0), dim), min(max(end, 0), dim)
    return min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)


@handler("Gather", attrs=("axis",))
def _gather(c):
    if c.dtype(1) not in INT:
        raise c.unsupported(f"indices of dtype {c.dtype(1)}")
    return apply("gather", [_traced(c.x(0)), c.x(1)], {"axis": _axis(c, c.attr("axis", 0), c.rank(0))})


@handler("Expand")
def _expand(c):
    return _expand_to(c, c.x(0), list(broadcast_dims(c.shape(0), c.dims(1))))


@handler("Pad", attrs=("mode", "pads", "value"))
def _pad(c):
    shape = c.shape(0)
    rank = len(shape)
    pads = c.ints(1, "pads")
    axes = [_axis(c, a, rank) for a in c.ints(3, None, list(range(rank)))]
    if len(pads) != 2 * len(axes):
        raise ShapeError(f"Pad node {c.node.name!r}: {len(pads)} pads for {len(axes)} axes")
    full = [0] * (2 * rank)
    for k, a in enumerate(axes):
        full[a], full[a + rank] = pads[k], pads[k + len(axes)]
    mode = c.attr("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise c.unsupported(f"mode {mode!r}")
    if any((full[a] or full[a + rank]) and isinstance(d, str) for a, d in enumerate(shape)):
        raise c.unsupported("padding the batch dimension")
    value = c.static(2).reshape(-1) if c.has(2) else np.asarray([c.attr("value", 0.0)])
    if not any(full):
        return c.x(0)
    return apply("pad", [c.x(0)], {"pads": full, "mode": mode, "value": float(value[0]) if value.size else 0.0})


# ---- convolution and pooling -------------------------------------------------------------------------------------
def _auto_pads(c, sizes, kernel, strides, dilations) -> tuple[list, list]:
    """(begin, end) padding per spatial axis from auto_pad or pads."""
    auto = c.attr("auto_pad", "NOTSET")
    n = len(sizes)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(sizes, kernel, strides, dilations):
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            begin.append(small if auto == "SAME_UPPER" else large)
            end.append(large if auto == "SAME_UPPER" else small)
        return begin, end
    if auto == "VALID":
        return [0] * n, [0] * n
    if auto != "NOTSET":
        raise c.unsupported(f"auto_pad={auto!r}")
    pads = c.attr("pads", [0] * (2 * n))
    return list(pads[:n]), list(pads[n:])


class _Spatial:
    """The spatial attributes of a conv or pool node, lifted from 1-D to 2-D (a height of 1) when needed."""

    def __init__(self, c, kernel):
        shape = c.shape(0)
        self.n = len(shape) - 2
        if self.n not in (1, 2):
            raise c.unsupported(f"{len(shape)}-D input {list(shape)} (nncc has 1-D and 2-D convolution and pooling)")
        given = c.attr("kernel_shape")
        if given is not None and list(given) != list(kernel):
            raise ShapeError(f"{c.node.op} node {c.node.name!r}: kernel_shape {given} differs from the weight's "
                             f"{kernel}")
        self.kernel = list(kernel)
        self.strides = list(c.attr("strides", [1] * self.n))
        self.dilations = list(c.attr("dilations", [1] * self.n))
        self.begin, self.end = _auto_pads(c, shape[2:], self.kernel, self.strides, self.dilations)

    def two_d(self, neutral, values) -> list:
        """A per-axis list for the 2-D op: a 1-D op's gets ``neutral`` for the added height axis."""
        return list(values) if self.n == 2 else [neutral] + list(values)

    def up(self, x):
        """[N, C, W] -> [N, C, 1, W] for a 1-D op."""
        return x if self.n == 2 else _reshape(x, list(shape_of(x)[:2]) + [1, shape_of(x)[2]])

    def down(self, y):
        return y if self.n == 2 else _reshape(y, list(shape_of(y)[:2]) + [shape_of(y)[3]])

    def symmetric(self) -> bool:
        return self.begin == self.end

    def explicit_pads(self) -> list:
        """The ``pad`` op's pads for the 2-D input: begin then end of every axis."""
        return [0, 0] + self.two_d(0, self.begin) + [0, 0] + self.two_d(0, self.end)


@handler("Conv", attrs=("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"), dtypes=FLOAT)
def _conv(c):
    sp = _Spatial(c, c.shape(1)[2:])
    x, w = sp.up(c.x(0)), sp.up(c.x(1))
    padding = sp.two_d(0, sp.begin)
    if not sp.symmetric():
        x = apply("pad", [x], {"pads": sp.explicit_pads(), "mode": "constant", "value": 0.0})
        padding = [0, 0]
    attrs = {"stride": sp.two_d(1, sp.strides), "padding": padding, "dilation": sp.two_d(1, sp.dilations),
             "groups": int(c.attr("group", 1))}
    return sp.down(apply("conv2d", [x, w] + ([c.x(2)] if c.has(2) else []), attrs))


@handler("ConvTranspose", attrs=("auto_pad", "dilations", "group", "kernel_shape", "output_padding",
                                 "output_shape", "pads", "strides"), dtypes=FLOAT)
def _conv_transpose(c):
    sp = _Spatial(c, c.shape(1)[2:])
    sizes = c.shape(0)[2:]
    extra = list(c.attr("output_padding", [0] * sp.n))
    full = [(n - 1) * s + (k - 1) * d + 1 for n, k, s, d in zip(sizes, sp.kernel, sp.strides, sp.dilations)]
    begin, end = sp.begin, sp.end
    target = c.attr("output_shape")
    if target is not None or c.attr("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
        target = list(target)[-sp.n:] if target is not None else [n * s for n, s in zip(sizes, sp.strides)]
        totals = [f + e - t for f, e, t in zip(full, extra, target)]
        upper = c.attr("auto_pad") == "SAME_UPPER"
        begin = [t // 2 if upper else t - t // 2 for t in totals]
        end = [t - t // 2 if upper else t // 2 for t in totals]
    out = [f + e - b - a for f, e, b, a in zip(full, extra, begin, end)]
    attrs = {"stride": sp.two_d(1, sp.strides), "dilation": sp.two_d(1, sp.dilations),
             "groups": int(c.attr("group", 1))}
    x, w = sp.up(c.x(0)), sp.up(c.x(1))
    if begin == end and all(b >= 0 for b in begin) and all(e < max(s, d) for e, s, d in
                                                            zip(extra, sp.strides, sp.dilations)):
        y = apply("conv_transpose2d", [x, w], {**attrs, "padding": sp.two_d(0, begin),
                                               "output_padding": sp.two_d(0, extra)})
    else:  # the full result, then cropped or zero-extended to the output size at each end
        y = apply("conv_transpose2d", [x, w], {**attrs, "padding": [0, 0], "output_padding": [0, 0]})
        after = [o - f + b for o, f, b in zip(out, full, begin)]
        y = apply("pad", [y], {"pads": [0, 0] + sp.two_d(0, [-b for b in begin]) + [0, 0] + sp.two_d(0, after),
                               "mode": "constant", "value": 0.0})
    if c.has(2):
        y = apply("add", [y, _reshape(c.x(2), [1, shape_of(y)[1], 1, 1])])
    return sp.down(y)


def _pool(kind: str):
    def run(c):
        if kind == "max" and c.wants(1):
            raise c.unsupported("the Indices output")
        if c.attr("kernel_shape") is None:
            raise OnnxError(f"{c.model.where}: {c.node.op} node {c.node.name!r} has no kernel_shape")
        sp = _Spatial(c, c.attr("kernel_shape"))
        x = sp.up(c.x(0))
        include_pad = bool(c.attr("count_include_pad", 0))
        attrs = {"kernel": sp.two_d(1, sp.kernel), "stride": sp.two_d(1, sp.strides), "padding": sp.two_d(0, sp.begin),
                 "dilation": sp.two_d(1, sp.dilations), "ceil_mode": bool(c.attr("ceil_mode", 0))}
        if kind == "avg":
            attrs["count_include_pad"] = include_pad
        if sp.symmetric() and all(2 * b <= k for b, k in zip(sp.begin, sp.kernel)):
            return sp.down(apply(f"{kind}_pool2d", [x], attrs))
        # pads the pooling op cannot take (asymmetric, or over half the kernel): pad explicitly, pool unpadded
        value = -np.inf if kind == "max" else 0.0
        padded = apply("pad", [x], {"pads": sp.explicit_pads(), "mode": "constant", "value": value})
        y = apply(f"{kind}_pool2d", [padded], {**attrs, "padding": [0, 0], "count_include_pad": True} if kind == "avg"
                  else {**attrs, "padding": [0, 0]})
        if kind == "avg" and not include_pad:  # divide by the share of each window that lies inside the input
            ones = np.ones([1, 1] + list(shape_of(x)[2:]), _np_dtype(x))
            inside = get_op("pad").reference([ones], {"pads": sp.explicit_pads(), "mode": "constant", "value": 0.0})
            share = get_op("avg_pool2d").reference(inside, {**attrs, "padding": [0, 0], "count_include_pad": True})
            y = apply("div", [y, share[0]])
        return sp.down(y)

    return run


_POOL_ATTRS = ("auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "strides")
handler("MaxPool", attrs=_POOL_ATTRS + ("storage_order",), dtypes=FLOAT)(_pool("max"))
handler("AveragePool", attrs=_POOL_ATTRS + ("count_include_pad",), dtypes=FLOAT)(_pool("avg"))


@handler("GlobalAveragePool", dtypes=FLOAT)
def _global_avg(c):
    return _reduce("mean", c.x(0), range(2, c.rank(0)), True)


@handler("GlobalMaxPool", dtypes=FLOAT)
def _global_max(c):
    return _reduce("max", c.x(0), range(2, c.rank(0)), True)


# ---- matrix products ---------------------------------------------------------------------------------------------
@handler("Gemm", attrs=("alpha", "beta", "transA", "transB"), dtypes=FLOAT)
def _gemm(c):
    a, b = c.x(0), c.x(1)
    y = apply("matmul", [a, b], {"transpose_a": bool(c.attr("transA", 0)), "transpose_b": bool(c.attr("transB", 0))})
    if c.attr("alpha", 1.0) != 1.0:
        y = apply("mul", [y, _k(c.attr("alpha"), y)])
    if c.has(2):
        bias = c.x(2)
        if c.attr("beta", 1.0) != 1.0:
            bias = apply("mul", [bias, _k(c.attr("beta"), y)])
        y = apply("add", [y, bias])
    return y


@handler("MatMul", dtypes=FLOAT)
def _matmul(c):
    sa, sb = list(c.shape(0)), list(c.shape(1))
    # numpy's rule: a vector is a matrix of one row (on the left) or one column (on the right), which the
    # result then drops
    a = _reshape(c.x(0), [1] + sa) if len(sa) == 1 else c.x(0)
    b = _reshape(c.x(1), sb + [1]) if len(sb) == 1 else c.x(1)
    y = _matmul_nd(c, a, b)
    shape = list(shape_of(y))
    if len(sb) == 1:
        del shape[-1]
    if len(sa) == 1:
        del shape[-1 if len(sb) == 1 else -2]
    return _reshape(y, shape)


def _matmul_nd(c, a, b):
    sa, sb = list(shape_of(a)), list(shape_of(b))
    flags = {"transpose_a": False, "transpose_b": False}
    if len(sa) == 2 and len(sb) == 2:
        return apply("matmul", [a, b], flags)
    if len(sb) == 2 and all(isinstance(d, int) for d in sa):  # [..., K] @ [K, M]: one 2-D product
        y = apply("matmul", [_reshape(a, [math.prod(sa[:-1]), sa[-1]]), b], flags)
        return _reshape(y, sa[:-1] + [sb[-1]])
    if min(len(sa), len(sb)) > 2:  # batch dims broadcast both ways: expand each operand to the common ones
        batch = list(broadcast_dims(sa[:-2], sb[:-2]))
        a, b = (_expand_to(c, v, batch + s[-2:]) for v, s in ((a, sa), (b, sb)))
    return apply("batch_matmul", [a, b], flags)


def _expand_to(c, x, shape: list):
    if list(shape_of(x)) == shape:
        return x
    if "N" in shape and "N" not in shape_of(x):
        raise c.unsupported(f"broadcasting {list(shape_of(x))} to the batch size ({shape})")
    return apply("broadcast_to", [_traced(x)], {"shape": shape})


# ---- normalisation and dropout -----------------------------------------------------------------------------------
@handler("BatchNormalization", attrs=("epsilon", "momentum", "training_mode"), dtypes=FLOAT)
def _batch_norm(c):
    x, scale, bias, mean, var = (c.x(i) for i in range(5))
    eps, momentum = float(c.attr("epsilon", 1e-5)), float(c.attr("momentum", 0.9))
    if c.attr("training_mode", 0):
        return _batch_norm_onnx_training(c, eps, momentum)
    trace = active_trace()
    buffers = [v for v in (mean, var) if isinstance(v, np.ndarray) and trace is not None
               and id(v) in trace.param_values]
    if not c.training or len(buffers) != 2:
        from .nn import functional as F

        return F.batch_norm(x, mean, var, scale, bias, False, eps=eps)
    # fine-tuning in nncc: batch statistics, and the running ones updated the way PyTorch (which exported the
    # model with momentum = 1 - its own) does
    from .nn import functional as F

    y, new_mean, new_var = F.batch_norm(x, mean, var, scale, bias, True, 1.0 - momentum, eps)
    trace.buffer_updates[id(mean)] = new_mean.value
    trace.buffer_updates[id(var)] = new_var.value
    return y


def _batch_norm_onnx_training(c, eps: float, momentum: float):
    """ONNX's training mode: normalise with the batch's (biased) statistics; output the updated running ones."""
    x, scale, bias, mean, var = (c.x(i) for i in range(5))
    rank = c.rank(0)
    axes = [0] + list(range(2, rank))
    channels = c.shape(0)[1]
    stat = [1, channels] + [1] * (rank - 2)
    batch_mean = _reduce("mean", x, axes, True)
    centered = apply("sub", [x, batch_mean])
    batch_var = _reduce("mean", apply("mul", [centered, centered]), axes, True)
    y = apply("mul", [centered, apply("rsqrt", [apply("add", [batch_var, _k(eps, x)])])])
    y = apply("add", [apply("mul", [y, _reshape(scale, stat)]), _reshape(bias, stat)])

    def running(old, new):
        return apply("add", [apply("mul", [old, _k(momentum, x)]),
                             apply("mul", [_reshape(new, [channels]), _k(1 - momentum, x)])])

    return [y, running(mean, batch_mean), running(var, batch_var)]


@handler("Dropout", attrs=("seed", "ratio"))
def _dropout(c):
    x = c.x(0)
    ratio = float(c.static(1).reshape(-1)[0]) if c.has(1) else float(c.attr("ratio", 0.5))
    if c.has(2) and bool(c.static(2).reshape(-1)[0]) and ratio > 0:
        raise c.unsupported("training_mode=True (nncc's random masks cannot match other runtimes')")
    outs = [x]
    if c.training and ratio > 0:
        if c.wants(1):
            raise c.unsupported("the mask output while nncc trains the model")
        from .nn import functional as F

        outs = [F.dropout(x, ratio, True)]
    elif c.wants(1):
        outs.append(apply("broadcast_like", [np.array(True), x]) if isinstance(x, Tensor)
                    else np.ones(shape_of(x), bool))
    return outs


# ---- reductions --------------------------------------------------------------------------------------------------
def _reduction(make):
    """A Reduce* handler: ``make(x, axes, keepdims)`` builds the reduction over the normalised axes."""
    def run(c):
        rank = c.rank(0)
        axes = c.ints(1, "axes")
        if not axes:
            if c.attr("noop_with_empty_axes", 0):
                return c.x(0)
            axes = list(range(rank))
        axes = sorted({_axis(c, a, rank) for a in axes})
        return make(c.x(0), axes, bool(c.attr("keepdims", 1)))

    return run


def _square_sum(x, axes, keep):
    return _reduce("sum", apply("mul", [x, x]), axes, keep)


def _log_sum_exp(x, axes, keep):
    peak = _reduce("max", x, axes, True)  # shifted by the maximum: no overflow
    y = apply("add", [apply("log", [_reduce("sum", apply("exp", [apply("sub", [x, peak])]), axes, True)]), peak])
    return y if keep else _reshape(y, [d for a, d in enumerate(shape_of(x)) if a not in axes])


def _reduce_min(x, axes, keep):
    return apply("neg", [_reduce("max", apply("neg", [x]), axes, keep)])


def _also_bool(make):
    """``make`` extended to bool input (ReduceMax is any, ReduceMin all): nncc's reductions are float-only, so
    the flags are reduced as 0.0 and 1.0; an empty set gives -inf (False) or +inf (True), as ONNX wants."""
    def run(x, axes, keep):
        if _dtype(x) != "bool":
            return make(x, axes, keep)
        y = make(_cast(x, "f32"), axes, keep)
        return apply("greater", [y, _k(0, y)])

    return run


_REDUCE_ATTRS = ("axes", "keepdims", "noop_with_empty_axes")
for _onnx, _make, _types in [
        ("ReduceSum", lambda x, axes, keep: _reduce("sum", x, axes, keep), FLOAT),
        ("ReduceMean", lambda x, axes, keep: _reduce("mean", x, axes, keep), FLOAT),
        ("ReduceMax", _also_bool(lambda x, axes, keep: _reduce("max", x, axes, keep)), FLOAT + BOOL),
        ("ReduceMin", _also_bool(_reduce_min), FLOAT + BOOL),
        ("ReduceProd", lambda x, axes, keep: _reduce("prod", x, axes, keep), FLOAT),
        ("ReduceL1", lambda x, axes, keep: _reduce("sum", apply("abs", [x]), axes, keep), FLOAT),
        ("ReduceL2", lambda x, axes, keep: apply("sqrt", [_square_sum(x, axes, keep)]), FLOAT),
        ("ReduceSumSquare", _square_sum, FLOAT),
        ("ReduceLogSum", lambda x, axes, keep: apply("log", [_reduce("sum", x, axes, keep)]), FLOAT),
        ("ReduceLogSumExp", _log_sum_exp, FLOAT)]:
    handler(_onnx, attrs=_REDUCE_ATTRS, dtypes=_types)(_reduction(_make))


def _arg(op: str):
    def run(c):
        attrs = {"axis": _axis(c, c.attr("axis", 0), c.rank(0)), "keepdims": bool(c.attr("keepdims", 1)),
                 "select_last_index": bool(c.attr("select_last_index", 0))}
        return apply(op, [c.x(0)], attrs)

    return run


handler("ArgMax", attrs=("axis", "keepdims", "select_last_index"), dtypes=NUMERIC)(_arg("argmax"))
handler("ArgMin", attrs=("axis", "keepdims", "select_last_index"), dtypes=NUMERIC)(_arg("argmin"))


# ---- losses ------------------------------------------------------------------------------------------------------
def _nll(c, scores, reduction: str):
    """NegativeLogLikelihoodLoss on log-probabilities [N, C, d...]: a one-hot mask picks each target's score."""
    target = c.x(1)
    shape = shape_of(scores)
    channels = shape[1]
    classes = np.arange(channels, dtype=_np_dtype(target)).reshape([1, channels] + [1] * (len(shape) - 2))
    mask = apply("equal", [_reshape(target, [shape[0], 1] + list(shape[2:])), classes])
    zero = _k(0, scores)
    loss = apply("neg", [_reduce("sum", apply("where", [mask, scores, zero]), [1], False)])
    weight = None
    if c.has(2):
        per_class = _reshape(c.x(2), [1, channels] + [1] * (len(shape) - 2))
        weight = _reduce("sum", apply("where", [mask, per_class, zero]), [1], False)
    ignore = c.attr("ignore_index")
    if ignore is not None:
        valid = _cast(apply("logical_not", [apply("equal", [target, _k(ignore, target)])]), _dtype(scores))
        weight = valid if weight is None else apply("mul", [weight, valid])
    if weight is not None:
        loss = apply("mul", [loss, weight])
    everything = list(range(len(shape) - 1))
    if reduction == "none":
        return loss
    if reduction == "sum":
        return _reduce("sum", loss, everything, False)
    if reduction != "mean":
        raise c.unsupported(f"reduction={reduction!r}")
    if weight is None:
        return _reduce("mean", loss, everything, False)
    return apply("div", [_reduce("sum", loss, everything, False), _reduce("sum", weight, everything, False)])


@handler("NegativeLogLikelihoodLoss", attrs=("reduction", "ignore_index"), dtypes=FLOAT)
def _nll_op(c):
    return _nll(c, c.x(0), c.attr("reduction", "mean"))


@handler("SoftmaxCrossEntropyLoss", attrs=("reduction", "ignore_index"), dtypes=FLOAT)
def _softmax_cross_entropy(c):
    log_prob = apply("log_softmax", [c.x(0)], {"axis": 1})
    return [_nll(c, log_prob, c.attr("reduction", "mean")), log_prob]
