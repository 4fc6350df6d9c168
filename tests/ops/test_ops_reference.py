"""Every op's numpy reference against an independent one: PyTorch's functional ops, its autograd for the
backward helpers, and torch.optim for the optimizer updates. All in float64, to near machine precision."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from nncc.ops import all_ops, get_op

from .cases import CASES, case_id, make_inputs

aten = torch.ops.aten


def _grad(fn, wrt: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
    """The vector-Jacobian product of ``fn`` at ``wrt`` with ``grad_output``, by torch.autograd."""
    wrt = wrt.detach().requires_grad_()
    (g,) = torch.autograd.grad(fn(wrt), wrt, grad_output)
    return g


def _conv(x, w, k, b=None):
    return TF.conv2d(x, w, b, k["stride"], k["padding"], k["dilation"], k["groups"])


def _max_pool(x, k):
    return TF.max_pool2d(x, k["kernel"], k["stride"], k["padding"], k["dilation"], ceil_mode=k["ceil_mode"])


def _avg_pool(x, k):
    assert k["dilation"] == [1, 1], "torch's avg_pool2d has no dilation"
    return TF.avg_pool2d(x, k["kernel"], k["stride"], k["padding"], ceil_mode=k["ceil_mode"],
                         count_include_pad=k["count_include_pad"])


def _sgd(p, g, buf, lr, step, k):
    p = p.clone()
    opt = torch.optim.SGD([p], lr=float(lr), momentum=k["momentum"], dampening=k["dampening"],
                          weight_decay=k["weight_decay"], nesterov=k["nesterov"])
    if step > 1:  # a later step: resume from the given momentum buffer
        opt.state[p]["momentum_buffer"] = buf.clone()
    p.grad = g
    opt.step()
    return p, opt.state[p]["momentum_buffer"]


def _adam(p, g, m, v, lr, step, k):
    p = p.clone()
    cls = torch.optim.AdamW if k["decoupled"] else torch.optim.Adam
    opt = cls([p], lr=float(lr), betas=(k["beta1"], k["beta2"]), eps=k["eps"], weight_decay=k["weight_decay"],
              foreach=False)
    opt.state[p].update(step=torch.tensor(float(step) - 1), exp_avg=m.clone(), exp_avg_sq=v.clone())
    p.grad = g
    opt.step()
    return p, opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"]


def _unary(fn):
    return lambda x, k: fn(x)


def _binary(fn):
    return lambda x, y, k: fn(x, y)


TORCH = {
    "add": _binary(torch.add), "sub": _binary(torch.sub), "mul": _binary(torch.mul), "div": _binary(torch.div),
    "pow": _binary(torch.pow), "maximum": _binary(torch.maximum), "minimum": _binary(torch.minimum),
    "neg": _unary(torch.neg), "abs": _unary(torch.abs), "sign": _unary(torch.sign), "exp": _unary(torch.exp),
    "log": _unary(torch.log), "sqrt": _unary(torch.sqrt), "rsqrt": _unary(torch.rsqrt),
    "relu": _unary(torch.relu), "sigmoid": _unary(torch.sigmoid), "tanh": _unary(torch.tanh),
    "leaky_relu": lambda x, k: TF.leaky_relu(x, k["alpha"]),
    "relu_backward": lambda x, g, k: aten.threshold_backward(g, x, 0),
    "leaky_relu_backward": lambda x, g, k: aten.leaky_relu_backward(g, x, k["alpha"], False),
    "sigmoid_backward": lambda y, g, k: aten.sigmoid_backward(g, y),
    "tanh_backward": lambda y, g, k: aten.tanh_backward(g, y),
    "greater": _binary(torch.gt), "greater_equal": _binary(torch.ge), "less": _binary(torch.lt),
    "less_equal": _binary(torch.le), "equal": _binary(torch.eq),
    "where": lambda c, x, y, k: torch.where(c, x, y),
    "cast": lambda x, k: x.to({"f32": torch.float32, "f64": torch.float64, "i64": torch.int64}[k["dtype"]]),
    "constant": lambda k: torch.tensor(k["value"]),
    "reshape": lambda x, k: x.reshape(k["shape"]), "transpose": lambda x, k: x.permute(k["perm"]),
    "concat": lambda *xs, k: torch.cat(xs, k["axis"]),
    "slice": lambda x, k: x.narrow(k["axis"], k["start"], k["stop"] - k["start"]),
    "broadcast_like": lambda x, like, k: x.broadcast_to(like.shape),
    "numel": lambda x, k: torch.tensor(math.prod(x.shape[a] for a in k["axes"]), dtype=torch.float32),
    "sum": lambda x, k: torch.sum(x, k["axes"], k["keepdims"]),
    "mean": lambda x, k: torch.mean(x, k["axes"], k["keepdims"]),
    "max": lambda x, k: torch.amax(x, k["axes"], k["keepdims"]),
    "softmax": lambda x, k: torch.softmax(x, k["axis"]), "log_softmax": lambda x, k: torch.log_softmax(x, k["axis"]),
    "matmul": lambda a, b, k: (a.T if k["transpose_a"] else a) @ (b.T if k["transpose_b"] else b),
    "conv2d": lambda x, w, *b, k: _conv(x, w, k, *b),
    "conv2d_backward_input": lambda gy, w, x, k: _grad(lambda x: _conv(x, w, k), x, gy),
    "conv2d_backward_weight": lambda x, gy, w, k: _grad(lambda w: _conv(x, w, k), w, gy),
    "max_pool2d": _max_pool, "avg_pool2d": _avg_pool,
    "max_pool2d_backward": lambda x, gy, k: _grad(lambda x: _max_pool(x, k), x, gy) *
    (x > 0 if k.get("relu_mask") else 1),  # the mask of a ReLU below, folded in
    "avg_pool2d_backward": lambda gy, x, k: _grad(lambda x: _avg_pool(x, k), x, gy),
    "cross_entropy": lambda x, t, k: TF.cross_entropy(x, t, reduction=k["reduction"],
                                                      label_smoothing=k["label_smoothing"]),
    "cross_entropy_backward": lambda x, t, g, k: _grad(
        lambda x: TF.cross_entropy(x, t, reduction=k["reduction"], label_smoothing=k["label_smoothing"]), x, g),
    "nll_loss": lambda x, t, k: TF.nll_loss(x, t, reduction=k["reduction"]),
    "nll_loss_backward": lambda x, t, g, k: _grad(lambda x: TF.nll_loss(x, t, reduction=k["reduction"]), x, g),
    "sgd_update": lambda p, g, buf, lr, step, k: _sgd(p, g, buf, lr, step, k),
    "adam_update": lambda p, g, m, v, lr, step, k: _adam(p, g, m, v, lr, step, k),
    "floor": _unary(torch.floor), "ceil": _unary(torch.ceil), "erf": _unary(torch.erf),
    "logical_not": _unary(torch.logical_not), "logical_and": _binary(torch.logical_and),
    "logical_or": _binary(torch.logical_or), "logical_xor": _binary(torch.logical_xor),
    "broadcast_to": lambda x, k: x.broadcast_to(k["shape"]),
    "prod": lambda x, k: _prod(x, k["axes"], k["keepdims"]),
    "batch_matmul": lambda a, b, k: (a.mT if k["transpose_a"] else a) @ (b.mT if k["transpose_b"] else b),
    "conv_transpose2d": lambda x, w, k: TF.conv_transpose2d(x, w, None, k["stride"], k["padding"], k["output_padding"],
                                                            k["groups"], k["dilation"]),
    "gather": lambda x, i, k: _gather(x, i, k["axis"]),
    "gather_backward": lambda g, i, x, k: _grad(lambda x: _gather(x, i, k["axis"]), x, g),
    "strided_slice": lambda x, k: _strided(x, k), "strided_slice_backward": lambda g, x, k: _grad(
        lambda x: _strided(x, k), x, g),
    "pad": lambda x, k: _pad(x, k), "pad_backward": lambda g, x, k: _grad(lambda x: _pad(x, k), x, g),
    "argmax": lambda x, k: _arg(torch.argmax, x, k), "argmin": lambda x, k: _arg(torch.argmin, x, k),
}


def _prod(x, axes, keepdims):
    for a in sorted((a % x.ndim for a in axes), reverse=True):
        x = x.prod(a, keepdim=keepdims)
    return x


def _gather(x, i, axis):
    axis %= x.ndim
    picked = x.index_select(axis, i.reshape(-1) % x.shape[axis])
    return picked.reshape(x.shape[:axis] + i.shape + x.shape[axis + 1:])


def _strided(x, k):
    for axis, start, stop, step in zip(k["axes"], k["starts"], k["stops"], k["steps"]):
        x = x.index_select(axis, torch.arange(start, stop, step))
    return x


def _pad(x, k):
    """torch.nn.functional.pad wants (start, end) pairs from the last axis back, and its own mode names."""
    rank = x.ndim
    pads = k["pads"]
    pairs = [v for a in reversed(range(rank)) for v in (pads[a], pads[a + rank])]
    while len(pairs) > 2 and pairs[-2:] == [0, 0]:  # torch's non-constant modes pad only the last axes
        pairs = pairs[:-2]
    mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}[k["mode"]]
    return TF.pad(x, pairs, mode=mode, value=k["value"]) if mode == "constant" else TF.pad(x, pairs, mode=mode)


def _arg(fn, x, k):
    axis = k["axis"] % x.ndim
    if k["select_last_index"]:
        return x.shape[axis] - 1 - _arg(fn, x.flip(axis), {**k, "select_last_index": False})
    return fn(x, axis, keepdim=k["keepdims"])

# Ops whose reference has no PyTorch twin, and the test that checks it instead.
EXEMPT = {"dropout": "nncc's masks come from its own counter-based hash, which torch cannot reproduce: "
                     "test_dropout_masks_are_reproducible_scaled_and_at_rate checks the reference's properties"}


def test_every_op_has_an_independent_reference_test():
    tested = {case[0] for case in CASES if case[0] in TORCH}
    missing = sorted(set(all_ops()) - tested - set(EXEMPT))
    assert not missing, f"ops whose reference is not checked against torch (add a case and a TORCH entry): {missing}"


@pytest.mark.parametrize("case", [c for c in CASES if c[0] in TORCH], ids=case_id)
def test_reference_matches_torch(case):
    op, _, attrs = case
    arrays = make_inputs(case, np.random.default_rng(1), np.float64)
    ours = get_op(op).reference(arrays, attrs)
    theirs = TORCH[op](*(torch.from_numpy(np.array(a)) for a in arrays), k=attrs)
    theirs = list(theirs) if isinstance(theirs, tuple) else [theirs]
    assert len(ours) == len(theirs)
    for i, (a, t) in enumerate(zip(ours, theirs)):
        a, t = np.asarray(a), t.detach().numpy()
        assert (a.dtype, a.shape) == (t.dtype, t.shape), f"{op} {attrs} output {i}"
        np.testing.assert_allclose(a, t, rtol=1e-10, atol=1e-12, err_msg=f"{op} {attrs} output {i}")


def test_dropout_masks_are_reproducible_scaled_and_at_rate():
    x = np.ones((4000,), np.float32)
    (a,) = get_op("dropout").reference([x, np.array(7, np.int64)], {"p": 0.25})
    (b,) = get_op("dropout").reference([x, np.array(7, np.int64)], {"p": 0.25})
    (c,) = get_op("dropout").reference([x, np.array(8, np.int64)], {"p": 0.25})
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.float32
    assert set(np.unique(a).tolist()) == {0.0, np.float32(1 / 0.75)}  # kept elements are scaled by 1 / (1 - p)
    assert 0.23 < (a == 0).mean() < 0.27
    (d,) = get_op("dropout").reference([x, np.array(7, np.int64)], {"p": 0.0})
    np.testing.assert_array_equal(d, x)
