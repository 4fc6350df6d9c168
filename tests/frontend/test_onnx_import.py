"""The ONNX importer: PyTorch exports match ONNX Runtime, imported models train like PyTorch, and the importer's
own features (shape subgraphs, several inputs and outputs, inputs by name, parameter names) work."""
import re
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as TF
from onnx import TensorProto, helper, numpy_helper

import nncc
from nncc import nn
from parity.pairs import batch, make_pair
from runtime import optim

MODELS = ["lenet", "cifar_lenet", "mlp", "bn_cnn"]


def export(module: torch.nn.Module, x: np.ndarray, path, dynamic: bool, fold: bool = True) -> None:
    """PyTorch's export in eval mode; ``fold=False`` keeps BatchNorm layers (folding merges them into the convs)."""
    torch.onnx.export(module.eval(), (torch.tensor(x),), str(path), dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}} if dynamic else None,
                      do_constant_folding=fold)


def onnxruntime(path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("name", MODELS)
def test_dynamic_batch_export_matches_onnxruntime(name, tmp_path):
    _, theirs, shape, _ = make_pair(name)
    path = tmp_path / f"{name}.onnx"
    export(theirs, batch(shape, 2)[0], path, dynamic=True)
    fwd = nncc.compile(str(path))
    assert fwd.input_types[0].shape == ("N", *shape)
    for n in (1, 32):
        x = batch(shape, n, seed=n)[0]
        np.testing.assert_allclose(fwd(x), onnxruntime(path, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_fixed_batch_exports_match_onnxruntime(name, tmp_path):
    _, theirs, shape, _ = make_pair(name)
    for n in (1, 32):
        x = batch(shape, n, seed=n)[0]
        path = tmp_path / f"{name}_{n}.onnx"
        export(theirs, x, path, dynamic=False)
        fwd = nncc.compile(nncc.onnx.load(path))
        assert fwd.input_types[0].shape == (n, *shape)
        np.testing.assert_allclose(fwd(x), onnxruntime(path, x), rtol=1e-4, atol=1e-5)


class ViewNet(torch.nn.Module):
    """Flattens with x.view(x.size(0), -1): PyTorch exports Shape -> Gather -> Unsqueeze -> Concat -> Reshape."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3)
        self.fc = torch.nn.Linear(2 * 4 * 4, 3)

    def forward(self, x):
        y = self.conv(x)
        return self.fc(y.view(y.size(0), -1))


def test_shape_subgraphs_fold_to_constants(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "view.onnx"
    export(ViewNet(), batch((1, 6, 6), 2)[0], path, dynamic=True)
    assert {"Shape", "Gather", "Concat"} <= {n.op_type for n in onnx.load(str(path)).graph.node}
    fwd = nncc.compile(str(path))
    ops = {line.split("= ")[1].split("(")[0] for line in fwd.ir("final").splitlines() if " = " in line}
    assert ops == {"conv2d", "reshape", "matmul", "add"}
    assert 'shape=["N", 32]' in fwd.ir("final")
    for n in (1, 5):
        x = batch((1, 6, 6), n, seed=n)[0]
        np.testing.assert_allclose(fwd(x), onnxruntime(path, x), rtol=1e-4, atol=1e-5)


def _grads_match(grads, theirs):
    assert set(grads) == {name for name, _ in theirs.named_parameters()}
    for name, p in theirs.named_parameters():
        np.testing.assert_allclose(grads[name], p.grad.numpy(), rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("name", ["lenet", "bn_cnn"])
def test_imported_model_gradients_equal_torch(name, tmp_path):
    _, theirs, shape, classes = make_pair(name)
    if name == "bn_cnn":
        theirs.drop.p = 0.0  # nncc's dropout masks and torch's cannot agree
    path = tmp_path / f"{name}.onnx"
    export(theirs, batch(shape, 2)[0], path, dynamic=True, fold=False)
    step = nncc.compile(nncc.onnx.load(path), loss=nn.CrossEntropyLoss())
    x, y = batch(shape, 6, classes=classes)
    loss, grads = step.grad(x, y)
    expected = TF.cross_entropy(theirs.train()(torch.tensor(x)), torch.tensor(y))
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-5)
    _grads_match(grads, theirs)
    for bname, b in theirs.named_buffers():  # BatchNorm's running statistics are buffers that move as torch's
        if not bname.endswith("num_batches_tracked"):
            np.testing.assert_allclose(step.state_dict()[bname], b.numpy(), rtol=1e-5, atol=1e-6, err_msg=bname)


def test_imported_lenet_trains_like_the_dsl_lenet(tmp_path):
    """From the same weights and batches, the imported model's SGD steps equal the DSL LeNet's."""
    ours, theirs, shape, _ = make_pair("lenet", seed=3)
    path = tmp_path / "lenet.onnx"
    export(theirs, batch(shape, 2)[0], path, dynamic=True)
    dsl = nncc.compile(ours, input_shape=(None, *shape), loss=nn.CrossEntropyLoss(),
                       optimizer=optim.SGD(lr=0.05, momentum=0.9))
    imported = nncc.compile(str(path), loss=nn.CrossEntropyLoss(), optimizer=optim.SGD(lr=0.05, momentum=0.9))
    for i in range(10):
        x, y = batch(shape, 16, seed=50 + i)
        assert imported.train_step(x, y) == pytest.approx(dsl.train_step(x, y), rel=1e-5), f"step {i}"
    for name, value in dsl.state_dict().items():
        np.testing.assert_allclose(imported.state_dict()[name], value, rtol=1e-4, atol=1e-6, err_msg=name)


def model_of(graph) -> onnx.ModelProto:
    """An opset-17 model of IR version 9, which ONNX Runtime reads."""
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_nncc_train_of_an_onnx_lenet_reaches_the_dsl_lenets_accuracy(mnist_dir, tmp_path):
    """`nncc train lenet.onnx`, one epoch, as tests/test_end_to_end.py trains the DSL LeNet: the file holds the
    DSL LeNet's seed-0 weights, so the run repeats the DSL one (both measured 88.45%)."""
    from lenet import LeNet

    nncc.manual_seed(0)
    nncc.onnx.save(LeNet(), tmp_path / "lenet.onnx", input_shape=(None, 1, 28, 28))
    out = subprocess.run([sys.executable, "-m", "nncc.cli", "train", str(tmp_path / "lenet.onnx"), "--data",
                          str(mnist_dir), "--epochs", "1", "--batch-size", "64", "--lr", "0.01", "--momentum", "0.9",
                          "--out", str(tmp_path / "trained.npz")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert float(re.search(r"final test accuracy: ([\d.]+)%", out.stdout).group(1)) >= 87.0, out.stdout


def _two_in_two_out(path) -> None:
    """y = relu(a @ w + b) and z = sum(y * scale) with the batch axis dynamic."""
    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", TensorProto.FLOAT, [3, 4], rng.standard_normal(12).tolist())
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["s"]),
         helper.make_node("Relu", ["s"], ["y"]), helper.make_node("Mul", ["y", "scale"], ["p"]),
         helper.make_node("ReduceSum", ["p", "axes"], ["z"], keepdims=0)],
        "two", [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 3]),
                helper.make_tensor_value_info("b", TensorProto.FLOAT, [4]),
                helper.make_tensor_value_info("scale", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch"])], [w, axes])
    onnx.save(model_of(graph), str(path))


def test_several_inputs_and_outputs_positionally_or_by_name(tmp_path):
    path = tmp_path / "two.onnx"
    _two_in_two_out(path)
    model = nncc.onnx.load(path)
    assert (model.input_names, model.output_names) == (["a", "b", "scale"], ["y", "z"])
    assert [n for n, _ in model.named_parameters()] == ["w"]  # float initializers are parameters
    fwd = nncc.compile(model)
    rng = np.random.default_rng(1)
    a, b, s = (rng.standard_normal(shape).astype(np.float32) for shape in [(5, 3), (4,), (5, 4)])
    expected = ort.InferenceSession(str(path)).run(None, {"a": a, "b": b, "scale": s})
    for got in (fwd(a, b, s), fwd(a, scale=s, b=b)):
        assert isinstance(got, tuple) and len(got) == 2
        for have, want in zip(got, expected):
            np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(nncc.ShapeError, match="missing \\['scale'\\]"):
        fwd(a, b=b)


def test_initializer_names_are_sanitised_parameter_names():
    t = helper.make_tensor("onnx::Gemm/w 0", TensorProto.FLOAT, [2, 2], [1.0, 0.0, 0.0, 1.0])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "onnx::Gemm/w 0"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])], [t])
    model = nncc.onnx.load(model_of(graph))
    assert list(model.state_dict()) == ["onnx__Gemm_w_0"]
    assert model.onnx_names == {"onnx__Gemm_w_0": "onnx::Gemm/w 0"}
    model.load_state_dict({"onnx__Gemm_w_0": np.array([[0, 1], [1, 0]], np.float32)})
    np.testing.assert_array_equal(nncc.compile(model)(np.array([[1, 2]], np.float32)), [[2, 1]])


def test_constants_bind_inputs_nncc_must_know():
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6]),
                               helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])])
    proto = model_of(graph)
    with pytest.raises(nncc.UnsupportedError, match="Reshape node 'Reshape_0': input 1 computed at run time"):
        nncc.compile(nncc.onnx.load(proto))
    fwd = nncc.compile(nncc.onnx.load(proto, constants={"shape": np.array([3, -1])}))
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    np.testing.assert_array_equal(fwd(x), x.reshape(3, 4))


class Opset11Net(torch.nn.Module):
    """Ops whose ONNX form changed after opset 11 (Clip, Split, ReduceMean, Unsqueeze, Squeeze, LogSoftmax on a
    non-last axis) and the Shape -> Reshape subgraph of x.view(x.size(0), -1)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(3 * 3 * 3, 5)

    def forward(self, x):
        y = torch.clamp(torch.relu(self.bn(self.conv(x))), 0.0, 6.0)
        gate, rest = y.split([1, 3], dim=1)
        y = TF.max_pool2d(rest * torch.sigmoid(gate.mean(dim=(2, 3), keepdim=True)), 2)
        y = self.fc(y.view(y.size(0), -1))
        return torch.log_softmax(y.unsqueeze(2), dim=1).squeeze(2)


def test_a_torch_export_at_opset_11_matches_onnxruntime(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "opset11.onnx"
    torch.onnx.export(Opset11Net().eval(), (torch.zeros(2, 1, 6, 6),), str(path), dynamo=False, opset_version=11,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
                      do_constant_folding=False)
    proto = onnx.load(str(path))
    assert [o.version for o in proto.opset_import if o.domain == ""] == [11]
    assert any(n.op_type == "Unsqueeze" and n.attribute for n in proto.graph.node)  # axes as an attribute
    fwd = nncc.compile(str(path))
    for n in (1, 3):
        x = batch((1, 6, 6), n, seed=n)[0]
        np.testing.assert_allclose(fwd(x), onnxruntime(path, x), rtol=1e-4, atol=1e-5)


def _newest_opset_model() -> onnx.ModelProto:
    """x [N, 4, 6] through the forms of the newest opsets: axes as inputs (ReduceMean, Pad, Unsqueeze, Squeeze),
    Split's num_outputs, Gelu (opset 20)."""
    ints = [numpy_helper.from_array(np.array(v, np.int64), name) for name, v in
            [("axes2", [2]), ("axes1", [1]), ("pads", [1, 2])]]
    node = helper.make_node
    graph = helper.make_graph(
        [node("ReduceMean", ["x", "axes2"], ["mean"]), node("Sub", ["x", "mean"], ["centered"]),
         node("Split", ["centered"], ["a", "b"], axis=1, num_outputs=2),
         node("Pad", ["a", "pads", "", "axes2"], ["padded"]), node("Softmax", ["padded"], ["soft"], axis=1),
         node("Flatten", ["soft"], ["y"]), node("Gelu", ["b"], ["g"]), node("Unsqueeze", ["g", "axes1"], ["u"]),
         node("Squeeze", ["u", "axes1"], ["s"]), node("ReduceSum", ["s", "axes2"], ["z"], keepdims=0)],
        "newest", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 18]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 2])], ints)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", onnx.defs.onnx_opset_version())])


def test_a_model_at_the_newest_opset_matches_onnx_reference():
    """ONNX Runtime may not know the newest opset yet: ONNX's reference implementation is the judge."""
    from onnx.reference import ReferenceEvaluator

    proto = _newest_opset_model()
    onnx.checker.check_model(proto, full_check=True)
    fwd = nncc.compile(nncc.onnx.load(proto))
    x = np.random.default_rng(0).standard_normal((3, 4, 6)).astype(np.float32)
    for have, want in zip(fwd(x), ReferenceEvaluator(proto).run(None, {"x": x})):
        np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-6)


def test_an_opset_newer_than_onnx_knows_is_unsupported():
    proto = model_of(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
                                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])]))
    proto.opset_import[0].version = onnx.defs.onnx_opset_version() + 1
    with pytest.raises(nncc.UnsupportedError, match=f"opset {onnx.defs.onnx_opset_version() + 1}; the installed"):
        nncc.onnx.load(proto)


def _filled_like_x(extra_nodes=(), extra_outputs=()) -> onnx.ModelProto:
    """y = x * ConstantOfShape(Shape(x), 2.0) and z = that fill itself, x [batch, 4]."""
    two = helper.make_tensor("two", TensorProto.FLOAT, [1], [2.0])
    graph = helper.make_graph(
        [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("ConstantOfShape", ["s"], ["z"], value=two),
         helper.make_node("Mul", ["x", "z"], ["y"]), *extra_nodes], "fill",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 4]) for name in ("y", "z")]
        + list(extra_outputs))
    return model_of(graph)


def test_a_fill_whose_shape_holds_the_batch_size_is_traced():
    proto = _filled_like_x()
    fwd = nncc.compile(nncc.onnx.load(proto))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for n in (1, 3):
        x = batch((4,), n, seed=n)[0]
        for have, want in zip(fwd(x), session.run(None, {"x": x})):
            np.testing.assert_allclose(have, want, rtol=1e-6)


def test_other_batch_dependent_values_are_unsupported():
    proto = _filled_like_x([helper.make_node("Cast", ["s"], ["sizes"], to=TensorProto.FLOAT)],
                           [helper.make_tensor_value_info("sizes", TensorProto.FLOAT, [2])])
    with pytest.raises(nncc.UnsupportedError, match="graph output 'sizes' depends on the batch size at run time"):
        nncc.compile(nncc.onnx.load(proto))
