"""IR text printer. The text parses back (``parser.parse_graph``) to an equal graph.

Syntax::

    graph lenet(%x: f32[N,1,28,28], %conv1.weight: f32[6,1,5,5]) -> (f32[N,10]) {
      %0 = conv2d(%x, %conv1.weight) {stride=[1,1], padding=[2,2]} : f32[N,6,28,28] loc("conv1")
      return %0
    }
"""
from __future__ import annotations

import json
import re

import numpy as np

from .graph import Graph, Value
from .types import dtype_of

_PLAIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*\Z")  # \Z: "$" would let a trailing newline through
_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")  # a graph name printed bare


def format_name(name: str) -> str:
    """``%x`` for plain names, ``%"odd name"`` (JSON-quoted) for anything else."""
    return "%" + (name if _PLAIN_NAME.match(name) else json.dumps(name))


def format_attr(value) -> str:
    if isinstance(value, bool) or isinstance(value, np.bool_):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return _format_float(float(value))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_attr(v) for v in value) + "]"
    if isinstance(value, np.ndarray):
        shape = ",".join(str(d) for d in value.shape)
        flat = ", ".join(format_attr(v) for v in value.reshape(-1).tolist())
        return f"dense<{dtype_of(value.dtype)}[{shape}]>[{flat}]"
    raise TypeError(f"cannot print attribute value {value!r} of type {type(value).__name__}")


def _format_float(x: float) -> str:
    if x != x:
        return "nan"
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    text = repr(x)
    return text if any(c in text for c in ".e") else text + ".0"


def print_graph(graph: Graph) -> str:
    names: dict[Value, str] = {}
    for v in graph.inputs:
        names[v] = format_name(v.name)
    counter = 0
    body = []
    for node in graph.nodes:
        for out in node.outputs:
            names[out] = f"%{counter}"
            counter += 1
        lhs = ", ".join(names[o] for o in node.outputs)
        args = ", ".join(names[v] for v in node.inputs)
        attrs = ""
        if node.attrs:
            attrs = " {" + ", ".join(f"{k}={format_attr(v)}" for k, v in sorted(node.attrs.items())) + "}"
        types = ", ".join(str(o.type) for o in node.outputs)
        loc = f" loc({json.dumps(node.label)})" if node.label else ""
        body.append(f"  {lhs} = {node.op}({args}){attrs} : {types}{loc}")
    params = ", ".join(f"{names[v]}: {v.type}" for v in graph.inputs)
    results = ", ".join(str(v.type) for v in graph.outputs)
    body.append("  return " + ", ".join(names[v] for v in graph.outputs))
    name = graph.name if _WORD.match(graph.name) else json.dumps(graph.name)
    return f"graph {name}({params}) -> ({results}) {{\n" + "\n".join(body) + "\n}\n"
