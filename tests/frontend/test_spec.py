"""Spec files build the same model as the Python class and reject bad layers with clear messages."""
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
    spec_model.load_state_dict(cls_model.state_dict())
    from_spec = nncc.compile(EXAMPLE)
    from_spec.load_state_dict(cls_model.state_dict())
    from_class = nncc.compile(cls_model, input_shape=shape)
    assert _ops(from_spec.ir()) == _ops(from_class.ir())
    x = np.random.default_rng(0).random((3, 1, 28, 28), np.float32)
    np.testing.assert_allclose(from_spec(x), from_class(x), rtol=1e-6)


def _spec(tmp_path, layers: str, shape="[1, 28, 28]") -> Path:
    path = tmp_path / "m.toml"
    path.write_text(f'[model]\nname = "m"\ninput_shape = {shape}\n{layers}')
    return path


def test_unknown_layer_lists_the_known_ones(tmp_path):
    path = _spec(tmp_path, '[[layers]]\ntype = "Conv3d"\nname = "c"\n')
    with pytest.raises(SpecError, match=r"m.toml: layer 0 \('c'\): unknown layer type 'Conv3d'; known types: .*Conv2d"):
        load_spec(path)


def test_unknown_argument(tmp_path):
    path = _spec(tmp_path, '[[layers]]\ntype = "Linear"\nin_features = 784\nout_features = 10\nbias_init = 0\n')
    with pytest.raises(SpecError, match=r"layer 0 \('0'\): Linear has no argument\(s\) \['bias_init'\]"):
        load_spec(path)


def test_shape_misfit_names_the_layer_and_shapes(tmp_path):
    path = _spec(tmp_path, '[[layers]]\ntype = "Flatten"\n[[layers]]\ntype = "Linear"\nname = "fc1"\n'
                           'in_features = 400\nout_features = 10\n')
    with pytest.raises(SpecError, match=r"layer 1 \('fc1', Linear\) does not fit its input f32\[N,784\]"):
        load_spec(path)


def test_not_toml_and_missing_shape(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\n")
    with pytest.raises(SpecError, match="bad.toml: not a readable TOML spec"):
        load_spec(bad)
    with pytest.raises(SpecError, match="needs input_shape"):
        load_spec(_spec(tmp_path, '[[layers]]\ntype = "ReLU"\n', shape='"big"'))
