"""``nncc.nn.functional``: PyTorch-style functions that build IR when traced and run numpy when eager.

Example::

    from nncc.nn import functional as F
    y = F.relu(F.linear(x, w, b))
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ...errors import ShapeError
from ..tracing import Tensor, active_trace, apply


def _pair(v):
    return list(v) if isinstance(v, (list, tuple)) else [int(v), int(v)]


def _shape(x) -> tuple:
    return tuple(x.shape)


def _rank(x) -> int:
    return len(_shape(x))


def _axes(dim, rank) -> list[int]:
    if dim is None:
        return list(range(rank))
    return [int(d) for d in (dim if isinstance(dim, (list, tuple)) else [dim])]


# ---- elementwise -------------------------------------------------------------------------------------------
def add(a, b): return apply("add", [a, b])
def sub(a, b): return apply("sub", [a, b])
def mul(a, b): return apply("mul", [a, b])
def div(a, b): return apply("div", [a, b])
def neg(x): return apply("neg", [x])
def abs(x): return apply("abs", [x])  # noqa: A001 - PyTorch's name
def exp(x): return apply("exp", [x])
def log(x): return apply("log", [x])
def sqrt(x): return apply("sqrt", [x])
def rsqrt(x): return apply("rsqrt", [x])
def pow(x, exponent): return apply("pow", [x, exponent])  # noqa: A001
def maximum(a, b): return apply("maximum", [a, b])
def minimum(a, b): return apply("minimum", [a, b])
def relu(x, inplace: bool = False): return apply("relu", [x])
def sigmoid(x): return apply("sigmoid", [x])
def tanh(x): return apply("tanh", [x])
def where(cond, a, b): return apply("where", [cond, a, b])


def leaky_relu(x, negative_slope: float = 0.01, inplace: bool = False):
    return apply("leaky_relu", [x], {"alpha": float(negative_slope)})


# ---- reductions ----------------------------------------------------------------------------------------------
def sum(x, dim=None, keepdim: bool = False):  # noqa: A001
    return apply("sum", [x], {"axes": _axes(dim, _rank(x)), "keepdims": keepdim})


def mean(x, dim=None, keepdim: bool = False):
    return apply("mean", [x], {"axes": _axes(dim, _rank(x)), "keepdims": keepdim})


def max(x, dim=None, keepdim: bool = False):  # noqa: A001
    """The maximum over ``dim`` (values only, like ``torch.amax``)."""
    return apply("max", [x], {"axes": _axes(dim, _rank(x)), "keepdims": keepdim})


def softmax(x, dim: int = -1):
    return apply("softmax", [x], {"axis": int(dim)})


def log_softmax(x, dim: int = -1):
    return apply("log_softmax", [x], {"axis": int(dim)})


# ---- shapes ----------------------------------------------------------------------------------------------------
def reshape(x, *shape):
    if len(shape) == 1 and isinstance(shape[0], (list, tuple)):
        shape = tuple(shape[0])
    return apply("reshape", [x], {"shape": list(shape)})


def flatten(x, start_dim: int = 1, end_dim: int = -1):
    shape = list(_shape(x))
    end = end_dim % len(shape)
    merged = shape[start_dim:end + 1]
    if any(isinstance(d, str) for d in merged) and len(merged) > 1:
        raise ShapeError(f"flatten({start_dim}, {end_dim}) of {shape} would merge the symbolic batch dimension")
    size = int(np.prod([d for d in merged])) if merged else 1
    return reshape(x, shape[:start_dim] + [merged[0] if len(merged) == 1 else size] + shape[end + 1:])


def transpose(x, dim0: int, dim1: int):
    perm = list(range(_rank(x)))
    perm[dim0], perm[dim1] = perm[dim1], perm[dim0]
    return apply("transpose", [x], {"perm": perm})


def permute(x, *dims):
    if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
        dims = tuple(dims[0])
    return apply("transpose", [x], {"perm": [d % _rank(x) for d in dims]})


def cat(tensors: Sequence, dim: int = 0):
    return apply("concat", list(tensors), {"axis": int(dim)})


# ---- layers ----------------------------------------------------------------------------------------------------
def matmul(a, b):
    if _rank(a) != 2 or _rank(b) != 2:
        raise ShapeError(f"matmul supports 2-D operands, got {_shape(a)} @ {_shape(b)}")
    return apply("matmul", [a, b], {"transpose_a": False, "transpose_b": False})


def linear(x, weight, bias=None):
    """``x @ weight.T + bias`` with PyTorch's [out_features, in_features] weight layout."""
    if _rank(x) != 2:
        lead = list(_shape(x)[:-1])
        flat = reshape(x, [-1 if any(isinstance(d, str) for d in lead) else int(np.prod(lead)), _shape(x)[-1]])
        y = linear(flat, weight, bias)
        return reshape(y, lead + [_shape(weight)[0]])
    y = apply("matmul", [x, weight], {"transpose_a": False, "transpose_b": True})
    return y if bias is None else add(y, bias)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups: int = 1):
    if isinstance(padding, str):
        raise ShapeError(f"conv2d padding={padding!r}: give the padding as ints")
    attrs = {"stride": _pair(stride), "padding": _pair(padding), "dilation": _pair(dilation), "groups": int(groups)}
    return apply("conv2d", [x, weight] + ([bias] if bias is not None else []), attrs)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False):
    attrs = {"kernel": _pair(kernel_size), "stride": _pair(stride if stride is not None else kernel_size),
             "padding": _pair(padding), "dilation": _pair(dilation), "ceil_mode": bool(ceil_mode)}
    return apply("max_pool2d", [x], attrs)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode: bool = False, count_include_pad: bool = True):
    attrs = {"kernel": _pair(kernel_size), "stride": _pair(stride if stride is not None else kernel_size),
             "padding": _pair(padding), "dilation": [1, 1], "ceil_mode": bool(ceil_mode),
             "count_include_pad": bool(count_include_pad)}
    return apply("avg_pool2d", [x], attrs)


def dropout(x, p: float = 0.5, training: bool = True, inplace: bool = False):
    """Inverted dropout. When traced in training mode its mask comes from the step's ``dropout_seed`` input."""
    if not training or p == 0.0:
        return x
    trace = active_trace()
    if trace is None or not isinstance(x, Tensor):
        raise ShapeError("dropout in training mode runs only inside a compiled training step")
    # each dropout layer gets its own stream: seed * 1000003 + layer index
    trace.dropout_count += 1
    seed = add(mul(Tensor(trace.dropout_seed()), np.int64(1000003)), np.int64(trace.dropout_count))
    return apply("dropout", [x, seed], {"p": float(p)})


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5):
    """PyTorch's batch_norm over axis 1; in training mode it returns (y, new_mean, new_var)."""
    rank = _rank(x)
    axes = [0] + list(range(2, rank))
    stat_shape = [1, _shape(x)[1]] + [1] * (rank - 2)
    if training:
        mean_ = mean(x, axes, keepdim=True)
        centered = sub(x, mean_)
        var = mean(mul(centered, centered), axes, keepdim=True)
        y = mul(centered, rsqrt(add(var, eps)))
    else:
        y = mul(sub(x, reshape(running_mean, stat_shape)), rsqrt(add(reshape(running_var, stat_shape), eps)))
    if weight is not None:
        y = add(mul(y, reshape(weight, stat_shape)), reshape(bias, stat_shape))
    if not training:
        return y
    n = apply("numel", [x], {"axes": axes, "dtype": "f32" if not isinstance(x, Tensor) else x.dtype})
    unbiased = mul(reshape(var, [_shape(x)[1]]), div(n, sub(n, 1.0)))
    new_mean = add(mul(running_mean, 1.0 - momentum), mul(reshape(mean_, [_shape(x)[1]]), momentum))
    new_var = add(mul(running_var, 1.0 - momentum), mul(unbiased, momentum))
    return y, new_mean, new_var


# ---- losses ------------------------------------------------------------------------------------------------------
def cross_entropy(input, target, reduction: str = "mean", label_smoothing: float = 0.0):
    return apply("cross_entropy", [input, target],
                 {"reduction": reduction, "label_smoothing": float(label_smoothing)})


def nll_loss(input, target, reduction: str = "mean"):
    return apply("nll_loss", [input, target], {"reduction": reduction})


def _reduce(per_element, reduction: str):
    if reduction == "mean":
        return mean(per_element)
    if reduction == "sum":
        return sum(per_element)
    if reduction == "none":
        return per_element
    raise ShapeError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def mse_loss(input, target, reduction: str = "mean"):
    d = sub(input, target)
    return _reduce(mul(d, d), reduction)


def l1_loss(input, target, reduction: str = "mean"):
    return _reduce(abs(sub(input, target)), reduction)


def binary_cross_entropy_with_logits(input, target, reduction: str = "mean"):
    """max(x, 0) - x*y + log(1 + exp(-|x|)), the numerically stable form."""
    per = add(sub(relu(input), mul(input, target)), log(add(exp(neg(abs(input))), 1.0)))
    return _reduce(per, reduction)


__all__ = [n for n in dir() if not n.startswith("_") and n not in ("annotations", "np", "Optional", "Sequence",
                                                                      "ShapeError", "Tensor", "active_trace", "apply")]
