"""Hostile ONNX input: every bad file gets a clear error naming the problem, and nothing from a file is executed."""
import ast
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nncc
from nncc.frontend.onnx_import import OnnxError
from nncc.ir.parser import parse_graph


def model_of(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "hostile", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def vector(name, n=4, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, ["N", n])


def relu_model() -> onnx.ModelProto:
    return model_of([helper.make_node("Relu", ["x"], ["y"])], [vector("x")], [vector("y")])


@pytest.mark.parametrize("content", [b"this is not an ONNX model\n" * 20, bytes(range(256)) * 4, b""],
                         ids=["text", "binary", "empty"])
def test_a_file_that_is_not_onnx(tmp_path, content):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(OnnxError, match="not an ONNX model"):
        nncc.onnx.load(path)
    with pytest.raises(OnnxError, match="not an ONNX model"):
        nncc.compile(str(path))


def test_a_truncated_file(tmp_path):
    data = relu_model().SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(OnnxError, match="not an ONNX model, or a truncated one"):
        nncc.onnx.load(path)


def test_a_missing_file(tmp_path):
    with pytest.raises(OnnxError, match="cannot read the file"):
        nncc.onnx.load(tmp_path / "nowhere.onnx")


def test_a_graph_with_a_cycle():
    nodes = [helper.make_node("Relu", ["b"], ["a"], name="first"), helper.make_node("Neg", ["a"], ["b"], name="second")]
    with pytest.raises(OnnxError, match="node 'first' \\(Relu\\) reads 'b' before node 'second' \\(Neg\\) produces it: "
                                        "the graph has a cycle"):
        nncc.onnx.load(model_of(nodes, [vector("x")], [vector("b")]))


def test_a_dangling_input():
    nodes = [helper.make_node("Add", ["x", "ghost"], ["y"], name="adder")]
    with pytest.raises(OnnxError, match="node 'adder' \\(Add\\) reads 'ghost', which no node, graph input or "
                                        "initializer defines"):
        nncc.onnx.load(model_of(nodes, [vector("x")], [vector("y")]))


def test_a_value_defined_twice_and_an_output_never_computed():
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["x"], ["y"], name="again")]
    with pytest.raises(OnnxError, match="value 'y' is defined twice \\(again by node 'again'"):
        nncc.onnx.load(model_of(nodes, [vector("x")], [vector("y")]))
    with pytest.raises(OnnxError, match="graph output 'z' is never computed"):
        nncc.onnx.load(model_of([], [vector("x")], [vector("z")]))


def test_every_unsupported_operator_is_listed_at_once():
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("TopK", ["a", "k"], ["v", "i"], name="top"),
             helper.make_node("Hardmax", ["v"], ["h1"], name="hard1"),
             helper.make_node("Hardmax", ["h1"], ["h2"], name="hard2"),
             helper.make_node("Fancy", ["h2"], ["y"], name="custom", domain="com.example")]
    k = numpy_helper.from_array(np.array([2], np.int64), "k")
    with pytest.raises(nncc.UnsupportedError) as err:
        nncc.onnx.load(model_of(nodes, [vector("x")], [vector("y", 2)], [k]))
    message = str(err.value)
    assert "unsupported ONNX operators: TopK (node 'top'); Hardmax (nodes 'hard1', 'hard2'); com.example::Fancy " \
           "(node 'custom')" in message
    assert isinstance(err.value, NotImplementedError)


def test_unsupported_attributes_and_dtypes_name_the_node():
    conv3d = model_of([helper.make_node("MaxPool", ["x"], ["y"], name="pool3d", kernel_shape=[2, 2, 2])],
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4, 4])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2, 2, 2])])
    with pytest.raises(nncc.UnsupportedError, match="MaxPool node 'pool3d': 5-D input"):
        nncc.compile(nncc.onnx.load(conv3d))
    odd = model_of([helper.make_node("Relu", ["x"], ["y"], name="r", unknown_flag=1)], [vector("x")], [vector("y")])
    with pytest.raises(nncc.UnsupportedError, match="Relu node 'r': attribute unknown_flag is not supported"):
        nncc.compile(nncc.onnx.load(odd))
    half = model_of([helper.make_node("Relu", ["x"], ["y"])], [vector("x", dtype=TensorProto.FLOAT16)],
                    [vector("y", dtype=TensorProto.FLOAT16)])
    with pytest.raises(nncc.UnsupportedError, match="graph input 'x' has type FLOAT16"):
        nncc.onnx.load(half)


def _external(location: str) -> onnx.ModelProto:
    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4], data_location=TensorProto.EXTERNAL)
    weight.external_data.add(key="location", value=location)
    return model_of([helper.make_node("Add", ["x", "w"], ["y"])], [vector("x")], [vector("y")], [weight])


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/hostname", "sub/../../secret.bin", "link.bin"])
def test_external_data_outside_the_model_directory_is_refused(tmp_path, location):
    (tmp_path / "secret.bin").write_bytes(np.ones(4, np.float32).tobytes())
    models = tmp_path / "models"
    models.mkdir()
    (models / "sub").mkdir()
    (models / "link.bin").symlink_to(tmp_path / "secret.bin")
    onnx.save(_external(location), str(models / "model.onnx"))
    with pytest.raises(OnnxError, match="not inside the model's directory: refused"):
        nncc.onnx.load(models / "model.onnx")


def test_external_data_inside_the_model_directory_loads(tmp_path):
    (tmp_path / "weights.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    onnx.save(_external("weights.bin"), str(tmp_path / "model.onnx"))
    fwd = nncc.compile(nncc.onnx.load(tmp_path / "model.onnx"))
    np.testing.assert_array_equal(fwd(np.zeros((1, 4), np.float32)), [[0, 1, 2, 3]])


SENTINEL = "nncc_hostile_name_was_executed"
NASTY = [f'x"); open("{SENTINEL}", "w"); ("', f"w'''\nimport os; os.system('touch {SENTINEL}') #", "\\n\"\"\"\n}",
         "%0 = relu(%x)\n  return %0\n}", "ünïcödé 名前", f"__import__('os').system('touch {SENTINEL}')"]


def test_names_with_code_and_quotes_are_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, w, a, y = NASTY[0], NASTY[1], NASTY[2], NASTY[3]
    weight = numpy_helper.from_array(np.full(4, 2.0, np.float32), w)
    nodes = [helper.make_node("Mul", [x, w], [a], name=NASTY[4]), helper.make_node("Relu", [a], [y], name=NASTY[5])]
    model = nncc.onnx.load(model_of(nodes, [vector(x)], [vector(y)], [weight]))
    fwd = nncc.compile(model)
    got = fwd(np.array([[-1, 0, 1, 2]], np.float32))
    np.testing.assert_array_equal(got, [[0, 0, 2, 4]])
    ast.parse(fwd.source())  # the generated module is valid Python
    parse_graph(fwd.ir("final"))  # and the IR text parses back
    proto = nncc.onnx.export(model)
    assert [v.name for v in proto.graph.input] == [x] and [v.name for v in proto.graph.output] == [y]
    assert [t.name for t in proto.graph.initializer] == [w]
    assert not any(Path(p).name == SENTINEL for p in Path(tmp_path).rglob("*"))
    assert not Path(SENTINEL).exists()
