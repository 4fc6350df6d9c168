"""Declarative model spec files (TOML): a layer stack that builds an ``nn.Sequential``.

A spec has a ``[model]`` table and one ``[[layers]]`` table per layer, applied in order::

    [model]
    name = "lenet"                     # a label for people; optional
    input_shape = [1, 28, 28]          # one sample; the batch dimension is added (symbolic N)

    [[layers]]
    type = "Conv2d"                    # the nncc.nn class (see LAYERS)
    name = "conv1"                     # optional; default: the layer's index, as in nn.Sequential
    in_channels = 1                    # the class's constructor arguments, by keyword
    out_channels = 6
    kernel_size = 5
    padding = 2

    [[layers]]
    type = "ReLU"
    name = "relu1"

Layer names become the parameter names (``conv1.weight``, ``conv1.bias``), so a spec whose names match a
class's attribute names loads that class's ``state_dict`` (``examples/lenet.toml`` mirrors
``examples/lenet.py``). Usage::

    model, input_shape = load_spec("examples/lenet.toml")     # (nn.Sequential, (None, 1, 28, 28))
    fwd = nncc.compile("examples/lenet.toml")                  # the same, compiled

Everything is checked when the file is loaded: unknown tables, keys, layer types or constructor arguments,
duplicate or unusable layer names, and the shapes, layer by layer. Every error is a ``SpecError`` naming the
file, the layer (index and name) and, for a misfit, the shape the layer received.
"""
from __future__ import annotations

import inspect
import tomllib
from collections import OrderedDict
from pathlib import Path
from typing import Any, Union

from ..errors import NNCCError
from ..ir.types import TensorType
from . import nn
from .nn.module import Module

#: the layer types a spec may use: ``type = "<name>"``
LAYERS = {name: getattr(nn, name) for name in (
    "Conv2d", "Linear", "ReLU", "ReLU6", "LeakyReLU", "Sigmoid", "Tanh", "MaxPool2d", "AvgPool2d", "Flatten",
    "Dropout", "BatchNorm1d", "BatchNorm2d", "Softmax", "LogSoftmax")}

_TOP_KEYS = ("model", "layers")
_MODEL_KEYS = ("name", "input_shape")


class SpecError(NNCCError):
    """A spec file that cannot be built; the message names the file and the layer."""


def load_spec(path: Union[str, Path]) -> tuple[Module, tuple]:
    """Build the model a spec file describes; returns (model, input shape with None for the batch).

    Example: ``model, shape = load_spec("examples/lenet.toml")`` gives an ``nn.Sequential`` with children
    conv1, relu1, pool1, ... and ``shape == (None, 1, 28, 28)``.
    """
    path = Path(path)
    try:
        spec = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise SpecError(f"{path}: not a readable TOML spec ({e})") from None
    _check_keys(path, "the file", spec, _TOP_KEYS)
    model_table = spec.get("model")
    if not isinstance(model_table, dict):
        raise SpecError(f"{path}: needs a [model] table with input_shape, e.g. input_shape = [1, 28, 28]")
    _check_keys(path, "[model]", model_table, _MODEL_KEYS)
    if not isinstance(model_table.get("name", ""), str):
        raise SpecError(f"{path}: [model] name must be a string, got {model_table['name']!r}")
    shape = model_table.get("input_shape")
    if not isinstance(shape, list) or not shape or not all(type(d) is int and d > 0 for d in shape):
        raise SpecError(f"{path}: [model] needs input_shape, a list of positive ints without the batch, "
                        f"e.g. [1, 28, 28]; got {shape!r}")
    layers = spec.get("layers")
    if not isinstance(layers, list) or not layers or not all(isinstance(e, dict) for e in layers):
        raise SpecError(f"{path}: needs [[layers]] tables, one per layer, each with a type = \"...\"")
    children: OrderedDict[str, Module] = OrderedDict()
    arguments: list[dict] = []  # per layer, for messages
    for index, entry in enumerate(layers):
        entry = dict(entry)
        name, layer = _build_layer(path, index, entry)
        if name in children:
            raise SpecError(f"{path}: layer {index} reuses the name {name!r} of layer {list(children).index(name)}")
        children[name] = layer
        arguments.append(entry)
    model = nn.Sequential(children)
    _check_shapes(path, model, arguments, tuple(shape))
    return model, (None, *shape)


def _check_keys(path: Path, where: str, table: dict, known: tuple[str, ...]) -> None:
    unknown = [k for k in table if k not in known]
    if unknown:
        raise SpecError(f"{path}: unknown key(s) {unknown} in {where}; expected {', '.join(known)}")


def _layer_name(path: Path, index: int, name: Any) -> str:
    """The child name: the index by default; names that would clash with Module's own attributes are refused."""
    if name is None:
        return str(index)
    if not isinstance(name, str) or not name or "." in name:
        raise SpecError(f"{path}: layer {index}: name must be a non-empty string without '.', got {name!r}")
    if hasattr(nn.Sequential(), name):
        raise SpecError(f"{path}: layer {index}: name {name!r} is taken by nn.Sequential itself; pick another")
    return name


def _build_layer(path: Path, index: int, entry: dict) -> tuple[str, Module]:
    """Pops ``type`` and ``name`` from ``entry``, leaving the constructor's arguments."""
    kind = entry.pop("type", None)
    name = _layer_name(path, index, entry.pop("name", None))
    where = f"{path}: layer {index} ({name!r})"
    if kind not in LAYERS:
        raise SpecError(f"{where}: unknown layer type {kind!r}; known types: {', '.join(sorted(LAYERS))}")
    cls = LAYERS[kind]
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = [k for k in entry if k not in params]
    if unknown:
        raise SpecError(f"{where}: {kind} has no argument(s) {unknown}; it takes {params}")
    try:
        return name, cls(**entry)
    except (TypeError, ValueError, NNCCError) as e:
        raise SpecError(f"{where}: {kind}({_call_text(entry)}): {e}") from None


def _call_text(arguments: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in arguments.items())


def _check_shapes(path: Path, model: nn.Sequential, arguments: list[dict], shape: tuple) -> None:
    """Trace each layer in turn so a misfit names the layer and the shape it received."""
    from .tracer import trace_module

    current = TensorType("f32", ("N", *shape))
    for index, (name, layer) in enumerate(model._modules.items()):
        where = f"{path}: layer {index} ({name!r}, {type(layer).__name__})"
        try:
            traced = trace_module(layer, [current], name="check")
        except NNCCError as e:
            raise SpecError(f"{where} does not fit its input {current}: {e}") from None
        except (TypeError, ValueError) as e:  # an argument of the wrong kind, e.g. kernel_size = "five"
            raise SpecError(f"{where}: its arguments ({_call_text(arguments[index])}) do not work: {e}") from None
        current = traced.graph.outputs[0].type
