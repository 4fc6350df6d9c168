"""Spec files build the same model as the Python class and reject bad files with messages naming the layer."""
import re
from pathlib import Path

import numpy as np
import pytest

import nncc
from nncc.frontend.spec import SpecError, load_spec
from lenet import LeNet

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lenet.toml"


def _ops(ir_text):
    return re.findall(r"= (\w+)\(", ir_text)


def test_lenet_spec_compiles_to_the_same_ops_and_outputs_as_the_class():
    spec_model, shape = load_spec(EXAMPLE)
    assert shape == (None, 1, 28, 28)
    cls_model = LeNet()
    assert list(spec_model.state_dict()) == list(cls_model.state_dict())
    from_spec = nncc.compile(EXAMPLE)
    from_spec.load_state_dict(cls_model.state_dict())
    from_class = nncc.compile(cls_model, input_shape=shape)
    assert _ops(from_spec.ir()) == _ops(from_class.ir())
    assert _ops(from_spec.ir("input")) == _ops(from_class.ir("input"))
    x = np.random.default_rng(0).random((3, 1, 28, 28), np.float32)
    np.testing.assert_allclose(from_spec(x), from_class(x), rtol=1e-6)


def _spec(tmp_path, layers: str, model='input_shape = [1, 28, 28]') -> Path:
    path = tmp_path / "m.toml"
    path.write_text(f'[model]\nname = "m"\n{model}\n{layers}')
    return path


def test_unnamed_layers_are_named_by_index_and_arguments_reach_the_constructor(tmp_path):
    path = _spec(tmp_path, '[[layers]]\ntype = "Flatten"\n[[layers]]\ntype = "Linear"\nin_features = 784\n'
                           'out_features = 10\nbias = false\n[[layers]]\ntype = "LeakyReLU"\nnegative_slope = 0.2\n')
    model, shape = load_spec(path)
    assert list(model.state_dict()) == ["1.weight"]
    assert model[2].negative_slope == 0.2 and shape == (None, 1, 28, 28)


LAYER_ERRORS = [
    ('[[layers]]\ntype = "Conv3d"\nname = "c"\n',
     r"m.toml: layer 0 \('c'\): unknown layer type 'Conv3d'; known types: AvgPool2d, BatchNorm1d, .*Conv2d"),
    ('[[layers]]\nname = "c"\n', r"layer 0 \('c'\): unknown layer type None"),
    ('[[layers]]\ntype = "Linear"\nin_features = 784\nout_features = 10\nbias_init = 0\n',
     r"layer 0 \('0'\): Linear has no argument\(s\) \['bias_init'\]; it takes \[.*'out_features', 'bias'\]"),
    ('[[layers]]\ntype = "Conv2d"\nin_channels = 1\nout_channels = 2\n',
     r"layer 0 \('0'\): Conv2d\(in_channels=1, out_channels=2\): .*missing .* 'kernel_size'"),
    ('[[layers]]\ntype = "Flatten"\n[[layers]]\ntype = "Linear"\nname = "fc1"\nin_features = 400\nout_features = 10\n',
     r"layer 1 \('fc1', Linear\) does not fit its input f32\[N,784\]: .*400.*784"),
    ('[[layers]]\ntype = "Conv2d"\nname = "conv"\nin_channels = 3\nout_channels = 2\nkernel_size = 3\n',
     r"layer 0 \('conv', Conv2d\) does not fit its input f32\[N,1,28,28\]"),
    ('[[layers]]\ntype = "MaxPool2d"\nkernel_size = "five"\n',
     r"layer 0 \('0', MaxPool2d\): its arguments \(kernel_size='five'\) do not work"),
    ('[[layers]]\ntype = "ReLU"\nname = "a"\n[[layers]]\ntype = "ReLU"\nname = "a"\n',
     r"layer 1 reuses the name 'a' of layer 0"),
    ('[[layers]]\ntype = "ReLU"\nname = "training"\n', r"layer 0: name 'training' is taken by nn.Sequential"),
    ('[[layers]]\ntype = "ReLU"\nname = "a.b"\n', r"layer 0: name must be a non-empty string without '.'"),
    ('[[layers]]\ntype = "ReLU"\nname = ""\n', r"layer 0: name must be a non-empty string"),
    ('[[layer]]\ntype = "ReLU"\n', r"unknown key\(s\) \['layer'\] in the file; expected model, layers"),
    ('', r"needs \[\[layers\]\] tables"),
]


@pytest.mark.parametrize("layers, message", LAYER_ERRORS)
def test_bad_layers_name_the_file_and_layer(tmp_path, layers, message):
    with pytest.raises(SpecError, match=message):
        load_spec(_spec(tmp_path, layers))


@pytest.mark.parametrize("model, message", [
    ('input_shape = "big"', r"m.toml: \[model\] needs input_shape, a list of positive ints .* got 'big'"),
    ('input_shape = [1, 0]', r"needs input_shape.* got \[1, 0\]"),
    ('input_shape = [1, 28, 28]\ninput_shap = [1]', r"unknown key\(s\) \['input_shap'\] in \[model\]"),
])
def test_bad_model_tables(tmp_path, model, message):
    with pytest.raises(SpecError, match=message):
        load_spec(_spec(tmp_path, '[[layers]]\ntype = "ReLU"\n', model=model))


def test_unreadable_files(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\n")
    with pytest.raises(SpecError, match="bad.toml: not a readable TOML spec"):
        load_spec(bad)
    with pytest.raises(SpecError, match="missing.toml: not a readable TOML spec"):
        load_spec(tmp_path / "missing.toml")
    no_model = tmp_path / "no_model.toml"
    no_model.write_text('[[layers]]\ntype = "ReLU"\n')
    with pytest.raises(SpecError, match=r"no_model.toml: needs a \[model\] table"):
        load_spec(no_model)
