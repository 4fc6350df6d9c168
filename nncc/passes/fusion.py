"""Fusion: partition a graph's nodes into kernels.

Elementwise nodes join the kernel of an elementwise producer when they loop over the same output shape, so a chain
such as ``add -> relu`` or an optimizer's arithmetic becomes one loop nest. With ``epilogues``, they also join an
anchor (an op declaring ``epilogue``, such as conv2d or matmul) whose output they read: the anchor's lowering then
applies them to each block of output rows it finishes (conv2d: per sample, while the sample is in cache). Also
with ``epilogues``, the sum over every axis but 1 of the input an anchor declaring ``bias_grad`` names joins it (a
weight gradient, a conv's or a matrix product's: the bias gradient is that sum of the same output gradient, added
up while it is in cache; the schedule pass puts such sums after their anchor), and such an anchor declaring
``prologue`` takes in the producer of its input #1 when nothing else reads that value and the producer has a
per-sample form (``sample_prologue``: a max-pool backward): the anchor computes each sample of it into a scratch
of its own, so the whole gradient never goes to memory. Every other node is a kernel of its own. A node joins a
kernel only if its other inputs exist before the kernel starts, so the partition never creates a cycle. The result
is a plan for the codegen; the IR itself is unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.graph import Graph, Node, Value
from ..ops.registry import get_op


@dataclass(eq=False)
class Kernel:
    """A group of IR nodes emitted as one function. ``kind`` is the op kind of its members."""

    nodes: list[Node]
    kind: str
    outputs: list[Value] = field(default_factory=list)  # values read outside the kernel
    inputs: list[Value] = field(default_factory=list)  # values the kernel reads from outside
    prologue: Node | None = None  # the producer of the anchor's input #1, computed per sample (nodes[0])

    @property
    def anchor(self) -> Node:
        """The node whose lowering is the kernel (the first, or the one after the prologue)."""
        return self.nodes[1] if self.prologue is not None else self.nodes[0]

    @property
    def domain(self):
        return self.nodes[0].outputs[0].type

    @property
    def epilogue(self) -> list[Node]:
        """The elementwise nodes an anchor kernel applies to its output (empty for other kernels)."""
        return [n for n in self.nodes[1:] if get_op(n.op).kind == "elementwise"] if self.kind == "kernel" else []

    @property
    def bias_sum(self) -> Node | None:
        """The sum a ``bias_grad`` anchor computes alongside its output, if the fusion pass gave it one."""
        return next((n for n in self.nodes[1:] if n.op == "sum"), None) if self.kind == "kernel" else None


def plan_kernels(graph: Graph, fuse: bool = True, epilogues: bool = True) -> list[Kernel]:
    """Partition ``graph`` into kernels; ``epilogues`` lets anchors absorb elementwise consumers (the targets
    whose emitters implement epilogues say so)."""
    kernels: list[Kernel] = []
    home: dict[Value, Kernel] = {}
    position: dict[Kernel, int] = {}  # index of the kernel's first node
    produced_at: dict[Value, int] = {}
    readers: dict[Value, list[Node]] = {}
    for node in graph.nodes:
        for v in node.inputs:
            readers.setdefault(v, []).append(node)
    for index, node in enumerate(graph.nodes):
        kind = get_op(node.op).kind
        target = None
        if fuse:
            target = _fusable_kernel(node, kind, home, position, produced_at, epilogues) or \
                (_bias_grad_kernel(node, kernels) or _prologue_kernel(node, graph, home, position, produced_at,
                                                                      readers) if epilogues else None)
        if target is None:
            target = Kernel([], kind)
            position[target] = index
            kernels.append(target)
        target.nodes.append(node)
        for out in node.outputs:
            home[out] = target
            produced_at[out] = index
    _fill_boundaries(graph, kernels, home)
    return kernels


def _fusable_kernel(node, kind, home, position, produced_at, epilogues):
    if kind != "elementwise":
        return None
    for v in node.inputs:
        k = home.get(v)
        if k is None or k.domain.shape != node.outputs[0].type.shape or not _absorbs(k, epilogues):
            continue
        start = position[k]
        if all(home.get(u) is k or produced_at.get(u, -1) < start for u in node.inputs):
            return k
    return None


def _bias_grad_kernel(node, kernels: list[Kernel]):
    """The kernel of a ``bias_grad`` anchor, alone or after its prologue, whose bias input ``node`` sums."""
    if not is_bias_sum(node):
        return None
    return next((k for k in kernels if len(k.nodes) == 1 + (k.prologue is not None)
                 and bias_input(k.anchor) is node.inputs[0]), None)


def bias_input(anchor: Node) -> Value | None:
    """The input whose bias gradient (its sum over every axis but 1) ``anchor`` can compute alongside its own
    output (OpDef.bias_grad), if any."""
    rule = get_op(anchor.op).bias_grad
    index = rule(anchor) if rule is not None else None
    return None if index is None else anchor.inputs[index]


def is_bias_sum(node: Node) -> bool:
    """Whether ``node`` sums its input over every axis but 1 (a bias gradient; kept dims or not)."""
    if node.op != "sum":
        return False
    x = node.inputs[0]
    return x.type.rank >= 2 and sorted(node.attrs["axes"]) == [a for a in range(x.type.rank) if a != 1]


def _prologue_kernel(node, graph: Graph, home, position, produced_at, readers):
    """The lone kernel of the producer of a ``prologue`` anchor's input #1, when only the anchor and its bias
    sum read that value, the producer has a per-sample form and the anchor's other inputs exist before it."""
    op = get_op(node.op)
    gy = node.inputs[1] if op.prologue else None
    producer = home.get(gy)
    if producer is None or len(producer.nodes) != 1 or producer.kind != "kernel" or gy in graph.outputs:
        return None
    source = producer.nodes[0]
    maker = get_op(source.op).sample_prologue
    if maker is None or maker(source, "PROLOGUE") is None or len(source.outputs) != 1 or \
            not any(v.type.shape == gy.type.shape for v in source.inputs):  # the anchor's loops take that shape
        return None
    others = [r for r in readers.get(gy, []) if r is not node]
    if len(others) > 1 or any(not is_bias_sum(r) for r in others):  # one bias sum at most: it joins the kernel
        return None
    if any(produced_at.get(v, -1) >= position[producer] for v in node.inputs if v is not gy):
        return None
    producer.prologue = source
    return producer


def _absorbs(kernel: Kernel, epilogues: bool) -> bool:
    """Whether elementwise consumers of ``kernel``'s values may join it: anchors hand their epilogue ranges of
    output rows, so they need one output with a leading axis."""
    if kernel.kind == "elementwise":
        return True
    anchor = kernel.anchor
    return (epilogues and kernel.kind == "kernel" and get_op(anchor.op).epilogue and len(anchor.outputs) == 1
            and anchor.outputs[0].type.rank > 0 and kernel.bias_sum is None and kernel.prologue is None)


def _fill_boundaries(graph: Graph, kernels: list[Kernel], home: dict[Value, Kernel]) -> None:
    graph_outputs = set(graph.outputs)
    readers: dict[Value, set] = {}
    for k in kernels:
        for node in k.nodes:
            for v in node.inputs:
                readers.setdefault(v, set()).add(k)
    for k in kernels:
        for node in k.nodes:
            for v in node.inputs:
                if home.get(v) is not k and v not in k.inputs:
                    k.inputs.append(v)
            for out in node.outputs:
                if out in graph_outputs or readers.get(out, set()) - {k}:
                    k.outputs.append(out)


def format_plan(graph: Graph, kernels: list[Kernel]) -> str:
    """The kernel plan as text: each kernel with the IR nodes it absorbed (names as the IR printer numbers them)."""
    from ..codegen.cpu.emitter import describe_node

    names = {v: "%" + v.name for v in graph.inputs}
    counter = 0
    for node in graph.nodes:
        for out in node.outputs:
            names[out] = f"%{counter}"
            counter += 1
    lines = [f"kernels of graph {graph.name}: {len(kernels)}"]
    for i, k in enumerate(kernels):
        kind = f"{k.kind} + {len(k.epilogue)}-node epilogue" if k.epilogue else k.kind
        kind += " + bias gradient" if k.bias_sum else ""
        kind += " + per-sample prologue" if k.prologue is not None else ""
        lines.append(f"kernel #{i} ({kind}, {len(k.nodes)} node{'s' if len(k.nodes) > 1 else ''}):")
        lines.extend("    " + describe_node(n, names) for n in k.nodes)
    return "\n".join(lines) + "\n"
