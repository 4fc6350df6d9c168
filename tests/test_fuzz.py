"""Differential fuzzing: random small graphs of elementwise, reduction, softmax and matmul ops, differentiated
and compiled with fusion (and memory planning) on and off, agree with the numpy reference interpreter.

Each example compiles two modules, so the examples are few and derandomized: the same graphs every run, whose
modules the kernel cache keeps, so only the first run pays for compiling them.
"""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nncc.compiler import Program
from nncc.ir import GraphBuilder, TensorType
from nncc.passes.autodiff import differentiate
from nncc.reference import run_reference

UNARY = ["neg", "exp", "tanh", "sigmoid", "relu", "abs"]
BINARY = ["add", "sub", "mul", "maximum", "minimum"]
INPUTS = {"x0": ("N", 3), "x1": (3,), "x2": ("N", 1)}  # N: the symbolic batch size, 2 at run time


@st.composite
def programs(draw):
    """A list of (kind, op, operand indices, axis); operand i indexes the values defined before the step."""
    steps = []
    count = len(INPUTS)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["unary", "binary", "select", "reduce", "softmax", "matmul"]))
        a, b = draw(st.integers(0, count - 1)), draw(st.integers(0, count - 1))
        op = {"unary": st.sampled_from(UNARY), "binary": st.sampled_from(BINARY),
              "reduce": st.sampled_from(["sum", "mean", "max"])}.get(kind, st.just(kind))
        steps.append((kind, draw(op), [a, b], draw(st.integers(0, 1))))
        count += 1
    return steps


def build(steps):
    """The program as a graph whose output 0 (the loss) sums every value it computes, returned as well.

    Operands broadcast numpy-style ([N,1] with [3] gives [N,3]), so fused loop nests index broadcast inputs.
    """
    b = GraphBuilder("fuzz")
    values = [b.input(name, TensorType("f64", shape)) for name, shape in INPUTS.items()]
    weight = b.input("w", TensorType("f64", (3, 3)))
    for kind, op, (i, j), axis in steps:
        x, y = values[i], values[j]
        if kind == "unary":
            values.append(b.add1(op, [x]))
        elif kind == "binary":
            values.append(b.add1(op, [x, y]))
        elif kind == "select":  # where(x > y, x, y): a comparison on the path of the gradient
            values.append(b.add1("where", [b.add1("greater", [x, y]), x, y]))
        elif kind == "reduce":
            values.append(b.add1(op, [x], {"axes": [axis % x.type.rank], "keepdims": True}))
        elif kind == "softmax":
            values.append(b.add1("softmax", [x], {"axis": axis % x.type.rank}))
        else:  # matmul needs a [N, 3] operand
            full = x if x.type.shape == ("N", 3) else b.add1("broadcast_like", [x, values[0]])
            values.append(b.add1("matmul", [full, weight], {"transpose_a": False, "transpose_b": bool(axis)}))
    computed = values[len(INPUTS):]
    terms = [b.add1("sum", [v], {"axes": list(range(v.type.rank)), "keepdims": False}) for v in computed]
    loss = terms[0]
    for t in terms[1:]:
        loss = b.add1("add", [loss, t])
    return b.finish([loss] + computed)


@settings(max_examples=20, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs(), st.integers(0, 2**31 - 1))
def test_random_graphs_agree_with_the_reference(steps, seed):
    graph = differentiate(build(steps), list(INPUTS) + ["w"])
    rng = np.random.default_rng(seed)
    feeds = {v.name: rng.standard_normal([2 if d == "N" else d for d in v.type.shape]) + 0.1 for v in graph.inputs}
    expected = run_reference(graph, [feeds[v.name] for v in graph.inputs])
    for fuse in (True, False):
        got = Program(graph.copy(), fuse=fuse)({k: v.copy() for k, v in feeds.items()})
        assert len(got) == len(expected)
        for i, (g, e) in enumerate(zip(got, expected)):
            np.testing.assert_allclose(g, e, rtol=1e-9, atol=1e-12, err_msg=f"output {i}, fuse={fuse}: {steps}")
