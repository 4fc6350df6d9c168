"""Declarative model spec files (TOML): a layer stack that builds an ``nn.Sequential``.

Format::

    [model]
    name = "lenet"
    input_shape = [1, 28, 28]          # one sample; the batch dimension is added (symbolic N)

    [[layers]]
    type = "Conv2d"                    # an nncc.nn layer class
    name = "conv1"                     # optional; default: the layer's index, as in nn.Sequential
    in_channels = 1                    # the class's constructor arguments
    out_channels = 6
    kernel_size = 5
    padding = 2

    [[layers]]
    type = "ReLU"

Shapes are checked layer by layer when the file is loaded; errors name the file, the layer and the shapes.
"""
from __future__ import annotations

import inspect
import tomllib
from collections import OrderedDict
from pathlib import Path

from ..errors import NNCCError, ShapeError
from ..ir.types import TensorType
from . import nn
from .nn.module import Module

LAYERS = {name: getattr(nn, name) for name in (
    "Conv2d", "Linear", "ReLU", "ReLU6", "LeakyReLU", "Sigmoid", "Tanh", "MaxPool2d", "AvgPool2d", "Flatten",
    "Dropout", "BatchNorm1d", "BatchNorm2d", "Softmax", "LogSoftmax")}


class SpecError(NNCCError):
    """A spec file that cannot be built; the message names the file and the layer."""


def load_spec(path) -> tuple[Module, tuple]:
    """Build the model a spec file describes; returns (model, input shape with None for the batch)."""
    path = Path(path)
    try:
        spec = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise SpecError(f"{path}: not a readable TOML spec ({e})") from None
    model_table = spec.get("model", {})
    shape = model_table.get("input_shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d > 0 for d in shape):
        raise SpecError(f"{path}: [model] needs input_shape, a list of positive ints without the batch, e.g. [1, 28, 28]")
    layers = spec.get("layers")
    if not isinstance(layers, list) or not layers:
        raise SpecError(f"{path}: no [[layers]] entries")
    children: OrderedDict[str, Module] = OrderedDict()
    for index, entry in enumerate(layers):
        name, layer = _build_layer(path, index, dict(entry))
        if name in children:
            raise SpecError(f"{path}: layer {index} reuses the name {name!r}")
        children[name] = layer
    model = nn.Sequential(children)
    _check_shapes(path, model, tuple(shape))
    return model, (None, *shape)


def _build_layer(path: Path, index: int, entry: dict) -> tuple[str, Module]:
    kind = entry.pop("type", None)
    name = str(entry.pop("name", index))
    where = f"{path}: layer {index} ({name!r})"
    if kind not in LAYERS:
        raise SpecError(f"{where}: unknown layer type {kind!r}; known types: {', '.join(sorted(LAYERS))}")
    cls = LAYERS[kind]
    params = inspect.signature(cls.__init__).parameters
    unknown = [k for k in entry if k not in params or k == "self"]
    if unknown:
        known = [p for p in params if p != "self"]
        raise SpecError(f"{where}: {kind} has no argument(s) {unknown}; it takes {known}")
    try:
        return name, cls(**entry)
    except (TypeError, ValueError, NNCCError) as e:
        raise SpecError(f"{where}: {kind}({', '.join(f'{k}={v!r}' for k, v in entry.items())}): {e}") from None


def _check_shapes(path: Path, model: nn.Sequential, shape: tuple) -> None:
    """Trace each layer in turn so a misfit names the layer and the shape it received."""
    from .tracer import trace_module

    current = TensorType("f32", ("N", *shape))
    for index, (name, layer) in enumerate(model._modules.items()):
        try:
            traced = trace_module(layer, [current], name="check")
        except ShapeError as e:
            raise SpecError(f"{path}: layer {index} ({name!r}, {type(layer).__name__}) does not fit its input "
                            f"{current}: {e}") from None
        current = traced.graph.outputs[0].type
