"""Shape inference: recompute every node's output types from its inputs with the ops' shape rules.

Frontends call it after building a graph; it also propagates new input types (say a fixed batch size)
through an existing graph.
"""
from __future__ import annotations

from ..ir.graph import Graph
from ..ops.registry import get_op


def infer_shapes(graph: Graph) -> Graph:
    for node in graph.nodes:
        types = get_op(node.op).infer_types(node)
        for out, t in zip(node.outputs, types):
            out.type = t
    return graph
