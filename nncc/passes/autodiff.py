"""Reverse-mode autodiff as a graph-to-graph transform.

``differentiate(graph, wrt)`` appends, after the forward nodes, the backward nodes built from each op's VJP
rule (written in IR ops), and returns a graph whose outputs are the forward outputs followed by the gradient
of output 0 (a scalar loss) with respect to each input named in ``wrt``. The backward pass is ordinary IR:
it is simplified, fused, planned and lowered like any other graph.
"""
from __future__ import annotations

import numpy as np

from ..errors import IRError, UnsupportedError
from ..ir.builder import GraphBuilder
from ..ir.graph import Graph, Value
from ..ir.types import is_float
from ..ops.registry import get_op


def _requires_grad(graph: Graph, wrt: set[Value]) -> set[Value]:
    needs = set(wrt)
    for node in graph.nodes:
        if any(v in needs for v in node.inputs):
            needs.update(o for o in node.outputs if is_float(o.dtype))
    return needs


def differentiate(graph: Graph, wrt: list[str]) -> Graph:
    """Gradients of ``graph.outputs[0]`` (a scalar) w.r.t. the inputs named in ``wrt``, appended as outputs."""
    loss = graph.outputs[0]
    if loss.type.rank != 0 or not is_float(loss.dtype):
        raise IRError(f"autodiff needs a float scalar loss as output 0 of graph '{graph.name}', got {loss.type}")
    targets = [graph.input(name) for name in wrt]
    needs = _requires_grad(graph, set(targets))
    b = GraphBuilder(graph.name)
    b.inputs, b.nodes = list(graph.inputs), list(graph.nodes)
    grads: dict[Value, Value] = {}
    if loss in needs:
        b.label = "loss seed"
        grads[loss] = b.constant(np.ones((), loss.type.np_dtype))
    for node in reversed(graph.nodes):
        out_grads = [grads.get(o) for o in node.outputs]
        if all(g is None for g in out_grads):
            continue
        input_needs = [v in needs for v in node.inputs]
        if not any(input_needs):
            continue
        op = get_op(node.op)
        if op.vjp is None:
            raise UnsupportedError(f"{node.describe()} has no gradient rule, but a parameter's gradient flows "
                                   f"through it")
        if len(node.outputs) > 1 and any(g is None for g in out_grads):
            raise UnsupportedError(f"{node.describe()}: gradients of only some outputs are not supported")
        b.label = f"grad of {node.label}" if node.label else f"grad of {node.op}"
        in_grads = op.vjp(b, node, out_grads, input_needs)
        for v, g, need in zip(node.inputs, in_grads, input_needs):
            if need and g is not None:
                _accumulate(b, grads, v, g)
    b.label = "zero gradient"
    results = [grads.get(t) or b.add1("mul", [t, b.constant(np.zeros((), t.type.np_dtype))]) for t in targets]
    return b.finish(graph.outputs + results)


def _accumulate(b: GraphBuilder, grads: dict[Value, Value], v: Value, g: Value) -> None:
    if g.type != v.type:
        raise IRError(f"gradient rule produced {g.type} for a value of type {v.type}")
    grads[v] = b.add1("add", [grads[v], g]) if v in grads else g
