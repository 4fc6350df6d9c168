"""Fusion planning: elementwise chains share a loop nest, anchors absorb their consumers as epilogues; no kernel
may wait on a value computed after it starts."""
import numpy as np

import nncc
from nncc import nn
from nncc.compiler import Program
from nncc.ir import parse_graph
from nncc.passes.fusion import format_plan, plan_kernels
from parity.nncc_models import MODELS
from runtime import optim

GRAPH = """graph g(%x: f32[N,4], %b: f32[4], %w: f32[4,4]) -> (f32[N,4], f32[N,4]) {
  %0 = add(%x, %b) : f32[N,4]
  %1 = relu(%0) : f32[N,4]
  %2 = matmul(%1, %w) {transpose_a=false, transpose_b=false} : f32[N,4]
  %3 = add(%2, %b) : f32[N,4]
  %4 = relu(%3) : f32[N,4]
  %5 = mul(%4, %1) : f32[N,4]
  %6 = sum(%5) {axes=[1], keepdims=true} : f32[N,1]
  %7 = sub(%5, %6) : f32[N,4]
  %8 = exp(%6) : f32[N,1]
  %9 = add(%7, %8) : f32[N,4]
  return %9, %1
}
"""
# Elementwise fusion only (the CUDA target's plan): %7 reads %5 from kernel #2 but also %6, which is computed
# after kernel #2 starts: fused into kernel #2 it would wait on its own output, so it starts a kernel. %8 loops
# over a smaller domain than %7's kernel.
ELEMENTWISE_PLAN = """kernels of graph g: 7
kernel #0 (elementwise, 2 nodes):
    %0 = add(%x, %b)
    %1 = relu(%0)
kernel #1 (kernel, 1 node):
    %2 = matmul(%1, %w) {transpose_a=false, transpose_b=false}
kernel #2 (elementwise, 3 nodes):
    %3 = add(%2, %b)
    %4 = relu(%3)
    %5 = mul(%4, %1)
kernel #3 (kernel, 1 node):
    %6 = sum(%5) {axes=[1], keepdims=true}
kernel #4 (elementwise, 1 node):
    %7 = sub(%5, %6)
kernel #5 (elementwise, 1 node):
    %8 = exp(%6)
kernel #6 (elementwise, 1 node):
    %9 = add(%7, %8)
"""
# With epilogues (the CPU target's plan), the matmul anchor absorbs the chain that reads its output; mul's
# other input %1 exists before the anchor starts.
PLAN = """kernels of graph g: 6
kernel #0 (elementwise, 2 nodes):
    %0 = add(%x, %b)
    %1 = relu(%0)
kernel #1 (kernel + 3-node epilogue, 4 nodes):
    %2 = matmul(%1, %w) {transpose_a=false, transpose_b=false}
    %3 = add(%2, %b)
    %4 = relu(%3)
    %5 = mul(%4, %1)
kernel #2 (kernel, 1 node):
    %6 = sum(%5) {axes=[1], keepdims=true}
kernel #3 (elementwise, 1 node):
    %7 = sub(%5, %6)
kernel #4 (elementwise, 1 node):
    %8 = exp(%6)
kernel #5 (elementwise, 1 node):
    %9 = add(%7, %8)
"""


def assert_schedulable(graph, kernels):
    """Every node is in exactly one kernel, and running the kernels in order, each finds its inputs ready."""
    planned = [n for k in kernels for n in k.nodes]
    assert sorted(map(id, planned)) == sorted(map(id, graph.nodes))
    ready = set(graph.inputs)
    for i, k in enumerate(kernels):
        missing = [v for v in k.inputs if v not in ready]
        assert not missing, f"kernel #{i} reads {missing} before they are computed"
        inside = set()
        for node in k.nodes:
            assert all(v in ready or v in inside for v in node.inputs), f"kernel #{i}: {node.op} reads a later value"
            inside.update(node.outputs)
        ready |= inside


def test_add_relu_chains_fuse_and_the_plan_never_waits_on_itself():
    graph = parse_graph(GRAPH)
    kernels = plan_kernels(graph, epilogues=False)
    assert format_plan(graph, kernels) == ELEMENTWISE_PLAN
    assert_schedulable(graph, kernels)


def test_anchors_absorb_the_elementwise_chain_reading_their_output():
    graph = parse_graph(GRAPH)
    kernels = plan_kernels(graph)
    assert format_plan(graph, kernels) == PLAN
    assert_schedulable(graph, kernels)
    assert [n.op for n in kernels[1].epilogue] == ["add", "relu", "mul"]
    assert kernels[1].outputs == [graph.nodes[5].outputs[0]]  # only %5 leaves: the product stays inside


def test_fused_epilogues_compute_what_the_reference_does():
    """conv2d + relu and matmul + bias + relu chains, inference and training, fused and unfused."""
    nncc.manual_seed(0)
    model = MODELS["lenet"][0]()
    x = np.random.default_rng(0).random((3, 1, 28, 28), np.float32)
    fused = nncc.compile(model, input_shape=(None, 1, 28, 28))
    assert "epilogue" in fused.ir("fused") and "_epilogue(" in fused.source()
    np.testing.assert_allclose(fused(x), nncc.compile(model, input_shape=(None, 1, 28, 28), fuse=False)(x),
                               rtol=1e-5, atol=1e-6)


def test_kernel_boundaries_list_only_values_that_cross_them():
    graph = parse_graph(GRAPH)
    first = plan_kernels(graph)[0]
    add, relu = first.nodes
    assert first.inputs == [graph.input("x"), graph.input("b")]
    assert first.outputs == relu.outputs  # %1 is read by later kernels and returned; %0 stays inside
    assert add.outputs[0] not in first.outputs


def test_without_fusion_every_node_is_its_own_kernel():
    graph = parse_graph(GRAPH)
    kernels = plan_kernels(graph, fuse=False)
    assert [k.nodes for k in kernels] == [[n] for n in graph.nodes]
    assert_schedulable(graph, kernels)


def test_a_consumer_over_a_larger_domain_is_not_fused():
    graph = parse_graph("""graph g(%x: f32[4], %y: f32[N,4]) -> (f32[N,4]) {
  %0 = exp(%x) : f32[4]
  %1 = add(%0, %y) : f32[N,4]
  %2 = relu(%1) : f32[N,4]
  return %2
}
""")
    assert [len(k.nodes) for k in plan_kernels(graph)] == [1, 2]


def test_the_plans_of_a_training_step_are_schedulable():
    cls, shape, _ = MODELS["bn_cnn"]
    nncc.manual_seed(0)
    step = nncc.compile(cls(), input_shape=(None, *shape), loss=nn.CrossEntropyLoss(), optimizer=optim.Adam())
    graph = step.program("train").graph  # emitted and imported, never run: no kernel is compiled
    fused = plan_kernels(graph)
    assert_schedulable(graph, fused)
    assert_schedulable(graph, plan_kernels(graph, fuse=False))
    assert len(fused) < len(graph.nodes)


CONV_GRADS = """graph g(%x: f32[N,2,5,5], %gy: f32[N,3,3,3], %w: f32[3,2,3,3]) -> (f32[3,2,3,3], f32[3], f32[N,3,3]) {
  %0 = conv2d_backward_weight(%x, %gy, %w) {dilation=[1, 1], groups=1, padding=[0, 0], stride=[1, 1]} : f32[3,2,3,3]
  %1 = sum(%gy) {axes=[0, 2, 3], keepdims=false} : f32[3]
  %2 = sum(%gy) {axes=[1], keepdims=false} : f32[N,3,3]
  return %0, %1, %2
}
"""
# The sum of the weight gradient's output gradient over every axis but the channels (the conv's bias gradient)
# joins it on the CPU; a sum over other axes does not.
CONV_GRADS_PLAN = """kernels of graph g: 2
kernel #0 (kernel + bias gradient, 2 nodes):
    %0 = conv2d_backward_weight(%x, %gy, %w) {dilation=[1, 1], groups=1, padding=[0, 0], stride=[1, 1]}
    %1 = sum(%gy) {axes=[0, 2, 3], keepdims=false}
kernel #1 (kernel, 1 node):
    %2 = sum(%gy) {axes=[1], keepdims=false}
"""


def test_a_conv_weight_gradient_absorbs_the_bias_gradient_on_the_cpu():
    graph = parse_graph(CONV_GRADS)
    kernels = plan_kernels(graph)
    assert format_plan(graph, kernels) == CONV_GRADS_PLAN
    assert kernels[0].bias_sum is graph.nodes[1] and kernels[0].epilogue == []
    assert len(plan_kernels(graph, epilogues=False)) == 3  # the CUDA target's plan keeps three kernels
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((4, 2, 5, 5)).astype(np.float32),
             "gy": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
             "w": rng.standard_normal((3, 2, 3, 3)).astype(np.float32)}
    fused, unfused = Program(parse_graph(CONV_GRADS))(feeds), Program(parse_graph(CONV_GRADS), fuse=False)(feeds)
    for have, want in zip(fused, unfused):
        np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-5)


LINEAR_GRADS = """graph g(%x: f32[N,4096], %gy: f32[N,64], %w: f32[64,4096]) -> (f32[64], f32[N,4096], f32[64,4096]) {
  %0 = sum(%gy) {axes=[0], keepdims=true} : f32[1,64]
  %1 = reshape(%0) {shape=[64]} : f32[64]
  %2 = matmul(%gy, %w) {transpose_a=false, transpose_b=false} : f32[N,4096]
  %3 = matmul(%gy, %x) {transpose_a=true, transpose_b=false} : f32[64,4096]
  return %1, %2, %3
}
"""
# A linear layer's gradients as autodiff writes them (the bias's sum first): the schedule pass moves the sum and
# the reshape reading it after the weight gradient, gy^T @ x, which takes the sum in; the input gradient does not.
LINEAR_GRADS_PLAN = """kernels of graph g: 3
kernel #0 (kernel, 1 node):
    %0 = matmul(%gy, %w) {transpose_a=false, transpose_b=false}
kernel #1 (kernel + bias gradient, 2 nodes):
    %1 = matmul(%gy, %x) {transpose_a=true, transpose_b=false}
    %2 = sum(%gy) {axes=[0], keepdims=true}
kernel #2 (view, 1 node):
    %3 = reshape(%2) {shape=[64]}
"""


def test_a_matrix_products_weight_gradient_absorbs_the_bias_gradient_on_the_cpu():
    fused = Program(parse_graph(LINEAR_GRADS))
    assert fused.dumps["fused"] == LINEAR_GRADS_PLAN
    unfused = Program(parse_graph(LINEAR_GRADS), fuse=False)
    for batch in (1, 7):  # the weight gradient is big enough to split: its second chunk's columns start past 0
        rng = np.random.default_rng(batch)
        feeds = {"x": rng.standard_normal((batch, 4096)).astype(np.float32),
                 "gy": rng.standard_normal((batch, 64)).astype(np.float32),
                 "w": rng.standard_normal((64, 4096)).astype(np.float32)}
        for have, want in zip(fused(feeds), unfused(feeds)):
            np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(fused(feeds)[0], feeds["gy"].sum(axis=0), rtol=1e-5, atol=1e-5)


POOL = "{ceil_mode=false, dilation=[1, 1], kernel=[2, 2], padding=[0, 0], relu_mask=true, stride=[2, 2]}"
POOL_OVERLAPPING = "{ceil_mode=false, dilation=[1, 1], kernel=[2, 2], padding=[0, 0], relu_mask=true, stride=[1, 1]}"
CONV = "{dilation=[1, 1], groups=1, padding=[0, 0], stride=[1, 1]}"
POOL_GRADS = f"""graph g(%x: f32[N,2,8,8], %a: f32[N,16,6,6], %ga: f32[N,16,3,3], %gc: f32[N,16,3,3], \
%gb: f32[N,16,5,5], %w: f32[16,2,3,3]) -> (f32[16,2,3,3], f32[16], f32[16,2,3,3], f32[N,2,8,8], f32[16,2,3,3]) {{
  %0 = max_pool2d_backward(%a, %ga) {POOL} : f32[N,16,6,6]
  %1 = conv2d_backward_weight(%x, %0, %w) {CONV} : f32[16,2,3,3]
  %2 = sum(%0) {{axes=[0, 2, 3], keepdims=false}} : f32[16]
  %3 = max_pool2d_backward(%a, %gc) {POOL} : f32[N,16,6,6]
  %4 = conv2d_backward_weight(%x, %3, %w) {CONV} : f32[16,2,3,3]
  %5 = conv2d_backward_input(%3, %w, %x) {CONV} : f32[N,2,8,8]
  %6 = max_pool2d_backward(%a, %gb) {POOL_OVERLAPPING} : f32[N,16,6,6]
  %7 = conv2d_backward_weight(%x, %6, %w) {CONV} : f32[16,2,3,3]
  return %1, %2, %4, %5, %7
}}
"""
# A weight gradient takes in the max-pool backward that only it and its bias gradient read (its "prologue":
# computed one sample at a time into a scratch of the kernel's); not one whose output another node reads (%3),
# nor one whose windows overlap (%6: no per-sample form).
POOL_GRADS_PLAN = f"""kernels of graph g: 6
kernel #0 (kernel + bias gradient + per-sample prologue, 3 nodes):
    %0 = max_pool2d_backward(%a, %ga) {POOL}
    %1 = conv2d_backward_weight(%x, %0, %w) {CONV}
    %2 = sum(%0) {{axes=[0, 2, 3], keepdims=false}}
kernel #1 (kernel, 1 node):
    %3 = max_pool2d_backward(%a, %gc) {POOL}
kernel #2 (kernel, 1 node):
    %4 = conv2d_backward_weight(%x, %3, %w) {CONV}
kernel #3 (kernel, 1 node):
    %5 = conv2d_backward_input(%3, %w, %x) {CONV}
kernel #4 (kernel, 1 node):
    %6 = max_pool2d_backward(%a, %gb) {POOL_OVERLAPPING}
kernel #5 (kernel, 1 node):
    %7 = conv2d_backward_weight(%x, %6, %w) {CONV}
"""


def test_a_conv_weight_gradient_computes_a_max_pool_gradient_only_it_reads_per_sample():
    graph = parse_graph(POOL_GRADS)
    kernels = plan_kernels(graph)
    assert format_plan(graph, kernels) == POOL_GRADS_PLAN
    assert kernels[0].prologue is graph.nodes[0] and kernels[0].anchor is graph.nodes[1]
    assert_schedulable(graph, kernels)
    assert all(k.prologue is None for k in plan_kernels(graph, epilogues=False))  # the CUDA target's plan
    rng = np.random.default_rng(0)
    shapes = {"x": (3, 2, 8, 8), "a": (3, 16, 6, 6), "ga": (3, 16, 3, 3), "gc": (3, 16, 3, 3),
              "gb": (3, 16, 5, 5), "w": (16, 2, 3, 3)}
    feeds = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    fused = Program(parse_graph(POOL_GRADS))
    prologue = next(k.prologue for k in fused.kernels if k.prologue is not None)
    assert prologue.outputs[0] not in fused.memory.placements  # the pool's gradient gets no buffer
    for have, want in zip(fused(feeds), Program(parse_graph(POOL_GRADS), fuse=False)(feeds)):
        np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-5)


def test_a_second_reader_of_the_pool_gradient_keeps_it_in_memory():
    """Only one bias sum joins a weight gradient: with two, the second reads the pool's gradient from memory,
    so there is no prologue."""
    lines = POOL_GRADS.splitlines()
    twice = "\n".join(lines[:5] + ["  %8 = sum(%0) {axes=[0, 2, 3], keepdims=false} : f32[16]"] + lines[5:])
    twice = twice.replace("return %1, %2, %4, %5, %7", "return %1, %2, %4, %5, %7, %8").replace(
        "f32[16,2,3,3]) {", "f32[16,2,3,3], f32[16]) {")
    graph = parse_graph(twice)
    assert all(k.prologue is None for k in plan_kernels(graph))
