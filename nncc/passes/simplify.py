"""Simplification passes: constant folding, algebraic cleanups, common-subexpression elimination, DCE."""
from __future__ import annotations

import numpy as np

from ..ir.graph import Graph, Node, Value
from ..ir.printer import format_attr
from ..ops.registry import get_op

# Ops that are never folded: their value depends on run-time sizes or must stay visible.
_NO_FOLD = {"constant", "numel", "broadcast_like"}
_FOLD_LIMIT = 1 << 20  # elements; larger results stay computed at run time


def fold_constants(graph: Graph) -> Graph:
    """Evaluate nodes whose inputs are all constants with the numpy reference; replace them by constants."""
    values: dict[Value, np.ndarray] = {}
    new_nodes = []
    for node in graph.nodes:
        if node.op == "constant":
            values[node.outputs[0]] = node.attrs["value"]
        elif (node.op not in _NO_FOLD and node.inputs and all(v in values for v in node.inputs)
              and all(o.type.is_static() and o.type.numel_static() <= _FOLD_LIMIT for o in node.outputs)):
            results = get_op(node.op).reference([values[v] for v in node.inputs], node.attrs)
            for out, arr in zip(node.outputs, results):
                const = Node("constant", [], {"value": np.asarray(arr, out.type.np_dtype)}, [], node.label)
                const.outputs = [Value(out.type, None, const)]
                values[const.outputs[0]] = const.attrs["value"]
                new_nodes.append(const)
                graph.replace_uses(out, const.outputs[0])
            continue
        new_nodes.append(node)
    graph.nodes = new_nodes
    return eliminate_dead_code(graph)


def simplify_algebra(graph: Graph) -> Graph:
    """Remove no-op reshapes and transposes, merge reshape chains, spell out a reshape's -1 (the reference
    cannot infer it beside a symbolic size: ``x.reshape(x.shape[0], -1)`` traces to ["N", -1]), and fold a ReLU
    mask on a max-pool's input into the max-pool's backward (``_fold_relu_mask``)."""
    users = graph.users()
    for node in graph.nodes:
        out = node.outputs[0] if node.outputs else None
        if node.op == "reshape":
            if -1 in node.attrs["shape"]:
                node.attrs = {**node.attrs, "shape": list(out.type.shape)}
            src = node.inputs[0]
            if src.producer is not None and src.producer.op == "reshape":
                node.inputs = [src.producer.inputs[0]]
                src = node.inputs[0]
            if src.type == out.type:
                graph.replace_uses(out, src)
        elif node.op == "transpose" and list(node.attrs["perm"]) == list(range(len(node.attrs["perm"]))):
            graph.replace_uses(out, node.inputs[0])
        elif node.op == "relu_backward":
            _fold_relu_mask(graph, node, users)
    return eliminate_dead_code(graph)


def _fold_relu_mask(graph: Graph, node: Node, users: dict[Value, list[Node]]) -> None:
    """relu_backward(x, max_pool2d_backward(x, gy)) -> max_pool2d_backward(x, gy) {relu_mask=true}: each
    window's gradient reaches its first maximum only where that maximum is positive, which is where the mask
    would have kept it. The pool's backward then writes the masked gradient directly (no second pass over the
    plane, no unmasked gradient in memory); relu's VJP masks with the pool's input, relu's output."""
    x, grad = node.inputs
    pool = grad.producer
    if (pool is not None and pool.op == "max_pool2d_backward" and pool.inputs[0] is x
            and users.get(grad) == [node] and grad not in graph.outputs):
        pool.attrs = {**pool.attrs, "relu_mask": True}
        graph.replace_uses(node.outputs[0], grad)


def _key(node: Node, ids: dict[Value, int]):
    attrs = tuple(sorted((k, format_attr(v)) for k, v in node.attrs.items()))
    return node.op, tuple(ids[v] for v in node.inputs), attrs


def eliminate_common_subexpressions(graph: Graph) -> Graph:
    """Nodes with the same op, inputs and attributes compute the same values: keep the first."""
    ids = {v: i for i, v in enumerate(graph.values())}
    seen: dict[tuple, Node] = {}
    kept = []
    for node in graph.nodes:
        key = _key(node, ids)
        first = seen.get(key)
        if first is None:
            seen[key] = node
            kept.append(node)
            continue
        for old, new in zip(node.outputs, first.outputs):
            graph.replace_uses(old, new)
            ids[old] = ids[new]
    graph.nodes = kept
    return graph


def eliminate_dead_code(graph: Graph) -> Graph:
    """Drop nodes none of whose outputs reach a graph output. Graph inputs are kept (the signature is fixed)."""
    live: set[Value] = set(graph.outputs)
    kept = []
    for node in reversed(graph.nodes):
        if any(o in live for o in node.outputs):
            kept.append(node)
            live.update(node.inputs)
    graph.nodes = kept[::-1]
    return graph
