"""The verifier: each malformed graph is rejected with an error that names the node."""
import pytest

from nncc.errors import IRError, ShapeError
from nncc.ir import GraphBuilder, TensorType, verify
from nncc.ir.graph import Value


def _chain():
    """x -> relu -> exp, labelled "fc1"."""
    b = GraphBuilder("g")
    x = b.input("x", TensorType("f32", ("N", 4)))
    b.label = "fc1"
    y = b.add1("relu", [x])
    z = b.add1("exp", [y])
    return b.finish([z])


def test_a_well_formed_graph_passes():
    graph = _chain()
    assert verify(graph) is graph


def test_use_before_definition():
    graph = _chain()
    graph.nodes.reverse()
    with pytest.raises(IRError, match=r"graph 'g', node #0 \(exp, fc1\): input .* is used before it is defined"):
        verify(graph)


def test_wrong_recorded_type():
    graph = _chain()
    graph.nodes[1].outputs[0].type = TensorType("f32", ("N", 5))
    with pytest.raises(IRError, match=r"node #1 \(exp, fc1\): recorded types f32\[N,5\] differ from the shape "
                                      r"rule's f32\[N,4\]"):
        verify(graph)


def test_wrong_recorded_dtype():
    graph = _chain()
    graph.nodes[0].outputs[0].type = TensorType("f64", ("N", 4))
    with pytest.raises(IRError, match=r"node #0 \(relu, fc1\): recorded types f64\[N,4\] differ"):
        verify(graph)


def test_unknown_op():
    graph = _chain()
    graph.nodes[0].op = "frobnicate"
    with pytest.raises(IRError, match=r"node #0 \(frobnicate, fc1\): unknown op 'frobnicate'"):
        verify(graph)


def test_inputs_that_break_the_shape_rule():
    graph = _chain()
    graph.nodes[1].op = "add"  # add needs two operands
    with pytest.raises(IRError, match=r"node #1 \(add, fc1\): .*takes 2 operands, got 1"):
        verify(graph)


def test_output_not_defined_in_the_graph():
    graph = _chain()
    graph.outputs = [Value(TensorType("f32", (2,)), "stray")]
    with pytest.raises(IRError, match=r"output Value\(stray: f32\[2\]\) is not defined"):
        verify(graph)


def test_output_that_does_not_point_back_to_its_producer():
    graph = _chain()
    graph.nodes[1].outputs[0].producer = graph.nodes[0]
    with pytest.raises(IRError, match=r"node #1 \(exp, fc1\): output .* does not point back to its producer"):
        verify(graph)


def test_duplicate_input_names():
    graph = _chain()
    graph.inputs.append(Value(TensorType("f32", (3,)), "x"))
    with pytest.raises(IRError, match=r"duplicate input names \['x'\]"):
        verify(graph)


def test_the_builder_names_the_node_and_layer_when_shapes_do_not_fit():
    b = GraphBuilder("g")
    x = b.input("x", TensorType("f32", ("N", 4)))
    b.label = "fc1"
    with pytest.raises(ShapeError, match=r"node 'add' \(from fc1\) with inputs \(f32\[N,4\], f32\[3\]\): .*do not "
                                         r"broadcast"):
        b.add("add", [x, Value(TensorType("f32", (3,)), "w")])
