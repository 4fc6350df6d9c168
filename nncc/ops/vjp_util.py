"""Helpers shared by VJP rules: undoing broadcasting and building small scalar constants."""
from __future__ import annotations


def unbroadcast(b, grad, target):
    """Sum ``grad`` over the axes along which ``target`` (a Value) was broadcast, giving target's shape."""
    gshape, tshape = grad.type.shape, target.type.shape
    if gshape == tshape:
        return grad
    lead = len(gshape) - len(tshape)
    axes = list(range(lead)) + [lead + i for i, d in enumerate(tshape) if d == 1 and gshape[lead + i] != 1]
    if axes:
        grad = b.add1("sum", [grad], {"axes": axes, "keepdims": True})
    if grad.type.shape != tshape:
        grad = b.add1("reshape", [grad], {"shape": list(tshape)})
    return grad


def scalar(b, value: float, like):
    """A rank-0 constant of ``like``'s dtype."""
    return b.constant(value, like.type.dtype)
