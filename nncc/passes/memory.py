"""Memory planning: liveness-based reuse of one arena for the intermediate buffers of a kernel plan.

Buffers whose size scales with the batch (``c * N`` elements) live in the arena's first part at offsets
``o * N``; a first-fit on ``c`` is then valid for every batch size, so one plan serves all of them. Buffers of
fixed size (weight gradients, say) live after it at fixed offsets. Graph outputs, and the buffers they are
views of, are never placed in the arena: the caller keeps them. A buffer is live from the kernel that writes
it to the last kernel that reads it or any view of it, both inclusive, so a kernel never writes over its own
inputs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.graph import Graph, Value
from ..ir.types import TensorType
from ..ops.registry import get_op
from .fusion import Kernel


@dataclass
class Placement:
    offset: int  # elements; multiplied by the batch size when ``per_sample``
    per_sample: bool


@dataclass
class MemoryPlan:
    dtype: str
    symbol: str | None  # the batch symbol that per-sample sizes scale with
    per_sample_size: int = 0  # arena elements per batch element
    static_size: int = 0  # arena elements independent of the batch
    placements: dict[Value, Placement] = field(default_factory=dict)
    unplanned_size: tuple[int, int] = (0, 0)  # (per-sample, static) elements had each buffer its own allocation

    @property
    def dtype_np(self):
        return TensorType(self.dtype, ()).np_dtype

    def arena_elements(self, batch: int) -> int:
        return self.per_sample_size * batch + self.static_size

    def bytes_without_plan(self, batch: int, itemsize: int) -> int:
        return (self.unplanned_size[0] * batch + self.unplanned_size[1]) * itemsize


def _size(v: Value, symbol: str | None) -> tuple[int, bool] | None:
    """(elements, scales with the batch) or None when the size is not c * symbol or constant."""
    count, symbols = 1, [d for d in v.type.shape if isinstance(d, str)]
    for d in v.type.shape:
        if isinstance(d, int):
            count *= d
    if not symbols:
        return count, False
    if symbols == [symbol]:
        return count, True
    return None


def _first_fit(intervals: list[tuple[Value, int, int, int]]) -> tuple[dict[Value, int], int]:
    """Offsets for (value, size, start, end) so that buffers live at the same time never overlap."""
    placed: list[tuple[int, int, int, int]] = []  # offset, size, start, end
    offsets, top = {}, 0
    for v, size, start, end in sorted(intervals, key=lambda t: (t[2], -t[1])):
        busy = sorted((o, o + s) for o, s, a, b in placed if not (b < start or end < a))
        offset = 0
        for lo, hi in busy:
            if offset + size <= lo:
                break
            offset = max(offset, hi)
        offsets[v] = offset
        placed.append((offset, size, start, end))
        top = max(top, offset + size)
    return offsets, top


def plan_memory(graph: Graph, kernels: list[Kernel], dtype: str = "f32") -> MemoryPlan:
    """Place every ``dtype`` buffer that a kernel allocates (not graph outputs) in one arena."""
    symbol = next((d for v in graph.inputs for d in v.type.shape if isinstance(d, str)), None)
    root: dict[Value, Value] = {}  # view -> the buffer it aliases
    start: dict[Value, int] = {}
    end: dict[Value, int] = {}
    candidates: list[Value] = []
    for index, kernel in enumerate(kernels):
        for v in kernel.inputs:
            r = root.get(v, v)
            end[r] = max(end.get(r, index), index)
        for node in kernel.nodes:
            op = get_op(node.op)
            if op.kind == "view":
                root[node.outputs[0]] = root.get(node.inputs[0], node.inputs[0])
                continue
            if node.op == "constant":
                continue
            for i, out in enumerate(node.outputs):
                if i in op.inplace or out.dtype != dtype:
                    continue
                candidates.append(out)
                start[out] = index
        if kernel.epilogue:  # the anchor's result is a buffer its epilogue reads back, even if nothing else does
            result = kernel.nodes[0].outputs[0]
            end[result] = max(end.get(result, index), index)
    kept = {root.get(v, v) for v in graph.outputs}
    plan = MemoryPlan(dtype, symbol)
    groups: dict[bool, list] = {True: [], False: []}
    unplanned = [0, 0]
    for v in candidates:
        sized = _size(v, symbol)
        if v in kept or sized is None or v not in end:
            continue
        size, per_sample = sized
        unplanned[0 if per_sample else 1] += size
        groups[per_sample].append((v, size, start[v], end[v]))
    plan.unplanned_size = (unplanned[0], unplanned[1])
    for per_sample in (True, False):
        offsets, top = _first_fit(groups[per_sample])
        for v, offset in offsets.items():
            plan.placements[v] = Placement(offset, per_sample)
        if per_sample:
            plan.per_sample_size = top
        else:
            plan.static_size = top
    return plan
