"""The verifier: every value defined before use, every op known, every recorded type equal to its shape rule's."""
from __future__ import annotations

from ..errors import IRError, NNCCError
from .graph import Graph, Value


def verify(graph: Graph) -> Graph:
    """Raise IRError naming the first offending node; return the graph unchanged when it is well formed."""
    from ..ops.registry import get_op

    defined: set[Value] = set(graph.inputs)
    names = [v.name for v in graph.inputs]
    if len(set(names)) != len(names):
        raise IRError(f"graph '{graph.name}': duplicate input names {sorted({n for n in names if names.count(n) > 1})}")
    for index, node in enumerate(graph.nodes):
        where = f"graph '{graph.name}', node #{index} ({node.op}{', ' + node.label if node.label else ''})"
        for v in node.inputs:
            if v not in defined:
                raise IRError(f"{where}: input {v!r} is used before it is defined")
        try:
            expected = get_op(node.op).infer_types(node)
        except NNCCError as e:
            raise IRError(f"{where}: {e}") from e
        got = [o.type for o in node.outputs]
        if expected != got:
            raise IRError(
                f"{where}: recorded types {', '.join(map(str, got))} differ from the shape rule's "
                f"{', '.join(map(str, expected))}"
            )
        for o in node.outputs:
            if o.producer is not node:
                raise IRError(f"{where}: output {o!r} does not point back to its producer")
            defined.add(o)
    for v in graph.outputs:
        if v not in defined:
            raise IRError(f"graph '{graph.name}': output {v!r} is not defined in the graph")
    return graph
