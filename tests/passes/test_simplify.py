"""Golden IR tests for the simplification passes: this text in, that text out."""
import pytest

from nncc.ir import parse_graph, print_graph, verify
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
}


@pytest.mark.parametrize("name", list(CASES))
def test_golden(name):
    pass_fn, before, after = CASES[name]
    assert run(pass_fn, before) == after
