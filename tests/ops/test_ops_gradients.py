"""Every VJP rule against float64 central finite differences.

For each case, the scalar loss sum(op(inputs) * W) (W random) is differentiated by the autodiff pass; the
gradient graph, evaluated by the reference interpreter, must equal the finite differences of the loss.
"""
import numpy as np
import pytest

from nncc.ir import GraphBuilder, TensorType, dtype_of, verify
from nncc.ops import all_ops, get_op
from nncc.passes.autodiff import differentiate
from nncc.reference import run_reference

from .cases import CASES, case_id, make_inputs

# Ops without a VJP rule, and why none is needed.
NO_VJP = {
    **dict.fromkeys(
        ["relu_backward", "leaky_relu_backward", "sigmoid_backward", "tanh_backward", "conv2d_backward_input",
         "conv2d_backward_weight", "max_pool2d_backward", "avg_pool2d_backward", "cross_entropy_backward",
         "nll_loss_backward", "gather_backward", "strided_slice_backward", "pad_backward"],
        "a backward helper: training needs no second derivatives; its reference is checked against torch autograd "
        "and its kernel against the reference"),
    **dict.fromkeys(["greater", "greater_equal", "less", "less_equal", "equal", "logical_not", "logical_and",
                     "logical_or", "logical_xor"], "bool output: no gradient"),
    **dict.fromkeys(["argmax", "argmin"], "int64 output: no gradient"),
    "constant": "no inputs",
    "numel": "depends only on the input's shape",
    "slice": "only concat's VJP emits it (no frontend function does), so no gradient flows into it",
    "sgd_update": "an optimizer step runs after the backward pass", "adam_update": "as sgd_update",
}


def _has_float_output(case) -> bool:
    out = get_op(case[0]).reference(make_inputs(case, np.random.default_rng(0), np.float64), case[2])[0]
    return np.asarray(out).dtype == np.float64


FD_CASES = [c for c in CASES if get_op(c[0]).vjp is not None and _has_float_output(c)]


def test_every_op_has_a_gradient_test_or_a_reason_for_none():
    with_vjp = {name for name, op in all_ops().items() if op.vjp is not None}
    untested = sorted(with_vjp - {c[0] for c in FD_CASES})
    assert not untested, f"ops with a VJP but no finite-difference case: {untested}"
    unexplained = sorted(set(all_ops()) - with_vjp - set(NO_VJP))
    assert not unexplained, f"ops without a VJP and without a reason in NO_VJP: {unexplained}"
    assert not with_vjp & set(NO_VJP), f"ops listed in NO_VJP that now have a VJP: {sorted(with_vjp & set(NO_VJP))}"


def _loss_graph(case, arrays, weights):
    """sum(op(inputs)[0] * w), with every float input a graph input."""
    b = GraphBuilder("vjp")
    values = [b.input(f"x{j}", TensorType(dtype_of(a.dtype), a.shape)) for j, a in enumerate(arrays)]
    y = b.add(case[0], values, case[2])[0]
    w = b.input("w", TensorType("f64", weights.shape))
    loss = b.add1("sum", [b.add1("mul", [y, w])], {"axes": list(range(weights.ndim)), "keepdims": False})
    return b.finish([loss])


def _loss(case, arrays, weights) -> float:
    return float((get_op(case[0]).reference(arrays, case[2])[0] * weights).sum())


@pytest.mark.parametrize("case", FD_CASES, ids=case_id)
def test_vjp_matches_finite_differences(case):
    arrays = make_inputs(case, np.random.default_rng(4), np.float64)
    weights = np.random.default_rng(5).standard_normal(np.shape(get_op(case[0]).reference(arrays, case[2])[0]))
    wrt = [j for j, a in enumerate(arrays) if a.dtype == np.float64]
    graph = verify(differentiate(_loss_graph(case, arrays, weights), [f"x{j}" for j in wrt]))
    grads = run_reference(graph, arrays + [weights])[1:]
    eps = 1e-6
    for j, grad in zip(wrt, grads):
        numeric = np.zeros_like(arrays[j])
        for idx in np.ndindex(arrays[j].shape):
            plus, minus = [a.copy() for a in arrays], [a.copy() for a in arrays]
            plus[j][idx] += eps
            minus[j][idx] -= eps
            numeric[idx] = (_loss(case, plus, weights) - _loss(case, minus, weights)) / (2 * eps)
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7, err_msg=f"{case[0]} {case[2]} input {j}")
