"""Golden IR tests for the simplification passes: this text in, that text out."""
import pytest

from nncc.compiler import SIMPLIFY
from nncc.errors import IRError
from nncc.ir import parse_graph, print_graph, verify
from nncc.passes.manager import PassManager
from nncc.passes.simplify import (eliminate_common_subexpressions, eliminate_dead_code, fold_constants,
                                  simplify_algebra)


def run(pass_fn, text: str) -> str:
    graph = pass_fn(parse_graph(text))
    verify(graph)
    return print_graph(graph)


CASES = {
    "fold_constants": (fold_constants, """graph g(%x: f32[N,2]) -> (f32[N,2]) {
  %0 = constant() {value=dense<f32[2]>[1.0, 2.0]} : f32[2]
  %1 = constant() {value=dense<f32[]>[3.0]} : f32[]
  %2 = mul(%0, %1) : f32[2]
  %3 = exp(%2) : f32[2]
  %4 = add(%x, %2) : f32[N,2]
  return %4
}
""", """graph g(%x: f32[N,2]) -> (f32[N,2]) {
  %0 = constant() {value=dense<f32[2]>[3.0, 6.0]} : f32[2]
  %1 = add(%x, %0) : f32[N,2]
  return %1
}
"""),
    "cse": (eliminate_common_subexpressions, """graph g(%x: f32[2]) -> (f32[2], f32[], f32[1]) {
  %0 = relu(%x) : f32[2]
  %1 = relu(%x) : f32[2]
  %2 = sum(%x) {axes=[0], keepdims=false} : f32[]
  %3 = sum(%x) {axes=[0], keepdims=true} : f32[1]
  %4 = add(%0, %1) : f32[2]
  return %4, %2, %3
}
""", """graph g(%x: f32[2]) -> (f32[2], f32[], f32[1]) {
  %0 = relu(%x) : f32[2]
  %1 = sum(%x) {axes=[0], keepdims=false} : f32[]
  %2 = sum(%x) {axes=[0], keepdims=true} : f32[1]
  %3 = add(%0, %0) : f32[2]
  return %3, %1, %2
}
"""),
    "dce": (eliminate_dead_code, """graph g(%x: f32[2], %unused: f32[3]) -> (f32[2]) {
  %0 = exp(%x) : f32[2]
  %1 = log(%0) : f32[2]
  %2 = neg(%unused) : f32[3]
  return %0
}
""", """graph g(%x: f32[2], %unused: f32[3]) -> (f32[2]) {
  %0 = exp(%x) : f32[2]
  return %0
}
"""),
    "simplify_algebra": (simplify_algebra, """graph g(%x: f32[N,2,3]) -> (f32[N,6], f32[N,2,3]) {
  %0 = reshape(%x) {shape=["N", 3, 2]} : f32[N,3,2]
  %1 = reshape(%0) {shape=["N", 6]} : f32[N,6]
  %2 = transpose(%x) {perm=[0, 1, 2]} : f32[N,2,3]
  %3 = reshape(%2) {shape=["N", 2, 3]} : f32[N,2,3]
  return %1, %3
}
""", """graph g(%x: f32[N,2,3]) -> (f32[N,6], f32[N,2,3]) {
  %0 = reshape(%x) {shape=["N", 6]} : f32[N,6]
  return %0, %x
}
"""),
    # relu_backward(a, max_pool2d_backward(a, g)) folds; a mask on another value (%1), or on a pool gradient
    # read elsewhere (%5), stays
    "simplify_algebra_folds_relu_masks_into_max_pool_backward": (
        simplify_algebra, """graph g(%a: f32[N,1,4,4], %b: f32[N,1,4,4], %g: f32[N,1,2,2]) -> (f32[N,1,4,4], f32[N,1,4,4], f32[N,1,4,4], f32[N,1,4,4]) {
  %0 = max_pool2d_backward(%a, %g) {kernel=[2, 2], stride=[2, 2]} : f32[N,1,4,4]
  %1 = relu_backward(%a, %0) : f32[N,1,4,4]
  %2 = max_pool2d_backward(%b, %g) {kernel=[2, 2], stride=[2, 2]} : f32[N,1,4,4]
  %3 = relu_backward(%a, %2) : f32[N,1,4,4]
  %4 = max_pool2d_backward(%b, %g) {kernel=[2, 2], stride=[2, 2]} : f32[N,1,4,4]
  %5 = relu_backward(%b, %4) : f32[N,1,4,4]
  return %1, %3, %5, %4
}
""", """graph g(%a: f32[N,1,4,4], %b: f32[N,1,4,4], %g: f32[N,1,2,2]) -> (f32[N,1,4,4], f32[N,1,4,4], f32[N,1,4,4], f32[N,1,4,4]) {
  %0 = max_pool2d_backward(%a, %g) {kernel=[2, 2], relu_mask=true, stride=[2, 2]} : f32[N,1,4,4]
  %1 = max_pool2d_backward(%b, %g) {kernel=[2, 2], stride=[2, 2]} : f32[N,1,4,4]
  %2 = relu_backward(%a, %1) : f32[N,1,4,4]
  %3 = max_pool2d_backward(%b, %g) {kernel=[2, 2], stride=[2, 2]} : f32[N,1,4,4]
  %4 = relu_backward(%b, %3) : f32[N,1,4,4]
  return %0, %2, %4, %3
}
"""),
    "fold_constants_leaves_runtime_sizes": (fold_constants, """graph g(%x: f32[N,2]) -> (f32[N,2], f32[], f32[N,2]) {
  %0 = constant() {value=dense<f32[2]>[1.0, 2.0]} : f32[2]
  %1 = constant() {value=dense<f32[]>[3.0]} : f32[]
  %2 = mul(%0, %1) : f32[2]
  %3 = neg(%2) : f32[2]
  %4 = exp(%1) : f32[]
  %5 = add(%x, %3) : f32[N,2]
  %6 = numel(%x) {axes=[0], dtype="f32"} : f32[]
  %7 = broadcast_like(%1, %x) : f32[N,2]
  return %5, %6, %7
}
""", """graph g(%x: f32[N,2]) -> (f32[N,2], f32[], f32[N,2]) {
  %0 = constant() {value=dense<f32[]>[3.0]} : f32[]
  %1 = constant() {value=dense<f32[2]>[-3.0, -6.0]} : f32[2]
  %2 = add(%x, %1) : f32[N,2]
  %3 = numel(%x) {axes=[0], dtype="f32"} : f32[]
  %4 = broadcast_like(%0, %x) : f32[N,2]
  return %2, %3, %4
}
"""),
    "cse_merges_equal_constants_but_not_other_dtypes_or_attrs": (
        eliminate_common_subexpressions, """graph g(%x: f32[2]) -> (f32[2], f32[2]) {
  %0 = constant() {value=dense<f32[]>[2.0]} : f32[]
  %1 = constant() {value=dense<f32[]>[2.0]} : f32[]
  %2 = constant() {value=dense<f64[]>[2.0]} : f64[]
  %3 = mul(%x, %0) : f32[2]
  %4 = mul(%x, %1) : f32[2]
  %5 = leaky_relu(%3) {alpha=0.1} : f32[2]
  %6 = leaky_relu(%4) {alpha=0.2} : f32[2]
  %7 = cast(%2) {dtype="f32"} : f32[]
  %8 = add(%5, %7) : f32[2]
  return %8, %6
}
""", """graph g(%x: f32[2]) -> (f32[2], f32[2]) {
  %0 = constant() {value=dense<f32[]>[2.0]} : f32[]
  %1 = constant() {value=dense<f64[]>[2.0]} : f64[]
  %2 = mul(%x, %0) : f32[2]
  %3 = leaky_relu(%2) {alpha=0.1} : f32[2]
  %4 = leaky_relu(%2) {alpha=0.2} : f32[2]
  %5 = cast(%1) {dtype="f32"} : f32[]
  %6 = add(%3, %5) : f32[2]
  return %6, %4
}
"""),
    # a -1 beside a symbolic size becomes the size shape inference found
    "simplify_algebra_spells_out_minus_one": (simplify_algebra, """graph g(%x: f32[N,2,3]) -> (f32[N,6]) {
  %0 = reshape(%x) {shape=["N", -1]} : f32[N,6]
  return %0
}
""", """graph g(%x: f32[N,2,3]) -> (f32[N,6]) {
  %0 = reshape(%x) {shape=["N", 6]} : f32[N,6]
  return %0
}
"""),
    "simplify_algebra_keeps_shared_and_real_reshapes": (
        simplify_algebra, """graph g(%x: f32[N,2,3]) -> (f32[N,6], f32[N,3,2], f32[N,3,2]) {
  %0 = reshape(%x) {shape=["N", 3, 2]} : f32[N,3,2]
  %1 = reshape(%0) {shape=["N", 6]} : f32[N,6]
  %2 = relu(%0) : f32[N,3,2]
  %3 = transpose(%x) {perm=[0, 2, 1]} : f32[N,3,2]
  return %1, %2, %3
}
""", """graph g(%x: f32[N,2,3]) -> (f32[N,6], f32[N,3,2], f32[N,3,2]) {
  %0 = reshape(%x) {shape=["N", 3, 2]} : f32[N,3,2]
  %1 = reshape(%x) {shape=["N", 6]} : f32[N,6]
  %2 = relu(%0) : f32[N,3,2]
  %3 = transpose(%x) {perm=[0, 2, 1]} : f32[N,3,2]
  return %1, %2, %3
}
"""),
}


@pytest.mark.parametrize("name", list(CASES))
def test_golden(name):
    pass_fn, before, after = CASES[name]
    assert run(pass_fn, before) == after


PIPELINE_IN = """graph g(%x: f32[N,4], %w: f32[4,4]) -> (f32[N,4]) {
  %0 = constant() {value=dense<f32[]>[0.5]} : f32[]
  %1 = constant() {value=dense<f32[]>[2.0]} : f32[]
  %2 = mul(%0, %1) : f32[]
  %3 = matmul(%x, %w) {transpose_a=false, transpose_b=false} : f32[N,4]
  %4 = matmul(%x, %w) {transpose_a=false, transpose_b=false} : f32[N,4]
  %5 = reshape(%3) {shape=["N", 4]} : f32[N,4]
  %6 = mul(%5, %2) : f32[N,4]
  %7 = add(%6, %4) : f32[N,4]
  %8 = exp(%7) : f32[N,4]
  %9 = transpose(%w) {perm=[1, 0]} : f32[4,4]
  return %7
}
"""
PIPELINE_OUT = """graph g(%x: f32[N,4], %w: f32[4,4]) -> (f32[N,4]) {
  %0 = constant() {value=dense<f32[]>[1.0]} : f32[]
  %1 = matmul(%x, %w) {transpose_a=false, transpose_b=false} : f32[N,4]
  %2 = mul(%1, %0) : f32[N,4]
  %3 = add(%2, %1) : f32[N,4]
  return %3
}
"""


def test_the_compilers_simplification_pipeline_dumps_and_verifies_every_stage():
    passes = [(name, fn) for name, fn in SIMPLIFY if name != "schedule"]
    pm = PassManager(passes)
    assert print_graph(pm.run(parse_graph(PIPELINE_IN))) == PIPELINE_OUT
    assert list(pm.dumps) == ["input"] + [name for name, _ in passes]
    assert pm.dumps["input"] == PIPELINE_IN and pm.dumps["dce"] == PIPELINE_OUT


def test_the_pass_manager_names_a_pass_that_breaks_the_graph():
    def reverse_nodes(graph):
        graph.nodes.reverse()
        return graph

    with pytest.raises(IRError, match=r"after pass 'reverse': graph 'g', node #1 \(exp\): input .* is used before"):
        PassManager([("reverse", reverse_nodes)]).run(parse_graph(PIPELINE_IN))
