"""The autodiff pass: golden IR text, whole-network gradients against finite differences, and its errors."""
import dataclasses

import numpy as np
import pytest

from nncc.compiler import SIMPLIFY
from nncc.errors import IRError, UnsupportedError
from nncc.ir import GraphBuilder, TensorType, parse_graph, print_graph, verify
from nncc.ops import get_op, registry
from nncc.passes.autodiff import differentiate
from nncc.passes.manager import PassManager
from nncc.reference import run_reference

FORWARD = """graph g(%x: f64[N,3], %w: f64[3], %unused: f64[2]) -> (f64[]) {
  %0 = mul(%x, %w) : f64[N,3]
  %1 = exp(%x) : f64[N,3]
  %2 = add(%0, %1) : f64[N,3]
  %3 = sum(%2) {axes=[0, 1], keepdims=false} : f64[]
  return %3
}
"""
# x feeds two nodes, so its gradient is the sum of two contributions (%12); w was broadcast over N, so its
# gradient is summed over N (%10, %11); the input that does not reach the loss gets a zero gradient (%14)
BACKWARD = """graph g(%x: f64[N,3], %w: f64[3], %unused: f64[2]) -> (f64[], f64[N,3], f64[3], f64[2]) {
  %0 = mul(%x, %w) : f64[N,3]
  %1 = exp(%x) : f64[N,3]
  %2 = add(%0, %1) : f64[N,3]
  %3 = sum(%2) {axes=[0, 1], keepdims=false} : f64[]
  %4 = constant() {value=dense<f64[]>[1.0]} : f64[] loc("loss seed")
  %5 = reshape(%4) {shape=[1, 1]} : f64[1,1] loc("grad of sum")
  %6 = broadcast_like(%5, %2) : f64[N,3] loc("grad of sum")
  %7 = mul(%6, %1) : f64[N,3] loc("grad of exp")
  %8 = mul(%6, %w) : f64[N,3] loc("grad of mul")
  %9 = mul(%6, %x) : f64[N,3] loc("grad of mul")
  %10 = sum(%9) {axes=[0], keepdims=true} : f64[1,3] loc("grad of mul")
  %11 = reshape(%10) {shape=[3]} : f64[3] loc("grad of mul")
  %12 = add(%7, %8) : f64[N,3] loc("grad of mul")
  %13 = constant() {value=dense<f64[]>[0.0]} : f64[] loc("zero gradient")
  %14 = mul(%unused, %13) : f64[2] loc("zero gradient")
  return %3, %12, %11, %14
}
"""


def test_golden_backward_graph():
    assert print_graph(verify(differentiate(parse_graph(FORWARD), ["x", "w", "unused"]))) == BACKWARD


CONV = {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1}
POOL = {"kernel": [2, 2], "stride": [2, 2], "padding": [0, 0], "dilation": [1, 1], "ceil_mode": False}
SHAPES = {"x": (2, 1, 6, 6), "w1": (3, 1, 3, 3), "b1": (3,), "w2": (27, 4), "b2": (4,)}


def _network():
    """conv -> relu -> max pool -> flatten -> linear -> swish (a value used twice) -> max(h, -h) (a comparison
    on the path) -> cross entropy with label smoothing: every kind of op a training step differentiates."""
    b = GraphBuilder("net")
    v = {name: b.input(name, TensorType("f64", shape)) for name, shape in SHAPES.items()}
    labels = b.input("labels", TensorType("i64", (2,)))
    h = b.add1("relu", [b.add1("conv2d", [v["x"], v["w1"], v["b1"]], CONV)])
    h = b.add1("reshape", [b.add1("max_pool2d", [h], POOL)], {"shape": [2, 27]})
    h = b.add1("add", [b.add1("matmul", [h, v["w2"]], {"transpose_a": False, "transpose_b": False}), v["b2"]])
    h = b.add1("mul", [h, b.add1("sigmoid", [h])])
    neg = b.add1("neg", [h])
    h = b.add1("where", [b.add1("greater", [h, neg]), h, neg])
    loss = b.add1("cross_entropy", [h, labels], {"reduction": "mean", "label_smoothing": 0.1})
    return b.finish([loss])


def _network_feeds():
    rng = np.random.default_rng(0)
    feeds = {name: rng.standard_normal(shape) * 0.5 for name, shape in SHAPES.items()}
    feeds["labels"] = np.array([1, 3])
    return feeds


def test_backward_graph_of_a_network_equals_finite_differences():
    forward = _network()
    feeds = _network_feeds()
    order = [v.name for v in forward.inputs]
    grads = run_reference(verify(differentiate(forward.copy(), list(SHAPES))), [feeds[n] for n in order])[1:]

    def loss(f):
        return float(run_reference(forward, [f[n] for n in order])[0])

    eps = 1e-6
    for name, grad in zip(SHAPES, grads):
        numeric = np.zeros(SHAPES[name])
        for idx in np.ndindex(numeric.shape):
            plus = {**feeds, name: feeds[name].copy()}
            minus = {**feeds, name: feeds[name].copy()}
            plus[name][idx] += eps
            minus[name][idx] -= eps
            numeric[idx] = (loss(plus) - loss(minus)) / (2 * eps)
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8, err_msg=name)


def test_simplifying_a_backward_graph_keeps_its_values():
    graph = differentiate(parse_graph(FORWARD), ["x", "w", "unused"])
    rng = np.random.default_rng(1)
    args = [rng.standard_normal((2, 3)), rng.standard_normal(3), rng.standard_normal(2)]
    before = run_reference(graph, args)
    simplified = PassManager(SIMPLIFY).run(graph.copy())
    assert len(simplified.nodes) < len(graph.nodes)  # the seed's reshape is folded
    for a, b in zip(run_reference(simplified, args), before):
        np.testing.assert_allclose(a, b, rtol=1e-15, atol=0)


def test_the_loss_must_be_a_float_scalar():
    graph = parse_graph(FORWARD.replace("f64[]", "f64[3]").replace("axes=[0, 1]", "axes=[0]"))
    with pytest.raises(IRError, match=r"autodiff needs a float scalar loss as output 0 of graph 'g', got f64\[3\]"):
        differentiate(graph, ["x"])


def test_an_op_without_a_gradient_rule_on_the_path_is_named(monkeypatch):
    monkeypatch.setitem(registry._OPS, "exp", dataclasses.replace(get_op("exp"), vjp=None))
    graph = parse_graph(FORWARD.replace(" : f64[N,3]\n  %2", ' : f64[N,3] loc("act")\n  %2'))
    with pytest.raises(UnsupportedError, match=r"node 'exp' \(from act\) .* has no gradient rule"):
        differentiate(graph, ["x"])
    differentiate(parse_graph(FORWARD), ["w"])  # exp is off the path from w: no rule needed


def test_an_unknown_input_is_named():
    with pytest.raises(KeyError, match="graph 'g' has no input named 'bias'"):
        differentiate(parse_graph(FORWARD), ["bias"])
