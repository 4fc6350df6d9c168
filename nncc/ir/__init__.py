"""The graph IR: types, values, nodes, graphs, builder, printer, parser and verifier."""
from .builder import GraphBuilder
from .graph import Graph, Node, Value
from .parser import parse_graph
from .printer import print_graph
from .types import DTYPES, TensorType, broadcast_shapes, dtype_of
from .verifier import verify

__all__ = ["Graph", "GraphBuilder", "Node", "TensorType", "Value", "DTYPES", "broadcast_shapes",
           "dtype_of", "parse_graph", "print_graph", "verify"]
