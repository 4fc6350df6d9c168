"""The numpy reference interpreter: runs a graph op by op with each op's numpy reference.

Every backend is checked against it, and the divergence finder walks it node by node.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from .ir.graph import Graph, Node, Value
from .ops.registry import get_op


def run_reference(graph: Graph, feeds: list[np.ndarray],
                  on_node: Optional[Callable[[Node, list[np.ndarray]], None]] = None) -> list[np.ndarray]:
    """Evaluate ``graph`` on ``feeds`` (one array per graph input, in order). Example::

        (y,) = run_reference(graph, [x, w1, b1, ...])
    """
    env: dict[Value, np.ndarray] = {v: np.asarray(a) for v, a in zip(graph.inputs, feeds)}
    for node in graph.nodes:
        outs = get_op(node.op).reference([env[v] for v in node.inputs], node.attrs)
        for v, a in zip(node.outputs, outs):
            env[v] = np.asarray(a, dtype=v.type.np_dtype)
        if on_node is not None:
            on_node(node, [env[v] for v in node.outputs])
    return [env[v] for v in graph.outputs]
