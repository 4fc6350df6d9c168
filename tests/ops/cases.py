"""The op test table: every registered op with small inputs and attributes.

A case is (op, inputs, attrs) where each input is (shape, dtype, kind): kind "any" draws from a normal
distribution shifted away from 0 (clear of the kinks of relu, abs, max), "pos" from [0.5, 2], "label" draws
class indices for the last dim of the first input, "bool" draws a mask, "seed" is an i64 scalar.
"""
from __future__ import annotations

import numpy as np

CONV = {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1}
CONV_ODD = {"stride": [2, 2], "padding": [1, 1], "dilation": [2, 2], "groups": 2}
POOL = {"kernel": [2, 2], "stride": [2, 2], "padding": [0, 0], "dilation": [1, 1], "ceil_mode": False}
POOL_ODD = {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1], "dilation": [1, 1], "ceil_mode": True,
            "count_include_pad": False}
SGD = {"momentum": 0.9, "dampening": 0.0, "weight_decay": 0.01, "nesterov": True}
ADAM = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01, "decoupled": True}

A = ((2, 3), "f", "any")
B = ((3,), "f", "any")
P = ((2, 3), "f", "pos")

CASES = [
    ("add", [A, B], {}), ("sub", [A, B], {}), ("mul", [A, ((2, 1), "f", "any")], {}), ("div", [A, P], {}),
    ("pow", [P, ((3,), "f", "any")], {}), ("maximum", [A, B], {}), ("minimum", [A, B], {}),
    ("neg", [A], {}), ("abs", [A], {}), ("sign", [A], {}), ("exp", [A], {}), ("log", [P], {}), ("sqrt", [P], {}),
    ("rsqrt", [P], {}), ("relu", [A], {}), ("leaky_relu", [A], {"alpha": 0.1}), ("sigmoid", [A], {}),
    ("tanh", [A], {}), ("relu_backward", [A, A], {}), ("leaky_relu_backward", [A, A], {"alpha": 0.2}),
    ("sigmoid_backward", [A, A], {}), ("tanh_backward", [A, A], {}),
    ("greater", [A, B], {}), ("greater_equal", [A, B], {}), ("less", [A, B], {}), ("less_equal", [A, B], {}),
    ("equal", [A, A], {}), ("where", [((2, 3), "b", "bool"), A, B], {}), ("cast", [A], {"dtype": "f64"}),
    ("reshape", [((2, 3, 4), "f", "any")], {"shape": [6, 4]}),
    ("transpose", [((2, 3, 4), "f", "any")], {"perm": [2, 0, 1]}),
    ("concat", [A, ((2, 2), "f", "any")], {"axis": 1}),
    ("slice", [((2, 5), "f", "any")], {"axis": 1, "start": 1, "stop": 4}),
    ("broadcast_like", [B, A], {}), ("numel", [((2, 3, 4), "f", "any")], {"axes": [0, 2], "dtype": "f32"}),
    ("sum", [((2, 3, 4), "f", "any")], {"axes": [0, 2], "keepdims": False}),
    ("mean", [((2, 3, 4), "f", "any")], {"axes": [1], "keepdims": True}),
    ("max", [((2, 3, 4), "f", "any")], {"axes": [2], "keepdims": False}),
    ("softmax", [((2, 3, 4), "f", "any")], {"axis": 1}), ("log_softmax", [((3, 5), "f", "any")], {"axis": -1}),
    ("matmul", [((2, 3), "f", "any"), ((3, 4), "f", "any")], {"transpose_a": False, "transpose_b": False}),
    ("matmul", [((3, 2), "f", "any"), ((4, 3), "f", "any")], {"transpose_a": True, "transpose_b": True}),
    ("conv2d", [((2, 2, 5, 5), "f", "any"), ((3, 2, 3, 3), "f", "any"), ((3,), "f", "any")], CONV),
    ("conv2d", [((1, 4, 7, 7), "f", "any"), ((4, 2, 3, 3), "f", "any")], CONV_ODD),
    ("conv2d_backward_input", [((1, 4, 3, 3), "f", "any"), ((4, 2, 3, 3), "f", "any"), ((1, 4, 7, 7), "f", "any")],
     CONV_ODD),
    ("conv2d_backward_weight", [((1, 4, 7, 7), "f", "any"), ((1, 4, 3, 3), "f", "any"), ((4, 2, 3, 3), "f", "any")],
     CONV_ODD),
    ("max_pool2d", [((2, 2, 4, 4), "f", "any")], POOL), ("max_pool2d", [((1, 2, 6, 6), "f", "any")], POOL_ODD),
    ("avg_pool2d", [((2, 2, 4, 4), "f", "any")], {**POOL, "count_include_pad": True}),
    ("avg_pool2d", [((1, 2, 6, 6), "f", "any")], POOL_ODD),
    ("max_pool2d_backward", [((1, 2, 6, 6), "f", "any"), ((1, 2, 4, 4), "f", "any")], POOL_ODD),
    ("avg_pool2d_backward", [((1, 2, 4, 4), "f", "any"), ((1, 2, 6, 6), "f", "any")], POOL_ODD),
    ("cross_entropy", [((4, 5), "f", "any"), ((4,), "i", "label")], {"reduction": "mean", "label_smoothing": 0.1}),
    ("cross_entropy", [((4, 5), "f", "any"), ((4,), "i", "label")], {"reduction": "none", "label_smoothing": 0.0}),
    ("nll_loss", [((4, 5), "f", "any"), ((4,), "i", "label")], {"reduction": "sum"}),
    ("cross_entropy_backward", [((4, 5), "f", "any"), ((4,), "i", "label"), ((), "f", "any")],
     {"reduction": "mean", "label_smoothing": 0.1}),
    ("nll_loss_backward", [((4, 5), "f", "any"), ((4,), "i", "label"), ((4,), "f", "any")], {"reduction": "none"}),
    ("dropout", [((3, 4), "f", "any"), ((), "i", "seed")], {"p": 0.3}),
    ("sgd_update", [A, A, A, ((), "d", "lr"), ((), "d", "step")], SGD),
    ("adam_update", [A, A, A, P, ((), "d", "lr"), ((), "d", "step")], ADAM),
]

# Ops without a case of their own, and why.
EXEMPT = {"constant": "every compiled case graph holds constants (the loss seed); folded and emitted as driver args"}


def make_input(spec, rng, float_dtype, first_input=None):
    shape, kind_dtype, kind = spec
    if kind_dtype == "b":
        return rng.random(shape) > 0.5
    if kind == "label":
        return rng.integers(0, first_input.shape[-1], shape).astype(np.int64)
    if kind == "seed":
        return np.array(1234, np.int64)
    if kind == "lr":
        return np.array(0.05)
    if kind == "step":
        return np.array(3.0)
    dtype = np.float64 if kind_dtype == "d" else float_dtype
    if kind == "pos":
        return np.asarray(rng.uniform(0.5, 2.0, shape), dtype)
    x = rng.standard_normal(shape)
    return np.asarray(x + np.sign(x) * 0.2, dtype)  # clear of 0, where relu, abs and sign have kinks
