"""Every op: compiled CPU kernels against the numpy reference, the reference against PyTorch, and every VJP
rule against float64 central finite differences."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from nncc.compiler import Program
from nncc.ir import GraphBuilder, TensorType, dtype_of
from nncc.ops import all_ops, get_op
from nncc.passes.autodiff import differentiate
from nncc.reference import run_reference

from .cases import CASES, EXEMPT, make_input


def _inputs(case, rng, float_dtype=np.float32):
    arrays = []
    for spec in case[1]:
        arrays.append(make_input(spec, rng, float_dtype, arrays[0] if arrays else None))
    return arrays


def test_every_op_has_a_case_or_a_reasoned_exemption():
    covered = {case[0] for case in CASES} | set(EXEMPT)
    assert set(all_ops()) <= covered, f"ops without tests: {sorted(set(all_ops()) - covered)}"


def test_compiled_kernels_match_the_reference():
    """All cases in one graph, so the whole table costs one module compile."""
    rng = np.random.default_rng(0)
    b = GraphBuilder("all_ops")
    feeds, expected, outputs = {}, [], []
    for i, case in enumerate(CASES):
        arrays = _inputs(case, rng)
        values = [b.input(f"c{i}_{j}", TensorType(dtype_of(a.dtype), a.shape)) for j, a in enumerate(arrays)]
        feeds.update({v.name: a for v, a in zip(values, arrays)})
        outs = b.add(case[0], values, case[2])
        outputs.extend(outs)
        expected.extend((case, r) for r in get_op(case[0]).reference(arrays, case[2]))
    program = Program(b.finish(outputs))
    got = program({k: v.copy() for k, v in feeds.items()})
    for (case, want), have in zip(expected, got):
        np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-6, err_msg=f"{case[0]} {case[2]}")


def _t(a):
    return torch.tensor(a)


TORCH = {
    "sigmoid": lambda x, k: torch.sigmoid(x), "tanh": lambda x, k: torch.tanh(x),
    "leaky_relu": lambda x, k: TF.leaky_relu(x, k["alpha"]), "softmax": lambda x, k: torch.softmax(x, k["axis"]),
    "log_softmax": lambda x, k: torch.log_softmax(x, k["axis"]),
    "conv2d": lambda x, w, *b, k: TF.conv2d(x, w, b[0] if b else None, k["stride"], k["padding"], k["dilation"],
                                            k["groups"]),
    "max_pool2d": lambda x, k: TF.max_pool2d(x, k["kernel"], k["stride"], k["padding"], k["dilation"],
                                             ceil_mode=k["ceil_mode"]),
    "avg_pool2d": lambda x, k: TF.avg_pool2d(x, k["kernel"], k["stride"], k["padding"], ceil_mode=k["ceil_mode"],
                                             count_include_pad=k["count_include_pad"]),
    "cross_entropy": lambda x, t, k: TF.cross_entropy(x, t, reduction=k["reduction"],
                                                      label_smoothing=k["label_smoothing"]),
    "nll_loss": lambda x, t, k: TF.nll_loss(x, t, reduction=k["reduction"]),
    "max": lambda x, k: torch.amax(x, k["axes"], k["keepdims"]),
}


@pytest.mark.parametrize("case", [c for c in CASES if c[0] in TORCH], ids=lambda c: f"{c[0]}-{c[2]}")
def test_reference_matches_torch(case):
    arrays = _inputs(case, np.random.default_rng(1), np.float64)
    (ours,) = get_op(case[0]).reference(arrays, case[2])
    fn = TORCH[case[0]]
    theirs = fn(*map(_t, arrays), k=case[2]) if case[0] == "conv2d" else fn(*map(_t, arrays), case[2])
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["conv2d", "max_pool2d", "avg_pool2d", "cross_entropy", "nll_loss"])
def test_backward_ops_match_torch_autograd(name):
    """The backward helper ops, reached through the VJP rules, equal torch.autograd's gradients."""
    for case in [c for c in CASES if c[0] == name]:
        arrays = _inputs(case, np.random.default_rng(2), np.float64)
        grads = _vjp_grads(case, arrays, np.random.default_rng(3))
        ts = [_t(a).requires_grad_(a.dtype.kind == "f") for a in arrays]
        fn = TORCH[name]
        out = fn(*ts, k=case[2]) if name == "conv2d" else fn(*ts, case[2])
        weights = _weights(out.shape, np.random.default_rng(3))
        (out * _t(weights)).sum().backward()
        for g, t in zip(grads, ts):
            if t.requires_grad:
                np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-9, atol=1e-10, err_msg=f"{name} {case[2]}")


def _weights(shape, rng):
    return rng.standard_normal(shape)


def _scalar_loss_graph(case, arrays, weights):
    b = GraphBuilder("vjp")
    values = [b.input(f"x{j}", TensorType(dtype_of(a.dtype), a.shape)) for j, a in enumerate(arrays)]
    (y,) = b.add(case[0], values, case[2])[:1]
    w = b.input("w", TensorType("f64", weights.shape))
    loss = b.add1("sum", [b.add1("mul", [y, w])], {"axes": list(range(len(weights.shape))), "keepdims": False})
    return b.finish([loss]), [v.name for v, a in zip(values, arrays) if a.dtype == np.float64]


def _vjp_grads(case, arrays, rng):
    (y,) = get_op(case[0]).reference(arrays, case[2])[:1]
    weights = _weights(np.shape(y), rng)
    graph, wrt = _scalar_loss_graph(case, arrays, weights)
    outs = run_reference(differentiate(graph, wrt), arrays + [weights])
    grads = iter(outs[1:])
    return [next(grads) if a.dtype == np.float64 else None for a in arrays]


DIFFERENTIABLE = [c for c in CASES if get_op(c[0]).vjp is not None and c[0] not in ("sgd_update", "adam_update")]


@pytest.mark.parametrize("case", DIFFERENTIABLE, ids=lambda c: f"{c[0]}-{c[2]}")
def test_vjp_matches_finite_differences(case):
    rng = np.random.default_rng(4)
    arrays = _inputs(case, rng, np.float64)
    grads = _vjp_grads(case, arrays, np.random.default_rng(5))
    (y,) = get_op(case[0]).reference(arrays, case[2])[:1]
    weights = _weights(np.shape(y), np.random.default_rng(5))

    def loss(xs):
        return float((get_op(case[0]).reference(xs, case[2])[0] * weights).sum())

    eps = 1e-6
    for j, (a, g) in enumerate(zip(arrays, grads)):
        if g is None or case[0] in ("sign", "greater", "equal"):
            continue
        numeric = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            plus, minus = [x.copy() for x in arrays], [x.copy() for x in arrays]
            plus[j][idx] += eps
            minus[j][idx] -= eps
            numeric[idx] = (loss(plus) - loss(minus)) / (2 * eps)
        np.testing.assert_allclose(g, numeric, rtol=1e-5, atol=1e-7, err_msg=f"{case[0]} input {j}")


def test_optimizer_updates_match_torch_optim():
    rng = np.random.default_rng(6)
    p, g = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    tp = _t(p.copy()).requires_grad_()
    opt = torch.optim.Adam([tp], lr=0.05, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    m = v = np.zeros_like(p)
    ours = p
    for step in range(1, 4):
        tp.grad = _t(g)
        opt.step()
        ours, m, v = get_op("adam_update").reference(
            [ours, g, m, v, np.array(0.05), np.array(float(step))],
            {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01, "decoupled": False})
    np.testing.assert_allclose(ours, tp.detach().numpy(), rtol=1e-10)
    tp = _t(p.copy()).requires_grad_()
    opt = torch.optim.SGD([tp], lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)
    ours, buf = p, np.zeros_like(p)
    for step in range(1, 4):
        tp.grad = _t(g)
        opt.step()
        ours, buf = get_op("sgd_update").reference(
            [ours, g, buf, np.array(0.05), np.array(float(step))],
            {"momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01, "nesterov": False})
    np.testing.assert_allclose(ours, tp.detach().numpy(), rtol=1e-10)


def test_dropout_masks_are_reproducible_and_scaled():
    x = np.ones((1000,), np.float32)
    (a,) = get_op("dropout").reference([x, np.array(7, np.int64)], {"p": 0.25})
    (b,) = get_op("dropout").reference([x, np.array(7, np.int64)], {"p": 0.25})
    (c,) = get_op("dropout").reference([x, np.array(8, np.int64)], {"p": 0.25})
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert set(np.unique(a).tolist()) == {0.0, np.float32(1 / 0.75)}
    assert 0.2 < (a == 0).mean() < 0.3
