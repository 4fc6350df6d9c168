"""The optimizer pass: append parameter updates to a gradient graph, producing one training-step graph.

An optimizer is any object with ``update_op`` (an op name such as ``"sgd_update"``), ``state_slots`` (the
names of its per-parameter state, e.g. ``("momentum_buffer",)``) and ``op_attrs()`` (the op's attributes);
``runtime.optim`` provides SGD, Adam and AdamW. The learning rate and the step count are f64 scalar
inputs (``lr``, ``step``), so schedules change them without recompiling.
"""
from __future__ import annotations

from ..ir.builder import GraphBuilder
from ..ir.graph import Graph
from ..ir.types import TensorType


def state_input_name(param: str, slot: str) -> str:
    return f"{param}.{slot}"


def apply_optimizer(graph: Graph, params: list[str], n_grads_start: int, optimizer) -> Graph:
    """``graph`` ends with one gradient output per ``params`` entry, from ``n_grads_start`` on.

    The result keeps the outputs before the gradients and appends, for each parameter, its new value
    followed by its new optimizer state.
    """
    b = GraphBuilder(graph.name)
    b.inputs, b.nodes = list(graph.inputs), list(graph.nodes)
    lr = b.input("lr", TensorType("f64", ()))
    step = b.input("step", TensorType("f64", ()))
    grads = graph.outputs[n_grads_start:n_grads_start + len(params)]
    outputs = list(graph.outputs[:n_grads_start])
    attrs = optimizer.op_attrs()
    for name, grad in zip(params, grads):
        p = graph.input(name)
        states = [b.input(state_input_name(name, slot), p.type) for slot in optimizer.state_slots]
        b.label = f"{optimizer.update_op} of {name}"
        outputs.extend(b.add(optimizer.update_op, [p, grad, *states, lr, step], attrs))
    return b.finish(outputs)
