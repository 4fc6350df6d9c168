"""The divergence finder: run a compiled program and the numpy reference side by side, node by node, and
name the first IR node (and the kernel holding it) whose output differs beyond tolerance.

Fusion decisions do not depend on which values are graph outputs, so the program compiled here, which
returns every intermediate value, has the same kernels as the one being checked, but for one kind: a
per-sample prologue (fusion.py) needs its value unseen outside its kernel, so here its producer is a kernel of
its own and the consumer reads the value from memory. When every node agrees here, the checked program's
own results are compared too, so a fault there (in a prologue's per-sample code) is still named, with the
node computing the result and its kernel in the checked program's plan.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .compiler import CompiledModule, Program
from .ir.graph import Graph, Node, Value
from .reference import run_reference


@dataclass
class Divergence:
    node: Node
    node_text: str  # the node as the IR printer shows it
    kernel_index: int
    kernel_text: str  # the kernel's member nodes
    max_abs_error: float
    max_rel_error: float

    def __str__(self) -> str:
        return (f"first divergence at {self.node_text}\n  in kernel #{self.kernel_index}:\n{self.kernel_text}\n"
                f"  max abs error {self.max_abs_error:.3g}, max rel error {self.max_rel_error:.3g}")


def _debug_graph(graph: Graph) -> tuple[Graph, list[Value]]:
    """A copy of ``graph`` that also returns every non-constant node output."""
    g = graph.copy()
    watched = [o for n in g.nodes if n.op != "constant" for o in n.outputs]
    return g.__class__(g.name, g.inputs, g.nodes, list(g.outputs) + watched), watched


def find_divergence(compiled: CompiledModule, x: np.ndarray, target: Optional[np.ndarray] = None,
                    kind: str = "forward", rtol: float = 1e-4, atol: float = 1e-5) -> Optional[Divergence]:
    """Compare ``compiled.program(kind)`` with the reference on one batch; None when every node agrees.

    Example::

        fwd = nncc.compile(model, input_shape=(None, 1, 28, 28))
        print(find_divergence(fwd, x) or "no divergence")
    """
    program = compiled.program(kind)
    feeds = compiled._feeds([x]) if kind == "forward" else compiled._training_feeds(x, target, kind)
    if kind == "train":
        feeds.update({"lr": np.array(compiled.lr, np.float64), "step": np.array(compiled.steps + 1, np.float64)})
        feeds.update({k: v.copy() for k, v in compiled.opt_state.items()})
    feeds = {k: np.array(v) for k, v in feeds.items()}  # in-place kernels must not touch the model's state
    graph, watched = _debug_graph(program.graph)
    debug = Program(graph, compiled.target, compiled.fuse, parallel=compiled.parallel,
                    flush_denormals=compiled.flush_denormals)
    got = debug({k: np.array(v) for k, v in feeds.items()})[len(program.graph.outputs):]
    expected: dict[Value, np.ndarray] = {}
    run_reference(debug.graph, [feeds[v.name] for v in debug.graph.inputs],
                  on_node=lambda node, outs: expected.update(zip(node.outputs, outs)))
    index = {v: i for i, v in enumerate(watched)}
    lines = str(debug.graph).splitlines()
    for n_i, node in enumerate(debug.graph.nodes):
        for out in node.outputs:
            if out not in index:
                continue
            a, b = np.asarray(got[index[out]], np.float64), np.asarray(expected[out], np.float64)
            if a.shape == b.shape and np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True):
                continue
            return _report(debug, node, lines[1 + n_i].strip(), a, b)
    own = program({k: np.array(v) for k, v in feeds.items()})
    producers = {out: n_i for n_i, node in enumerate(program.graph.nodes) for out in node.outputs}
    for have, out, twin in zip(own, program.graph.outputs, debug.graph.outputs):  # the same results, in order
        a, b = np.asarray(have, np.float64), np.asarray(expected.get(twin, have), np.float64)
        if out in producers and (a.shape != b.shape or not np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True)):
            n_i = producers[out]
            text = str(program.graph).splitlines()[1 + n_i].strip()
            return _report(program, program.graph.nodes[n_i], text, a, b)
    return None


def _report(program: Program, node: Node, text: str, got: np.ndarray, expected: np.ndarray) -> Divergence:
    k_index = next(i for i, k in enumerate(program.kernels) if node in k.nodes)
    plan = program.dumps["fused"].split("kernel #")
    kernel_text = "kernel #" + plan[k_index + 1].rstrip() if k_index + 1 < len(plan) else ""
    if got.shape != expected.shape:
        return Divergence(node, text, k_index, kernel_text, float("inf"), float("inf"))
    err = np.abs(got - expected)
    rel = err / np.maximum(np.abs(expected), 1e-12)
    return Divergence(node, text, k_index, kernel_text, float(err.max()), float(rel.max()))
