"""Elementwise ops: numpy-broadcasting arithmetic, activations, comparisons and their backward helpers.

Each op is one scalar expression (``scalar``) that the codegen places inside a loop nest, alone or fused
with its neighbours. ``c(x)`` renders a constant in the kernel's float dtype so float32 math stays float32.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ShapeError
from ..ir.types import TensorType, broadcast_shapes, is_float
from .registry import OpDef, register
from .vjp_util import scalar, unbroadcast


def _broadcast_rule(result_dtype: str | None = None, float_only: bool = True):
    def infer(types, attrs):
        dtypes = {t.dtype for t in types}
        if len(dtypes) != 1:
            raise ShapeError(f"operands have different dtypes {sorted(dtypes)}; insert a cast")
        dtype = dtypes.pop()
        if float_only and not is_float(dtype):
            raise ShapeError(f"needs float operands, got {dtype}")
        shape = broadcast_shapes(*(t.shape for t in types))
        if shape is None:
            raise ShapeError(f"shapes {' and '.join(str(t) for t in types)} do not broadcast")
        return [TensorType(result_dtype or dtype, shape)]

    return infer


def _def(name, arity, ref, expr, vjp=None, result_dtype=None, float_only=True):
    """Register an elementwise op: ``ref`` is the numpy reference, ``expr`` the scalar expression."""

    def reference(xs, attrs):
        out = ref(*xs, **attrs)
        return [np.asarray(out)]

    def infer(types, attrs):
        if len(types) != arity:
            raise ShapeError(f"takes {arity} operands, got {len(types)}")
        return _broadcast_rule(result_dtype, float_only)(types, attrs)

    register(OpDef(name, "elementwise", infer, reference, vjp=vjp, scalar=expr))


def _same_dtype(fn):
    """numpy reference that keeps the operands' dtype (numpy would promote scalars and 0-d arrays)."""
    return lambda *xs, **kw: np.asarray(fn(*xs, **kw)).astype(xs[0].dtype, copy=False)


# ---- arithmetic -------------------------------------------------------------------------------------------
def _add_vjp(b, node, grads, needs):
    (g,) = grads
    return [unbroadcast(b, g, v) if n else None for v, n in zip(node.inputs, needs)]


def _sub_vjp(b, node, grads, needs):
    (g,) = grads
    x, y = node.inputs
    return [unbroadcast(b, g, x) if needs[0] else None,
            unbroadcast(b, b.add1("neg", [g]), y) if needs[1] else None]


def _mul_vjp(b, node, grads, needs):
    (g,) = grads
    x, y = node.inputs
    return [unbroadcast(b, b.add1("mul", [g, y]), x) if needs[0] else None,
            unbroadcast(b, b.add1("mul", [g, x]), y) if needs[1] else None]


def _div_vjp(b, node, grads, needs):
    (g,) = grads
    x, y = node.inputs
    gx = b.add1("div", [g, y]) if any(needs) else None
    gy = None
    if needs[1]:  # -g * x / y^2 = -(g / y) * (x / y)
        gy = unbroadcast(b, b.add1("neg", [b.add1("mul", [gx, b.add1("div", [x, y])])]), y)
    return [unbroadcast(b, gx, x) if needs[0] else None, gy]


def _pow_vjp(b, node, grads, needs):
    (g,) = grads
    x, e = node.inputs
    (y,) = node.outputs
    gx = ge = None
    if needs[0]:  # g * e * x^(e-1)
        em1 = b.add1("sub", [e, scalar(b, 1.0, e)])
        gx = unbroadcast(b, b.add1("mul", [g, b.add1("mul", [e, b.add1("pow", [x, em1])])]), x)
    if needs[1]:  # g * y * log(x)
        ge = unbroadcast(b, b.add1("mul", [g, b.add1("mul", [y, b.add1("log", [x])])]), e)
    return [gx, ge]


def _minmax_vjp(pick_first):
    def vjp(b, node, grads, needs):
        (g,) = grads
        x, y = node.inputs
        first = b.add1(pick_first, [x, y])  # ties send the gradient to the first operand
        zero = scalar(b, 0.0, g)
        return [unbroadcast(b, b.add1("where", [first, g, zero]), x) if needs[0] else None,
                unbroadcast(b, b.add1("where", [first, zero, g]), y) if needs[1] else None]

    return vjp


_def("add", 2, _same_dtype(np.add), lambda a, k, c: f"{a[0]} + {a[1]}", _add_vjp, float_only=False)
_def("sub", 2, _same_dtype(np.subtract), lambda a, k, c: f"{a[0]} - {a[1]}", _sub_vjp, float_only=False)
_def("mul", 2, _same_dtype(np.multiply), lambda a, k, c: f"{a[0]} * {a[1]}", _mul_vjp, float_only=False)
_def("div", 2, _same_dtype(np.divide), lambda a, k, c: f"{a[0]} / {a[1]}", _div_vjp)
_def("pow", 2, _same_dtype(np.power), lambda a, k, c: f"{a[0]} ** {a[1]}", _pow_vjp)
_def("maximum", 2, _same_dtype(np.maximum), lambda a, k, c: f"max({a[0]}, {a[1]})", _minmax_vjp("greater_equal"),
     float_only=False)
_def("minimum", 2, _same_dtype(np.minimum), lambda a, k, c: f"min({a[0]}, {a[1]})", _minmax_vjp("less_equal"),
     float_only=False)


# ---- unary math -------------------------------------------------------------------------------------------
def _unary_vjp(make):
    """VJP of a unary op from ``make(b, x, y, g) -> grad``."""
    return lambda b, node, grads, needs: [make(b, node.inputs[0], node.outputs[0], grads[0])]


_def("neg", 1, _same_dtype(np.negative), lambda a, k, c: f"-{a[0]}",
     _unary_vjp(lambda b, x, y, g: b.add1("neg", [g])), float_only=False)
_def("abs", 1, _same_dtype(np.abs), lambda a, k, c: f"abs({a[0]})",
     _unary_vjp(lambda b, x, y, g: b.add1("mul", [g, b.add1("sign", [x])])), float_only=False)
_def("sign", 1, _same_dtype(np.sign), lambda a, k, c: f"np.sign({a[0]})",
     _unary_vjp(lambda b, x, y, g: b.add1("mul", [g, scalar(b, 0.0, g)])))
_def("exp", 1, _same_dtype(np.exp), lambda a, k, c: f"np.exp({a[0]})",
     _unary_vjp(lambda b, x, y, g: b.add1("mul", [g, y])))
_def("log", 1, _same_dtype(np.log), lambda a, k, c: f"np.log({a[0]})",
     _unary_vjp(lambda b, x, y, g: b.add1("div", [g, x])))
_def("sqrt", 1, _same_dtype(np.sqrt), lambda a, k, c: f"np.sqrt({a[0]})",
     _unary_vjp(lambda b, x, y, g: b.add1("div", [g, b.add1("mul", [y, scalar(b, 2.0, y)])])))
_def("rsqrt", 1, _same_dtype(lambda x: 1 / np.sqrt(x)), lambda a, k, c: f"{c(1.0)} / np.sqrt({a[0]})",
     _unary_vjp(lambda b, x, y, g: b.add1("mul", [g, b.add1("mul", [scalar(b, -0.5, y),
                                                                    b.add1("pow", [y, scalar(b, 3.0, y)])])])))


# ---- activations ------------------------------------------------------------------------------------------
# relu's VJP masks with its output (positive exactly where its input is, as PyTorch's does): a max-pool reading
# that output then folds the mask into its own backward (passes/simplify.py), and the input need not outlive
# the forward pass
_def("relu", 1, _same_dtype(lambda x: np.maximum(x, 0)), lambda a, k, c: f"max({a[0]}, {c(0.0)})",
     _unary_vjp(lambda b, x, y, g: b.add1("relu_backward", [y, g])))
_def("relu_backward", 2, _same_dtype(lambda x, g: np.where(x > 0, g, 0)),
     lambda a, k, c: f"{a[1]} if {a[0]} > {c(0.0)} else {c(0.0)}")
_def("leaky_relu", 1, _same_dtype(lambda x, alpha: np.where(x > 0, x, alpha * x)),
     lambda a, k, c: f"{a[0]} if {a[0]} > {c(0.0)} else {c(k['alpha'])} * {a[0]}",
     lambda b, node, grads, needs: [b.add1("leaky_relu_backward", [node.inputs[0], grads[0]], node.attrs)])
_def("leaky_relu_backward", 2, _same_dtype(lambda x, g, alpha: np.where(x > 0, g, alpha * g)),
     lambda a, k, c: f"{a[1]} if {a[0]} > {c(0.0)} else {c(k['alpha'])} * {a[1]}")
_def("sigmoid", 1, _same_dtype(lambda x: 1 / (1 + np.exp(-x))),
     lambda a, k, c: f"{c(1.0)} / ({c(1.0)} + np.exp(-{a[0]}))",
     _unary_vjp(lambda b, x, y, g: b.add1("sigmoid_backward", [y, g])))
_def("sigmoid_backward", 2, _same_dtype(lambda y, g: g * y * (1 - y)),
     lambda a, k, c: f"{a[1]} * {a[0]} * ({c(1.0)} - {a[0]})")
_def("tanh", 1, _same_dtype(np.tanh), lambda a, k, c: f"np.tanh({a[0]})",
     _unary_vjp(lambda b, x, y, g: b.add1("tanh_backward", [y, g])))
_def("tanh_backward", 2, _same_dtype(lambda y, g: g * (1 - y * y)),
     lambda a, k, c: f"{a[1]} * ({c(1.0)} - {a[0]} * {a[0]})")


# ---- comparisons and selection ----------------------------------------------------------------------------
for _name, _fn, _sym in [("greater", np.greater, ">"), ("greater_equal", np.greater_equal, ">="),
                         ("less", np.less, "<"), ("less_equal", np.less_equal, "<="), ("equal", np.equal, "==")]:
    _def(_name, 2, _fn, lambda a, k, c, s=_sym: f"{a[0]} {s} {a[1]}", result_dtype="bool", float_only=False)


def _where_infer(types, attrs):
    cond, x, y = types
    if cond.dtype != "bool":
        raise ShapeError(f"condition must be bool, got {cond}")
    out = _broadcast_rule(float_only=False)([x, y], attrs)[0]
    shape = broadcast_shapes(cond.shape, out.shape)
    if shape is None:
        raise ShapeError(f"condition {cond} does not broadcast with {out}")
    return [out.with_shape(shape)]


def _where_vjp(b, node, grads, needs):
    (g,) = grads
    cond, x, y = node.inputs
    zero = scalar(b, 0.0, g)
    return [None,
            unbroadcast(b, b.add1("where", [cond, g, zero]), x) if needs[1] else None,
            unbroadcast(b, b.add1("where", [cond, zero, g]), y) if needs[2] else None]


register(OpDef("where", "elementwise", _where_infer,
               lambda xs, k: [np.asarray(np.where(*xs)).astype(xs[1].dtype, copy=False)],
               vjp=_where_vjp, scalar=lambda a, k, c: f"{a[1]} if {a[0]} else {a[2]}"))


def _cast_infer(types, attrs):
    (t,) = types
    return [t.with_dtype(attrs["dtype"])]


def _cast_vjp(b, node, grads, needs):
    src = node.inputs[0]
    return [b.add1("cast", [grads[0]], {"dtype": src.dtype}) if is_float(src.dtype) else None]


register(OpDef("cast", "elementwise", _cast_infer,
               lambda xs, k: [xs[0].astype(TensorType(k["dtype"], ()).np_dtype)],
               vjp=_cast_vjp, scalar=lambda a, k, c: f"{c.cast(k['dtype'])}({a[0]})"))


# ---- rounding, erf and logic (ONNX's Floor, Ceil, Erf, Not, And, Or, Xor) ------------------------------------
def _zero_grad(b, x, y, g):
    return b.add1("mul", [g, scalar(b, 0.0, g)])


_erf_ref = np.vectorize(math.erf, otypes=[np.float64])  # the reference is for correctness, not speed


_def("floor", 1, _same_dtype(np.floor), lambda a, k, c: f"np.floor({a[0]})", _unary_vjp(_zero_grad))
_def("ceil", 1, _same_dtype(np.ceil), lambda a, k, c: f"np.ceil({a[0]})", _unary_vjp(_zero_grad))
_def("erf", 1, _same_dtype(_erf_ref), lambda a, k, c: f"math.erf({a[0]})",  # d/dx erf = 2/sqrt(pi) exp(-x^2)
     _unary_vjp(lambda b, x, y, g: b.add1("mul", [g, b.add1("mul", [
         scalar(b, 2.0 / np.sqrt(np.pi), x), b.add1("exp", [b.add1("neg", [b.add1("mul", [x, x])])])])])))


def _logic(name: str, arity: int, ref, expr) -> None:
    def infer(types, attrs):
        if len(types) != arity or any(t.dtype != "bool" for t in types):
            raise ShapeError(f"takes {arity} bool operand(s), got {', '.join(map(str, types))}")
        return _broadcast_rule(float_only=False)(types, attrs)

    register(OpDef(name, "elementwise", infer, lambda xs, k: [np.asarray(ref(*xs))], scalar=expr))


_logic("logical_not", 1, np.logical_not, lambda a, k, c: f"not {a[0]}")
_logic("logical_and", 2, np.logical_and, lambda a, k, c: f"{a[0]} & {a[1]}")
_logic("logical_or", 2, np.logical_or, lambda a, k, c: f"{a[0]} | {a[1]}")
_logic("logical_xor", 2, np.logical_xor, lambda a, k, c: f"{a[0]} != {a[1]}")
