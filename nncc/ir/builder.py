"""GraphBuilder: appends nodes and infers their output types with each op's shape rule."""
from __future__ import annotations

from typing import Any

import numpy as np

from .graph import Graph, Node, Value
from .types import TensorType, dtype_of


class GraphBuilder:
    """Builds a graph node by node. Example::

        b = GraphBuilder("f")
        x = b.input("x", TensorType("f32", ("N", 4)))
        (y,) = b.add("relu", [x])
        g = b.finish([y])
    """

    def __init__(self, name: str):
        self.name = name
        self.inputs: list[Value] = []
        self.nodes: list[Node] = []
        self.label = ""  # the layer path that new nodes are attributed to

    def input(self, name: str, type: TensorType) -> Value:
        v = Value(type, name)
        self.inputs.append(v)
        return v

    def add(self, op: str, inputs: list[Value], attrs: dict[str, Any] | None = None) -> list[Value]:
        from ..ops.registry import get_op

        node = Node(op, list(inputs), dict(attrs or {}), [], self.label)
        types = get_op(op).infer_types(node)
        node.outputs = [Value(t, None, node) for t in types]
        self.nodes.append(node)
        return node.outputs

    def add1(self, op: str, inputs: list[Value], attrs: dict[str, Any] | None = None) -> Value:
        """``add`` for single-output ops."""
        (out,) = self.add(op, inputs, attrs)
        return out

    def constant(self, value, dtype: str | None = None) -> Value:
        arr = np.asarray(value, dtype=None if dtype is None else TensorType(dtype, ()).np_dtype)
        if dtype is None and arr.dtype == np.float64 and not isinstance(value, (np.ndarray, np.generic)):
            arr = arr.astype(np.float32)  # Python floats default to f32, as torch's do
        dtype_of(arr.dtype)  # rejects unsupported dtypes early
        return self.add1("constant", [], {"value": arr})

    def finish(self, outputs: list[Value]) -> Graph:
        return Graph(self.name, self.inputs, self.nodes, list(outputs))
