"""Scheduling: the order of the graph's nodes, chosen for the kernels the fusion pass can form and for memory.

- A bias gradient (a sum over every axis but 1) that a later weight gradient could compute alongside its own
  output (OpDef.bias_grad: a conv's or a matrix product's, reading the same output gradient) moves right after
  that weight gradient, with what depends on it in between, so the fusion pass can fold it in. The VJP of
  ``matmul + bias`` yields the bias's sum before the weight's product.
- Each in-place update runs as early as it may, right after the last reader of what it overwrites. An
  optimizer update (an op with ``inplace`` outputs) overwrites its parameter and state buffers, so it must
  follow every other reader of them; placing it right there, instead of at the end of the step, ends its
  gradient's life early (a smaller arena) and updates while the gradient is still in cache.
"""
from __future__ import annotations

from ..ir.graph import Graph, Node
from ..ops.registry import get_op
from .fusion import bias_input, is_bias_sum


def schedule(graph: Graph) -> Graph:
    """Bias gradients after the weight gradients that can take them in, then updates as early as they may."""
    return schedule_updates(schedule_bias_sums(graph))


def schedule_bias_sums(graph: Graph) -> Graph:
    """Each bias sum, with the nodes between that depend on it, right after the first later weight gradient
    that can compute it (see the module's docstring); left in place where that weight gradient reads it."""
    for node in [n for n in graph.nodes if is_bias_sum(n)]:
        nodes = graph.nodes
        start = nodes.index(node)
        anchor = next((i for i in range(start + 1, len(nodes)) if bias_input(nodes[i]) is node.inputs[0]), None)
        if anchor is None or any(get_op(n.op).inplace for n in nodes[start:anchor]):
            continue  # an update in between may overwrite what the moved nodes read: left in place
        moved, made = [], set(node.outputs)  # the sum and what depends on it before the anchor
        for n in nodes[start:anchor + 1]:
            if n is node or made & set(n.inputs):
                moved.append(n)
                made.update(n.outputs)
        if nodes[anchor] in moved:  # the weight gradient needs the sum: it cannot take it in
            continue
        kept = [n for n in nodes[start:anchor + 1] if n not in moved]
        graph.nodes = nodes[:start] + kept + moved + nodes[anchor + 1:]
    return graph


def schedule_updates(graph: Graph) -> Graph:
    """Each in-place update right after the last reader of the buffers it overwrites and of its inputs."""
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
