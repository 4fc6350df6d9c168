"""Scheduling: run each in-place update as early as it may, right after the last reader of what it overwrites.

An optimizer update (an op with ``inplace`` outputs) overwrites its parameter and state buffers, so it must
follow every other reader of them; placing it right there, instead of at the end of the step, ends its
gradient's life early (a smaller arena) and updates while the gradient is still in cache.
"""
from __future__ import annotations

from ..ir.graph import Graph, Node
from ..ops.registry import get_op


def schedule_updates(graph: Graph) -> Graph:
    updates = [n for n in graph.nodes if get_op(n.op).inplace]
    if not updates:
        return graph
    others = [n for n in graph.nodes if not get_op(n.op).inplace]
    position = {}  # node -> index in ``others`` after which it may run
    produced = {o: i for i, n in enumerate(others) for o in n.outputs}
    for node in updates:
        donors = {node.inputs[i] for i in get_op(node.op).inplace.values()}
        after = max((produced.get(v, -1) for v in node.inputs), default=-1)
        readers = [i for i, n in enumerate(others) if any(v in donors for v in n.inputs)]
        position[node] = max([after] + readers)
    order: list[Node] = [n for n in updates if position[n] < 0]
    for i, n in enumerate(others):
        order.append(n)
        order.extend(u for u in updates if position[u] == i)
    graph.nodes = order
    return graph
