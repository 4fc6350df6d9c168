"""The ONNX exporter: nncc models -> ONNX that passes onnx.checker's full checks and that ONNX Runtime runs to
the same outputs; ONNX -> nncc -> ONNX -> nncc keeps outputs and names."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import nncc
from nncc import nn
from nncc.frontend.tracing import apply
from nncc.nn import functional as F
from parity.nncc_models import MODELS
from parity.pairs import batch, make_pair
from runtime import optim


def run_onnx(proto: onnx.ModelProto, *xs: np.ndarray) -> list:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: x for i, x in zip(session.get_inputs(), xs)})


@pytest.mark.parametrize("name", list(MODELS))
def test_exported_models_run_the_same_in_onnxruntime(name, tmp_path):
    ours, _, shape, _ = make_pair(name)
    fwd = nncc.compile(ours, input_shape=(None, *shape))
    path = tmp_path / f"{name}.onnx"
    nncc.onnx.save(fwd, path)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    for n in (1, 32):
        x = batch(shape, n, seed=n)[0]
        np.testing.assert_allclose(run_onnx(proto, x)[0], fwd(x), rtol=1e-4, atol=1e-5)


def test_linear_layers_export_as_gemm_with_bias():
    proto = nncc.onnx.export(MODELS["mlp"][0](), input_shape=(None, 1, 28, 28))
    assert [n.op_type for n in proto.graph.node if n.op_type != "Constant"] == \
        ["Reshape", "Gemm", "Relu", "Gemm", "Relu", "Gemm"]
    assert [len(n.input) for n in proto.graph.node if n.op_type == "Gemm"] == [3, 3, 3]


def test_a_trained_compiled_module_exports_its_current_weights():
    ours, _, shape, _ = make_pair("lenet")
    step = nncc.compile(ours, input_shape=(None, *shape), loss=nn.CrossEntropyLoss(), optimizer=optim.SGD(lr=0.1))
    for i in range(3):
        step.train_step(*batch(shape, 8, seed=i))
    proto = nncc.onnx.export(step)
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    np.testing.assert_array_equal(weights["fc3.bias"], step.state_dict()["fc3.bias"])
    assert not np.array_equal(weights["fc3.bias"], ours.state_dict()["fc3.bias"])
    x = batch(shape, 4, seed=9)[0]
    np.testing.assert_allclose(run_onnx(proto, x)[0], step(x), rtol=1e-4, atol=1e-5)


def test_onnx_to_nncc_to_onnx_to_nncc_keeps_outputs_and_names(tmp_path):
    _, theirs, shape, _ = make_pair("lenet")
    path = tmp_path / "torch.onnx"
    torch.onnx.export(theirs.eval(), (torch.tensor(batch(shape, 2)[0]),), str(path), dynamo=False,
                      input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "b"}, "logits": {0: "b"}})
    first = nncc.onnx.load(path)
    nncc.onnx.save(first, tmp_path / "again.onnx")
    again = nncc.onnx.load(tmp_path / "again.onnx")
    proto = onnx.load(str(tmp_path / "again.onnx"))
    assert [i.name for i in proto.graph.input] == ["image"] and [o.name for o in proto.graph.output] == ["logits"]
    assert sorted(t.name for t in proto.graph.initializer) == sorted(dict(theirs.named_parameters()))
    x = batch(shape, 5, seed=3)[0]
    expected = nncc.compile(first)(x)
    np.testing.assert_allclose(nncc.compile(again)(x), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(run_onnx(proto, x)[0], expected, rtol=1e-4, atol=1e-5)


class Zoo(nn.Module):
    """One forward pass through most of the IR's forward ops, for the exporter's rules."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        rng = np.random.default_rng(0)
        self.up = nn.Parameter(rng.standard_normal((4, 2, 2, 2)).astype(np.float32) * 0.3)
        self.mix = nn.Parameter(rng.standard_normal((2, 5, 3)).astype(np.float32))

    def forward(self, x):
        a = F.leaky_relu(self.conv(x), 0.1)                                   # [N, 4, 6, 6]
        a = F.avg_pool2d(a, 3, 2, padding=1, ceil_mode=True, count_include_pad=False)  # [N, 4, 3, 3]
        a = apply("conv_transpose2d", [a, self.up], {"stride": [2, 2], "padding": [1, 1], "dilation": [1, 1],
                                                     "groups": 1, "output_padding": [1, 1]})  # [N, 2, 6, 6]
        a = apply("pad", [F.sigmoid(a) * F.tanh(a)], {"pads": [0, 0, 1, 2, 0, 0, 2, 1], "mode": "reflect",
                                                      "value": 0.0})          # [N, 2, 9, 9]
        a = apply("strided_slice", [a], {"axes": [2, 3], "starts": [8, 0], "stops": [-1, 9], "steps": [-3, 2]})
        a = apply("batch_matmul", [F.transpose(a, 2, 3), apply("broadcast_to", [self.mix], {"shape": ["N", 2, 5, 3]})],
                  {"transpose_a": False, "transpose_b": True})               # [N, 2, 5, 5]
        b = F.flatten(a, 1)                                                   # [N, 50]
        c = F.softmax(b, -1) + F.log_softmax(b, 1) - F.max(b, 1, keepdim=True) + apply("erf", [F.mean(b, 1, True)])
        c = F.where(F.sum(c, 1, True) > 0.0, apply("floor", [c]), F.sqrt(F.abs(c)))
        d = apply("gather", [c, np.array([3, 1, 4, 1, 5], np.int64)], {"axis": 1})
        e = F.cat([d, apply("prod", [F.exp(F.neg(c)) + 1.0], {"axes": [1], "keepdims": True})], 1)
        return e, apply("argmax", [c], {"axis": 1, "keepdims": False, "select_last_index": False})


def test_every_forward_op_exports():
    nncc.manual_seed(0)
    model = Zoo()
    fwd = nncc.compile(model, input_shape=(None, 3, 6, 6))
    proto = nncc.onnx.export(fwd)
    x = np.random.default_rng(1).standard_normal((3, 3, 6, 6)).astype(np.float32)
    values, indices = fwd(x)
    theirs = run_onnx(proto, x)
    np.testing.assert_allclose(theirs[0], values, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(theirs[1], indices)


def test_an_op_without_an_onnx_form_is_unsupported():
    class Wrap(nn.Module):
        def forward(self, x):
            return apply("pad", [x], {"pads": [0, 1, 0, 1], "mode": "wrap", "value": 0.0})

    with pytest.raises(nncc.UnsupportedError, match="wrap padding needs ONNX opset 19"):
        nncc.onnx.export(Wrap(), input_shape=(None, 4))
