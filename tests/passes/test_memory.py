"""Memory planning: buffers alive at the same time never share arena bytes, for any batch size."""
import sys
from pathlib import Path

import numpy as np

import nncc
from nncc import nn
from nncc.passes.fusion import plan_kernels
from nncc.passes.memory import plan_memory
from runtime import optim

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from lenet import LeNet  # noqa: E402


def _intervals(graph, kernels):
    """(start, end) kernel indices of every value, views folded into the buffer they alias."""
    start, end, root = {}, {}, {}
    for i, k in enumerate(kernels):
        for v in k.inputs:
            r = root.get(v, v)
            end[r] = max(end.get(r, i), i)
        for node in k.nodes:
            if node.op == "reshape":
                root[node.outputs[0]] = root.get(node.inputs[0], node.inputs[0])
            for o in node.outputs:
                start.setdefault(o, i)
        if k.epilogue:  # an anchor's result is a buffer its own epilogue reads
            result = k.nodes[0].outputs[0]
            end[result] = max(end.get(result, i), i)
    return start, end


def _training_graph():
    nncc.manual_seed(0)
    step = nncc.compile(LeNet(), input_shape=(None, 1, 28, 28), loss=nn.CrossEntropyLoss(),
                        optimizer=optim.SGD(lr=0.01, momentum=0.9))
    return step.program("train").graph


def test_live_buffers_never_overlap():
    graph = _training_graph()
    kernels = plan_kernels(graph)
    plan = plan_memory(graph, kernels)
    start, end = _intervals(graph, kernels)
    assert len(plan.placements) > 10
    for batch in (1, 7, 64):
        ranges = []
        for v, place in plan.placements.items():
            size = v.type.numel_static() * (batch if place.per_sample else 1)
            offset = place.offset * batch if place.per_sample else plan.per_sample_size * batch + place.offset
            assert offset + size <= plan.arena_elements(batch)
            ranges.append((offset, offset + size, start[v], end[v], v))
        for a in ranges:
            for b in ranges:
                if a is b or a[3] < b[2] or b[3] < a[2]:
                    continue
                assert a[1] <= b[0] or b[1] <= a[0], f"{a[4]} and {b[4]} overlap while both live"


def test_plan_shrinks_memory_and_keeps_outputs_out_of_the_arena():
    graph = _training_graph()
    plan = plan_memory(graph, plan_kernels(graph))
    # per-sample activations are reused (14112 of 22900 elements per sample; epilogue fusion already keeps
    # conv and matmul results that only their consumers read out of memory, which the 22900 does not count)
    assert plan.per_sample_size < 0.75 * plan.unplanned_size[0]
    assert plan.arena_elements(64) * 4 < 0.75 * plan.bytes_without_plan(64, 4)  # 3.80 of 6.11 MB
    assert not set(graph.outputs) & set(plan.placements)


def test_planned_and_unplanned_steps_agree():
    rng = np.random.default_rng(0)
    x = rng.random((5, 1, 28, 28), np.float32)
    y = rng.integers(0, 10, 5)
    losses = []
    for fuse in (True, False):
        nncc.manual_seed(1)
        step = nncc.compile(LeNet(), input_shape=(None, 1, 28, 28), loss=nn.CrossEntropyLoss(),
                            optimizer=optim.SGD(lr=0.01, momentum=0.9), fuse=fuse)
        losses.append([step.train_step(x, y) for _ in range(3)])
        assert (step.program("train").memory is not None) == fuse
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
