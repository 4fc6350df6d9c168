"""dropout {p} (x, seed): inverted dropout with a counter-based hash (splitmix64 of seed and element index).

Masks are reproducible from the seed alone, identical on every backend, and need no stored state: the VJP
is the same op applied to the incoming gradient.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..ir.types import is_float
from .cuda_lowering import cuda_kernel
from .registry import OpDef, register

_GOLDEN, _MIX1, _MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def uniform_ref(seed: int, n: int) -> np.ndarray:
    """The float64 uniforms in [0, 1) that the kernels draw for elements 0..n-1."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed) * np.uint64(_GOLDEN) + np.arange(n, dtype=np.uint64) + np.uint64(_GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX2)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def _infer(types, attrs):
    x, seed = types
    if not is_float(x.dtype):
        raise ShapeError(f"needs a float input, got {x}")
    if seed.dtype != "i64" or seed.rank != 0:
        raise ShapeError(f"seed must be an i64 scalar, got {seed}")
    if not 0.0 <= attrs["p"] < 1.0:
        raise ShapeError(f"drop probability must be in [0, 1), got {attrs['p']}")
    return [x]


def _ref(xs, attrs):
    x, seed = xs
    p = attrs["p"]
    keep = uniform_ref(int(seed), x.size).reshape(x.shape) >= p
    return [(x * keep / (1.0 - p)).astype(x.dtype)]


def _vjp(b, node, grads, needs):
    return [b.add1("dropout", [grads[0], node.inputs[1]], node.attrs), None]


def _cpu(node, name):
    p = float(node.attrs["p"])
    return f"""def {name}(x, seed, out):
    xf = x.reshape(-1)
    of = out.reshape(-1)
    base = np.uint64(seed[()]) * np.uint64({_GOLDEN}) + np.uint64({_GOLDEN})
    for i in prange(xf.size):
        z = base + np.uint64(i)
        z = (z ^ (z >> np.uint64(30))) * np.uint64({_MIX1})
        z = (z ^ (z >> np.uint64(27))) * np.uint64({_MIX2})
        z = z ^ (z >> np.uint64(31))
        u = np.float64(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)
        of[i] = xf[i] * {1.0 / (1.0 - p)!r} if u >= {p!r} else 0.0"""


def _cuda(node, name):
    """The CPU kernel's loop body, one thread per element: the same hash gives the same mask."""
    p = float(node.attrs["p"])
    body = f"""    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    z = np.uint64(seed[()]) * np.uint64({_GOLDEN}) + np.uint64({_GOLDEN}) + np.uint64(i)
    z = (z ^ (z >> np.uint64(30))) * np.uint64({_MIX1})
    z = (z ^ (z >> np.uint64(27))) * np.uint64({_MIX2})
    z = z ^ (z >> np.uint64(31))
    u = np.float64(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)
    of[i] = xf[i] * {1.0 / (1.0 - p)!r} if u >= {p!r} else 0.0"""
    return cuda_kernel(name, "x, seed, out", "x.size", body)


register(OpDef("dropout", "kernel", _infer, _ref, vjp=_vjp, lower={"cpu": _cpu, "cuda": _cuda}))
