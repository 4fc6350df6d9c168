"""Tracing: running a Module's ``forward`` on ``Tensor`` proxies records IR nodes.

Every functional op goes through ``apply``: with a Tensor among its inputs it appends a node to the active
trace; with only numpy arrays it runs the op's numpy reference at once (eager mode, handy for debugging).
"""
from __future__ import annotations

import contextlib
from typing import Any, Optional

import numpy as np

from ..ir.builder import GraphBuilder
from ..ir.graph import Value
from ..ir.types import TensorType, dtype_of
from ..ops.registry import get_op


class Trace:
    """The state of one tracing run: the builder, the graph input of each parameter, buffer updates."""

    def __init__(self, builder: GraphBuilder, training: bool):
        self.builder = builder
        self.training = training
        self.param_values: dict[int, Value] = {}  # id(Parameter or buffer array) -> graph input
        self.buffer_updates: dict[int, Value] = {}  # id(buffer array) -> its new value
        self.seed: Optional[Value] = None  # the dropout seed input, created on first use
        self.dropout_count = 0

    def dropout_seed(self) -> Value:
        if self.seed is None:
            self.seed = self.builder.input("dropout_seed", TensorType("i64", ()))
        return self.seed


_ACTIVE: list[Trace] = []


@contextlib.contextmanager
def tracing(trace: Trace):
    _ACTIVE.append(trace)
    try:
        yield trace
    finally:
        _ACTIVE.pop()


def active_trace() -> Optional[Trace]:
    return _ACTIVE[-1] if _ACTIVE else None


@contextlib.contextmanager
def label(path: str):
    """Attribute the nodes created inside to the layer at ``path`` (shown in IR dumps and errors)."""
    trace = active_trace()
    if trace is None:
        yield
        return
    saved = trace.builder.label
    trace.builder.label = path
    try:
        yield
    finally:
        trace.builder.label = saved


class Tensor:
    """A traced value. Supports the arithmetic and methods PyTorch code uses on tensors."""

    __array_priority__ = 1000  # numpy defers to our operators: ndarray + Tensor -> Tensor.__radd__

    def __init__(self, value: Value):
        self.value = value

    @property
    def shape(self) -> tuple:
        return tuple(self.value.type.shape)

    @property
    def dtype(self) -> str:
        return self.value.type.dtype

    @property
    def ndim(self) -> int:
        return self.value.type.rank

    def size(self, dim: Optional[int] = None):
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> int:
        return self.ndim

    def __repr__(self) -> str:
        return f"Tensor({self.value.type})"

    # arithmetic
    def __add__(self, o): return apply("add", [self, o])
    def __radd__(self, o): return apply("add", [o, self])
    def __sub__(self, o): return apply("sub", [self, o])
    def __rsub__(self, o): return apply("sub", [o, self])
    def __mul__(self, o): return apply("mul", [self, o])
    def __rmul__(self, o): return apply("mul", [o, self])
    def __truediv__(self, o): return apply("div", [self, o])
    def __rtruediv__(self, o): return apply("div", [o, self])
    def __pow__(self, o): return apply("pow", [self, o])
    def __neg__(self): return apply("neg", [self])
    def __abs__(self): return apply("abs", [self])
    def __gt__(self, o): return apply("greater", [self, o])
    def __lt__(self, o): return apply("less", [self, o])
    def __ge__(self, o): return apply("greater_equal", [self, o])
    def __le__(self, o): return apply("less_equal", [self, o])

    def __matmul__(self, o):
        from .nn import functional as F
        return F.matmul(self, o)

    def __getattr__(self, name: str):
        # tensor methods (x.relu(), x.mean(1), x.view(...)) are the functional ops with x first
        from .nn import functional as F
        fn = getattr(F, _METHOD_ALIASES.get(name, name), None)
        if fn is None or name.startswith("_"):
            raise AttributeError(f"Tensor has no attribute {name!r}")
        return lambda *args, **kwargs: fn(self, *args, **kwargs)


_METHOD_ALIASES = {"view": "reshape", "permute": "permute", "amax": "max"}


def to_value(x: Any, like_dtype: str = "f32") -> Value:
    """The IR value of an operand: a Tensor's value, a parameter's graph input, or a new constant."""
    trace = active_trace()
    if isinstance(x, Tensor):
        return x.value
    if isinstance(x, np.ndarray) and id(x) in trace.param_values:
        return trace.param_values[id(x)]
    if isinstance(x, np.generic):
        return trace.builder.constant(np.asarray(x))
    if isinstance(x, (int, float, bool)):
        dtype = like_dtype if not isinstance(x, bool) else "bool"
        return trace.builder.constant(x, dtype)
    return trace.builder.constant(np.asarray(x))


def apply(op: str, inputs: list, attrs: Optional[dict] = None, n_outputs: int = 1):
    """Run ``op`` on tensors (traced) or numpy arrays (eager, via the numpy reference)."""
    attrs = attrs or {}
    trace = active_trace()
    if trace is not None and any(isinstance(x, Tensor) or (isinstance(x, np.ndarray) and id(x) in trace.param_values)
                                 for x in inputs):
        dtype = next((x.dtype if isinstance(x, Tensor) else dtype_of(x.dtype) for x in inputs
                      if isinstance(x, (Tensor, np.ndarray))), "f32")
        values = [to_value(x, dtype) for x in inputs]
        outs = [Tensor(v) for v in trace.builder.add(op, values, attrs)]
    else:
        arrays = [_eager_array(x, inputs) for x in inputs]
        outs = get_op(op).reference(arrays, attrs)
    return outs[0] if n_outputs == 1 else tuple(outs)


def _eager_array(x, inputs) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return np.asarray(x)
    like = next((a for a in inputs if isinstance(a, np.ndarray) and a.dtype.kind == "f"), None)
    dtype = like.dtype if like is not None else np.float32
    if isinstance(x, bool):
        return np.asarray(x)
    arr = np.asarray(x)
    if arr.dtype.kind in "fiu" and not isinstance(x, np.generic):
        arr = arr.astype(dtype)
    dtype_of(arr.dtype)
    return arr

