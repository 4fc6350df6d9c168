"""The graph IR: SSA values with a type, nodes with an op name and attributes, graphs with inputs and outputs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from .types import TensorType


class Value:
    """An SSA value: produced by exactly one node, or a graph input (``producer is None``)."""

    __slots__ = ("type", "name", "producer")

    def __init__(self, type: TensorType, name: str | None = None, producer: "Node | None" = None):
        self.type = type
        self.name = name
        self.producer = producer

    @property
    def shape(self):
        return self.type.shape

    @property
    def dtype(self) -> str:
        return self.type.dtype

    def __repr__(self) -> str:
        return f"Value({self.name or hex(id(self))}: {self.type})"


@dataclass(eq=False)
class Node:
    """``outputs = op(inputs) {attrs}``. ``label`` is the model's name for it (a layer path), shown in comments."""

    op: str
    inputs: list[Value]
    attrs: dict[str, Any]
    outputs: list[Value] = field(default_factory=list)
    label: str = ""

    def describe(self) -> str:
        """A short human description used in error messages: op, label and input types."""
        where = f" (from {self.label})" if self.label else ""
        types = ", ".join(str(v.type) for v in self.inputs)
        return f"node '{self.op}'{where} with inputs ({types})"


class Graph:
    """A function from input values to output values through a topologically ordered list of nodes."""

    def __init__(self, name: str, inputs: list[Value], nodes: list[Node], outputs: list[Value]):
        self.name = name
        self.inputs = inputs
        self.nodes = nodes
        self.outputs = outputs

    def input(self, name: str) -> Value:
        for v in self.inputs:
            if v.name == name:
                return v
        raise KeyError(f"graph '{self.name}' has no input named {name!r}")

    def users(self) -> dict[Value, list[Node]]:
        """Map from each value to the nodes that read it."""
        uses: dict[Value, list[Node]] = {}
        for node in self.nodes:
            for v in node.inputs:
                uses.setdefault(v, []).append(node)
        return uses

    def values(self) -> Iterator[Value]:
        yield from self.inputs
        for node in self.nodes:
            yield from node.outputs

    def replace_uses(self, old: Value, new: Value) -> None:
        """Make every reader of ``old`` (nodes and graph outputs) read ``new`` instead."""
        for node in self.nodes:
            node.inputs = [new if v is old else v for v in node.inputs]
        self.outputs = [new if v is old else v for v in self.outputs]

    def copy(self) -> "Graph":
        """A deep copy of the structure (fresh Values and Nodes; attribute values shared)."""
        mapping: dict[Value, Value] = {v: Value(v.type, v.name) for v in self.inputs}
        nodes = []
        for node in self.nodes:
            new = Node(node.op, [mapping[v] for v in node.inputs], dict(node.attrs), [], node.label)
            for out in node.outputs:
                mapping[out] = Value(out.type, out.name, new)
                new.outputs.append(mapping[out])
            nodes.append(new)
        return Graph(self.name, [mapping[v] for v in self.inputs], nodes, [mapping[v] for v in self.outputs])

    def __str__(self) -> str:
        from .printer import print_graph

        return print_graph(self)
