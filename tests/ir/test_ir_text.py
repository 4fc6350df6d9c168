"""IR text: printing, parsing back, errors with positions, and the verifier."""
import numpy as np
import pytest

from nncc.errors import IRError
from nncc.ir import GraphBuilder, TensorType, parse_graph, print_graph, verify
from nncc.ir.graph import Value

TEXT = """graph g(%x: f32[N,3], %"w \\"odd\\" name": f32[3]) -> (f32[N,3], f32[]) {
  %0 = add(%x, %"w \\"odd\\" name") : f32[N,3] loc("layer \\"1\\"")
  %1 = constant() {value=dense<f32[2]>[1.5, -inf]} : f32[2]
  %2 = sum(%0) {axes=[0, 1], keepdims=false} : f32[]
  return %0, %2
}
"""


def test_print_parse_print_is_a_fixed_point_with_odd_names_and_constants():
    graph = parse_graph(TEXT)
    assert graph.inputs[1].name == 'w "odd" name'
    assert graph.nodes[0].label == 'layer "1"'
    np.testing.assert_array_equal(graph.nodes[1].attrs["value"], np.array([1.5, -np.inf], np.float32))
    assert print_graph(graph) == TEXT
    assert print_graph(parse_graph(print_graph(graph))) == TEXT


@pytest.mark.parametrize("text,message", [
    ("graph g(%x: f32[2]) -> (f32[2]) {\n  %0 = relu(%y) : f32[2]\n  return %0\n}", r"line 2, column 13: use of undefined value %y"),
    ("graph g(%x: f32[2]) -> (f32[2]) {\n  %0 = relu(%x) : q8[2]\n  return %0\n}", r"line 2, column 19: unknown dtype 'q8'"),
    ("graph g(%x: f32[2]) -> (f32[3]) {\n  %0 = relu(%x) : f32[3]\n  return %0\n}", r"recorded types f32\[3\] differ"),
    ("graph g(%x: f32[2]) -> (f32[2]) {\n  %0 = frobnicate(%x) : f32[2]\n  return %0\n}", "unknown op 'frobnicate'"),
    ("graph g(%x: f32[2]) -> (f32[2]) {\n  %0 = relu(%x) : f32[2] $\n}", r"line 2, column 26: unexpected character"),
    ("graph g(%x: f32[2]) -> (f32[3]) {\n  %0 = relu(%x) : f32[2]\n  return %0\n}", r"line 1, column 25: declared results"),
])
def test_parse_errors_say_where(text, message):
    with pytest.raises(IRError, match=message):
        parse_graph(text)


def test_verifier_catches_use_before_definition_and_shape_mismatch():
    b = GraphBuilder("g")
    x = b.input("x", TensorType("f32", ("N", 4)))
    y = b.add1("relu", [x])
    z = b.add1("exp", [y])
    graph = b.finish([z])
    graph.nodes.reverse()
    with pytest.raises(IRError, match=r"node #0 \(exp\): input .* is used before it is defined"):
        verify(graph)
    graph.nodes.reverse()
    b.label = "fc1"
    with pytest.raises(Exception, match=r"node 'add' \(from fc1\) .*do not broadcast"):
        b.add("add", [x, Value(TensorType("f32", (3,)), "w")])
