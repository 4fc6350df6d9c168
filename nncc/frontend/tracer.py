"""Trace a Module into a Graph: inputs, then parameters and buffers under their state_dict names."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..errors import ShapeError
from ..ir.builder import GraphBuilder
from ..ir.graph import Graph
from ..ir.types import TensorType, dtype_of
from .nn.module import Module
from .tracing import Tensor, Trace, tracing


@dataclass
class TracedModel:
    """A traced graph and the meaning of its inputs and outputs.

    Inputs: ``data_inputs`` (and ``target`` with a loss), then ``params``, then ``buffers``, then the dropout
    seed when ``has_seed``. Outputs: the model's outputs (with a loss: the loss, then the model's first
    output), then the new value of each buffer in ``buffer_updates``.
    """

    graph: Graph
    data_inputs: list[str]
    params: list[str]
    buffers: list[str]
    buffer_updates: list[str] = field(default_factory=list)
    n_outputs: int = 1
    has_seed: bool = False


def trace_module(module: Module, input_types: list[TensorType], training: bool = False, loss: Optional[Module] = None,
                 target_type: Optional[TensorType] = None, name: Optional[str] = None) -> TracedModel:
    """Run ``module.forward`` on traced tensors. With ``loss``, output 0 is ``loss(module(x), target)``."""
    module.assign_paths()
    was_training = module.training
    module.train(training)
    b = GraphBuilder(name or type(module).__name__.lower())
    data_names = ["x"] if len(input_types) == 1 else [f"x{i}" for i in range(len(input_types))]
    xs = [Tensor(b.input(n, t)) for n, t in zip(data_names, input_types)]
    if loss is not None:
        data_names.append("target")
        target = Tensor(b.input("target", target_type))
    trace = Trace(b, training)
    params = list(module.named_parameters())
    buffers = list(module.named_buffers())
    for pname, arr in params + buffers:
        trace.param_values[id(arr)] = b.input(pname, TensorType(dtype_of(arr.dtype), arr.shape))
    try:
        with tracing(trace):
            out = module(*xs)
            outs = list(out) if isinstance(out, (tuple, list)) else [out]
            if not all(isinstance(o, Tensor) for o in outs):
                raise ShapeError(f"{type(module).__name__}.forward must return traced tensors, got "
                                 f"{[type(o).__name__ for o in outs]}")
            if loss is not None:
                b.label = type(loss).__name__
                outs = [loss(outs[0], target), outs[0]]
    finally:
        module.train(was_training)
    names_by_id = {id(arr): n for n, arr in buffers}
    updated = [names_by_id[i] for i in trace.buffer_updates]
    graph = b.finish([o.value for o in outs] + list(trace.buffer_updates.values()))
    return TracedModel(graph, data_names, [n for n, _ in params], [n for n, _ in buffers], updated, len(outs),
                       trace.seed is not None)
