"""Optimizer updates as ops, lowered in place: ``sgd_update`` and ``adam_update`` (PyTorch's update rules).

Both take the learning rate and the 1-based step count as f64 scalars so schedules need no recompilation.
Their outputs reuse the buffers of the parameter and state inputs (``inplace``), so an update costs no copy.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from .cuda_lowering import cuda_kernel
from .registry import OpDef, register


def _infer(n_state):
    def infer(types, attrs):
        p, g = types[0], types[1]
        states = types[2:2 + n_state]
        for t in [g, *states]:
            if t != p:
                raise ShapeError(f"gradient and optimizer state {t} must match the parameter {p}")
        for t in types[2 + n_state:]:
            if t.rank != 0 or t.dtype != "f64":
                raise ShapeError(f"lr and step must be f64 scalars, got {t}")
        return [p] * (1 + n_state)

    return infer


def _sgd_ref(xs, k):
    p, g, buf, lr, step = xs
    d = g + k["weight_decay"] * p
    if k["momentum"]:
        buf = d.copy() if step == 1 else k["momentum"] * buf + (1 - k["dampening"]) * d
        d = d + k["momentum"] * buf if k["nesterov"] else buf
    return [(p - lr * d).astype(p.dtype), buf.astype(p.dtype)]


def _typed(node):
    """(numpy type name, constant renderer) of the parameter's dtype. Constants typed like the parameter keep
    the arithmetic in float32, in PyTorch's order, so trajectories follow PyTorch's to float32 rounding."""
    np_name = {"f32": "np.float32", "f64": "np.float64"}[node.inputs[0].dtype]
    return np_name, lambda value: f"{np_name}({float(value)!r})"


def _sgd_cpu(node, name):
    k, (cast, c) = node.attrs, _typed(node)
    m, damp, wd = float(k["momentum"]), float(k["dampening"]), float(k["weight_decay"])
    direction = f"d + {c(m)} * b" if k["nesterov"] else "b"
    momentum = f"""        b = d if first else bi[i] * {c(m)} + d * {c(1 - damp)}
        bf[i] = b
        d = {direction}""" if m else ""
    return f"""def {name}(p, g, buf, lr, step, p_out, buf_out):
    pi, pf = p.reshape(-1), p_out.reshape(-1)
    gf = g.reshape(-1)
    bi, bf = buf.reshape(-1), buf_out.reshape(-1)
    rate = {cast}(lr[()])
    first = step[()] == 1
    for i in range(pf.size):
        d = gf[i] + pi[i] * {c(wd)}
{momentum}
        pf[i] = pi[i] - d * rate"""


def _adam_ref(xs, k):
    p, g, m, v, lr, step = xs
    b1, b2 = k["beta1"], k["beta2"]
    if k["decoupled"]:
        p = p * (1 - lr * k["weight_decay"])
    else:
        g = g + k["weight_decay"] * p
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    denom = np.sqrt(v) / np.sqrt(1 - b2 ** step) + k["eps"]
    p = p - (lr / (1 - b1 ** step)) * m / denom
    return [p.astype(xs[0].dtype), m.astype(xs[0].dtype), v.astype(xs[0].dtype)]


def _adam_cpu(node, name):
    k, (cast, c) = node.attrs, _typed(node)
    b1, b2, eps, wd = (float(k[a]) for a in ("beta1", "beta2", "eps", "weight_decay"))
    decay = f"        q = q * {cast}(1.0 - rate * {wd!r})" if k["decoupled"] else f"        d = d + q * {c(wd)}"
    return f"""def {name}(p, g, m, v, lr, step, p_out, m_out, v_out):
    pi, pf = p.reshape(-1), p_out.reshape(-1)
    gf = g.reshape(-1)
    mi_, mf = m.reshape(-1), m_out.reshape(-1)
    vi_, vf = v.reshape(-1), v_out.reshape(-1)
    rate = lr[()]
    t = step[()]
    step_size = {cast}(rate / (1.0 - {b1!r} ** t))
    root_c2 = {cast}(np.sqrt(1.0 - {b2!r} ** t))
    for i in range(pf.size):
        q = pi[i]
        d = gf[i]
{decay}
        mi = mi_[i] + (d - mi_[i]) * {c(1 - b1)}
        vi = vi_[i] * {c(b2)} + d * d * {c(1 - b2)}
        mf[i] = mi
        vf[i] = vi
        pf[i] = q - step_size * (mi / (np.sqrt(vi) / root_c2 + {c(eps)}))"""


def _as_cuda(cpu_lowering, params: str):
    """The CPU kernel's per-element body, run by one thread per element (the setup lines stay per thread)."""
    def lower(node, name):
        src = cpu_lowering(node, name)
        body = src.split("\n", 1)[1]
        setup, loop = body.split("    for i in range(pf.size):\n")
        loop = "\n".join(line[4:] for line in loop.split("\n"))
        setup = setup.replace(".reshape(-1)", ".reshape(p.size)")
        return cuda_kernel(name, params, "p.size", setup + loop)

    return lower


register(OpDef("sgd_update", "kernel", _infer(1), _sgd_ref, inplace={0: 0, 1: 2}, flat=True,
               lower={"cpu": _sgd_cpu, "cuda": _as_cuda(_sgd_cpu, "p, g, buf, lr, step, p_out, buf_out")}))
register(OpDef("adam_update", "kernel", _infer(2), _adam_ref, inplace={0: 0, 1: 2, 2: 3}, flat=True,
               lower={"cpu": _adam_cpu, "cuda": _as_cuda(_adam_cpu, "p, g, m, v, lr, step, p_out, m_out, v_out")}))
