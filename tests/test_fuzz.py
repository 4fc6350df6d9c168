"""Differential fuzzing: random small graphs, compiled with fusion and memory planning on and off, agree with
the numpy reference interpreter, forward and gradients."""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nncc.compiler import Program
from nncc.ir import GraphBuilder, TensorType
from nncc.passes.autodiff import differentiate
from nncc.reference import run_reference

UNARY = ["neg", "exp", "tanh", "sigmoid", "relu", "abs"]
BINARY = ["add", "sub", "mul", "maximum"]
INPUTS = {"x0": (2, 3), "x1": (3,), "x2": (2, 1)}


@st.composite
def programs(draw):
    """A list of (op, operand indices, attrs); operand i < the value count at that point."""
    steps = []
    count = len(INPUTS)
    for _ in range(draw(st.integers(2, 6))):
        kind = draw(st.sampled_from(["unary", "binary", "reduce", "softmax", "matmul"]))
        a = draw(st.integers(0, count - 1))
        if kind == "unary":
            steps.append((draw(st.sampled_from(UNARY)), [a], {}))
        elif kind == "binary":
            steps.append((draw(st.sampled_from(BINARY)), [a, draw(st.integers(0, count - 1))], {}))
        elif kind == "reduce":
            steps.append((draw(st.sampled_from(["sum", "mean", "max"])), [a], {"axes": [draw(st.integers(0, 1))]}))
        else:
            steps.append((kind, [a], {}))
        count += 1
    return steps


def build(steps):
    b = GraphBuilder("fuzz")
    values = [b.input(name, TensorType("f64", shape)) for name, shape in INPUTS.items()]
    weight = b.input("w", TensorType("f64", (3, 3)))
    for op, operands, attrs in steps:
        args = [_full(b, values[i], values[0]) for i in operands]
        if op in ("sum", "mean", "max"):
            values.append(b.add1(op, args, {**attrs, "keepdims": True}))
        elif op == "softmax":
            values.append(b.add1("softmax", args, {"axis": -1}))
        elif op == "matmul":
            values.append(b.add1("matmul", [args[0], weight], {"transpose_a": False, "transpose_b": False}))
        else:
            values.append(b.add1(op, args))
    terms = [b.add1("sum", [_full(b, v, values[0])], {"axes": [0, 1], "keepdims": False}) for v in values[3:]]
    loss = terms[0]
    for t in terms[1:]:
        loss = b.add1("add", [loss, t])
    return b.finish([loss] + values[3:])


def _full(b, v, like):
    """v broadcast to [2, 3] so every op sees compatible operands."""
    return v if v.type.shape == (2, 3) else b.add1("broadcast_like", [v, like])


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs(), st.integers(0, 2**31 - 1))
def test_random_graphs_agree_with_the_reference(steps, seed):
    graph = differentiate(build(steps), list(INPUTS))
    rng = np.random.default_rng(seed)
    feeds = {v.name: rng.standard_normal(v.type.shape) + 0.1 for v in graph.inputs}
    expected = run_reference(graph, [feeds[v.name] for v in graph.inputs])
    for fuse in (True, False):
        got = Program(graph.copy(), fuse=fuse)({k: v.copy() for k, v in feeds.items()})
        for i, (g, e) in enumerate(zip(got, expected)):
            np.testing.assert_allclose(g, e, rtol=1e-9, atol=1e-12, err_msg=f"output {i}, fuse={fuse}: {steps}")
