"""The op test table: every registered op with small inputs and attributes, shared by the op test files.

A case is (op, inputs, attrs) where each input is (shape, dtype, kind). dtype "f" is the float dtype the test
picks (f32 for compiled kernels, f64 for references and finite differences), "d" is always f64, "i" int64,
"b" bool. kind "any" draws from a normal distribution pushed away from 0 (clear of the kinks of relu, abs,
sign and max), "pos" from [0.5, 2], "ties" the floats -1, 0 and 1 (windows with equal maxima), "int" small
integers, "label" class indices for the last dim of the first input, "bool" a mask, "seed" an i64 scalar,
"lr" and "step" an optimizer's scalars.
"""
from __future__ import annotations

import numpy as np

from nncc.ops import get_op

CONV = {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1}
CONV_ODD = {"stride": [2, 2], "padding": [1, 1], "dilation": [2, 2], "groups": 2}
POOL = {"kernel": [2, 2], "stride": [2, 2], "padding": [0, 0], "dilation": [1, 1], "ceil_mode": False}
POOL_DILATED = {"kernel": [2, 2], "stride": [2, 2], "padding": [1, 1], "dilation": [2, 2], "ceil_mode": False}
POOL_CEIL = {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1], "dilation": [1, 1], "ceil_mode": True,
             "count_include_pad": False}
POOL_CEIL_PAD = {**POOL_CEIL, "count_include_pad": True}  # the divisor stops at the padded edge, as PyTorch's
SGD = {"momentum": 0.9, "dampening": 0.0, "weight_decay": 0.01, "nesterov": True}
SGD_DAMPENED = {"momentum": 0.9, "dampening": 0.1, "weight_decay": 0.0, "nesterov": False}
ADAMW = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01, "decoupled": True}
ADAM = {**ADAMW, "decoupled": False}
STRIDED = {"axes": [1, 2], "starts": [5, 0], "stops": [-1, 5], "steps": [-2, 2]}  # a reversed axis and a stride

A = ((2, 3), "f", "any")
B = ((3,), "f", "any")
P = ((2, 3), "f", "pos")
I = ((2, 3), "i", "int")
X3 = ((2, 3, 4), "f", "any")
LOGITS = ((4, 5), "f", "any")
LABELS = ((4,), "i", "label")

CASES = [
    # elementwise arithmetic, with numpy broadcasting and on integers
    ("add", [A, B], {}), ("add", [I, ((3,), "i", "int")], {}), ("sub", [A, B], {}),
    ("mul", [A, ((2, 1), "f", "any")], {}), ("mul", [I, I], {}), ("div", [A, P], {}),
    ("pow", [P, ((3,), "f", "any")], {}), ("maximum", [A, B], {}), ("maximum", [I, I], {}), ("minimum", [A, B], {}),
    ("neg", [A], {}), ("abs", [A], {}), ("sign", [A], {}), ("exp", [A], {}), ("log", [P], {}), ("sqrt", [P], {}),
    ("rsqrt", [P], {}),
    # activations and their backward helpers (x or y first, then the output gradient)
    ("relu", [A], {}), ("leaky_relu", [A], {"alpha": 0.1}), ("sigmoid", [A], {}), ("tanh", [A], {}),
    ("relu_backward", [A, A], {}), ("leaky_relu_backward", [A, A], {"alpha": 0.2}),
    ("sigmoid_backward", [A, A], {}), ("tanh_backward", [A, A], {}),
    # comparisons, selection, casts
    ("greater", [A, B], {}), ("greater_equal", [A, B], {}), ("less", [A, B], {}), ("less_equal", [A, B], {}),
    ("equal", [I, ((3,), "i", "int")], {}), ("where", [((2, 3), "b", "bool"), A, B], {}),
    ("cast", [A], {"dtype": "f64"}), ("cast", [A], {"dtype": "i64"}),
    # shape ops
    ("constant", [], {"value": np.array([[1.5, -2.0, 0.25]], np.float32)}),
    ("reshape", [X3], {"shape": [6, 4]}), ("transpose", [X3], {"perm": [2, 0, 1]}),
    ("concat", [A, ((2, 2), "f", "any")], {"axis": 1}), ("concat", [A, A, ((1, 3), "f", "any")], {"axis": 0}),
    ("slice", [((2, 5), "f", "any")], {"axis": 1, "start": 1, "stop": 4}),
    ("broadcast_like", [B, A], {}), ("broadcast_like", [((2, 1), "f", "any"), A], {}),
    ("numel", [X3], {"axes": [0, 2], "dtype": "f32"}),
    # reductions and softmax
    ("sum", [X3], {"axes": [0, 2], "keepdims": False}), ("sum", [X3], {"axes": [1], "keepdims": True}),
    ("mean", [X3], {"axes": [1], "keepdims": True}), ("mean", [X3], {"axes": [0, 1, 2], "keepdims": False}),
    ("max", [X3], {"axes": [2], "keepdims": False}), ("max", [X3], {"axes": [0], "keepdims": True}),
    ("softmax", [X3], {"axis": 1}), ("softmax", [((3, 5), "f", "any")], {"axis": 0}),
    ("log_softmax", [((3, 5), "f", "any")], {"axis": -1}),
    # matmul in every transposition
    ("matmul", [((2, 3), "f", "any"), ((3, 4), "f", "any")], {"transpose_a": False, "transpose_b": False}),
    ("matmul", [((3, 2), "f", "any"), ((3, 4), "f", "any")], {"transpose_a": True, "transpose_b": False}),
    ("matmul", [((2, 3), "f", "any"), ((4, 3), "f", "any")], {"transpose_a": False, "transpose_b": True}),
    ("matmul", [((3, 2), "f", "any"), ((4, 3), "f", "any")], {"transpose_a": True, "transpose_b": True}),
    # convolution: padding with bias; stride 2, padding 1, dilation 2, groups 2 without (the backward ops take
    # the harder geometry only: each case is a kernel to compile, and the models' gradients cover the plain one)
    ("conv2d", [((2, 2, 5, 5), "f", "any"), ((3, 2, 3, 3), "f", "any"), ((3,), "f", "any")], CONV),
    ("conv2d", [((1, 4, 7, 7), "f", "any"), ((4, 2, 3, 3), "f", "any")], CONV_ODD),
    # ... unit stride in register tiles: 2 groups of 20 channels (two vectors of channels, one part idle),
    # dilated height, uneven padding; and float64 with 3 channels (lanes over positions)
    ("conv2d", [((2, 4, 7, 6), "f", "any"), ((40, 2, 3, 2), "f", "any")],
     {"stride": [1, 1], "padding": [2, 0], "dilation": [2, 1], "groups": 2}),
    ("conv2d", [((1, 2, 5, 9), "d", "any"), ((3, 2, 3, 3), "d", "any"), ((3,), "d", "any")], CONV),
    # ... lanes over output channels (a group's fill a vector): a row of 33 positions in two runs, with bias;
    # float64
    ("conv2d", [((1, 1, 4, 33), "f", "any"), ((16, 1, 2, 3), "f", "any"), ((16,), "f", "any")], CONV),
    ("conv2d", [((2, 3, 5, 5), "d", "any"), ((8, 3, 3, 3), "d", "any"), ((8,), "d", "any")], CONV),
    # ... padding wider than the taps' reach along a dilated width: reads past a row's end wrap into the next
    # row's left padding (conv.py's _pitch)
    ("conv2d", [((1, 2, 5, 4), "f", "any"), ((3, 2, 2, 2), "f", "any")],
     {"stride": [1, 1], "padding": [1, 3], "dilation": [1, 2], "groups": 1}),
    ("conv2d_backward_input", [((1, 4, 3, 3), "f", "any"), ((4, 2, 3, 3), "f", "any"), ((1, 4, 7, 7), "f", "any")],
     CONV_ODD),
    ("conv2d_backward_weight", [((1, 4, 7, 7), "f", "any"), ((1, 4, 3, 3), "f", "any"), ((4, 2, 3, 3), "f", "any")],
     CONV_ODD),
    # ... with unit strides (register tiles), width dilated, uneven padding; padding past the taps' reach (gy cropped)
    ("conv2d_backward_input", [((2, 4, 7, 4), "f", "any"), ((4, 2, 3, 3), "f", "any"), ((2, 4, 7, 8), "f", "any")],
     {"stride": [1, 1], "padding": [1, 0], "dilation": [1, 2], "groups": 2}),
    ("conv2d_backward_input", [((1, 2, 8, 5), "f", "any"), ((2, 2, 3, 3), "f", "any"), ((1, 2, 4, 5), "f", "any")],
     {"stride": [1, 1], "padding": [3, 1], "dilation": [1, 1], "groups": 1}),
    # ... dilated height: the kernel rows a tile's positions reach counted in steps of the dilation
    ("conv2d_backward_input", [((1, 2, 6, 7), "f", "any"), ((2, 2, 3, 2), "f", "any"), ((1, 2, 8, 6), "f", "any")],
     {"stride": [1, 1], "padding": [1, 1], "dilation": [2, 1], "groups": 1}),
    # ... with unit stride (tiles of dot products), and with enough taps per output channel (16 * 3 * 3) to
    # be computed transposed by BLAS
    ("conv2d_backward_weight", [((2, 2, 5, 5), "f", "any"), ((2, 3, 5, 5), "f", "any"), ((3, 2, 3, 3), "f", "any")],
     CONV),
    ("conv2d_backward_weight", [((2, 32, 7, 7), "f", "any"), ((2, 4, 3, 3), "f", "any"),
                                ((4, 16, 3, 3), "f", "any")], CONV_ODD),
    # ... in register tiles (a vector's lanes of output channels or more): 2 groups of 20 (two vectors, one part
    # idle), stride 2, height dilated, uneven padding; float64 with 7 kernel rows in tiles of 4 and 3
    ("conv2d_backward_weight", [((2, 4, 9, 8), "f", "any"), ((2, 40, 4, 6), "f", "any"), ((40, 2, 3, 2), "f", "any")],
     {"stride": [2, 2], "padding": [1, 2], "dilation": [2, 1], "groups": 2}),
    ("conv2d_backward_weight", [((1, 2, 9, 9), "d", "any"), ((1, 8, 5, 7), "d", "any"), ((8, 2, 7, 5), "d", "any")],
     {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1}),
    # ... in tiles of dot products along the positions (unit strides, fewer output channels than lanes): 2
    # groups of 3, dilated, uneven padding; float64, LeNet's first conv (6 channels, 25 taps) on a small image
    ("conv2d_backward_weight", [((2, 4, 7, 6), "f", "any"), ((2, 6, 7, 6), "f", "any"), ((6, 2, 3, 2), "f", "any")],
     {"stride": [1, 1], "padding": [2, 1], "dilation": [2, 2], "groups": 2}),
    ("conv2d_backward_weight", [((2, 1, 8, 8), "d", "any"), ((2, 6, 8, 8), "d", "any"), ((6, 1, 5, 5), "d", "any")],
     {"stride": [1, 1], "padding": [2, 2], "dilation": [1, 1], "groups": 1}),
    # pooling: plain, dilated, ceil_mode with padding (with and without the padding in the average's divisor)
    ("max_pool2d", [((2, 2, 4, 4), "f", "any")], POOL), ("max_pool2d", [((1, 2, 5, 5), "f", "any")], POOL_DILATED),
    ("max_pool2d", [((1, 2, 6, 6), "f", "any")], POOL_CEIL),
    ("avg_pool2d", [((2, 2, 4, 4), "f", "any")], {**POOL, "count_include_pad": True}),
    ("avg_pool2d", [((1, 2, 6, 6), "f", "any")], POOL_CEIL),
    ("avg_pool2d", [((1, 2, 6, 6), "f", "any")], POOL_CEIL_PAD),
    ("max_pool2d_backward", [((2, 2, 5, 5), "f", "ties"), ((2, 2, 2, 2), "f", "any")], POOL),  # tiling windows
    ("max_pool2d_backward", [((1, 2, 5, 5), "f", "any"), ((1, 2, 3, 3), "f", "any")], POOL_DILATED),
    ("max_pool2d_backward", [((1, 2, 6, 6), "f", "any"), ((1, 2, 4, 4), "f", "any")], POOL_CEIL),
    # ... with a ReLU mask folded in (simplify.py), on each of the three paths
    ("max_pool2d_backward", [((2, 2, 5, 5), "f", "ties"), ((2, 2, 2, 2), "f", "any")], {**POOL, "relu_mask": True}),
    ("max_pool2d_backward", [((1, 2, 5, 5), "f", "any"), ((1, 2, 3, 3), "f", "any")],
     {**POOL_DILATED, "relu_mask": True}),
    ("max_pool2d_backward", [((1, 2, 6, 6), "f", "any"), ((1, 2, 4, 4), "f", "any")], {**POOL_CEIL, "relu_mask": True}),
    ("avg_pool2d_backward", [((1, 2, 4, 4), "f", "any"), ((1, 2, 6, 6), "f", "any")], POOL_CEIL),
    ("avg_pool2d_backward", [((1, 2, 4, 4), "f", "any"), ((1, 2, 6, 6), "f", "any")], POOL_CEIL_PAD),
    # losses in every reduction, with label smoothing
    ("cross_entropy", [LOGITS, LABELS], {"reduction": "mean", "label_smoothing": 0.1}),
    ("cross_entropy", [LOGITS, LABELS], {"reduction": "sum", "label_smoothing": 0.0}),
    ("cross_entropy", [LOGITS, LABELS], {"reduction": "none", "label_smoothing": 0.2}),
    ("nll_loss", [LOGITS, LABELS], {"reduction": "mean"}), ("nll_loss", [LOGITS, LABELS], {"reduction": "sum"}),
    ("nll_loss", [LOGITS, LABELS], {"reduction": "none"}),
    ("cross_entropy_backward", [LOGITS, LABELS, ((), "f", "any")], {"reduction": "mean", "label_smoothing": 0.1}),
    ("cross_entropy_backward", [LOGITS, LABELS, ((4,), "f", "any")], {"reduction": "none", "label_smoothing": 0.2}),
    ("nll_loss_backward", [LOGITS, LABELS, ((), "f", "any")], {"reduction": "sum"}),
    ("nll_loss_backward", [LOGITS, LABELS, ((4,), "f", "any")], {"reduction": "none"}),
    # dropout and the optimizer updates
    ("dropout", [((3, 4), "f", "any"), ((), "i", "seed")], {"p": 0.3}),
    ("sgd_update", [A, A, A, ((), "d", "lr"), ((), "d", "step")], SGD),
    ("sgd_update", [A, A, A, ((), "d", "lr"), ((), "d", "first_step")], SGD_DAMPENED),
    ("adam_update", [A, A, A, P, ((), "d", "lr"), ((), "d", "step")], ADAMW),
    ("adam_update", [A, A, A, P, ((), "d", "lr"), ((), "d", "step")], ADAM),
    # ops the ONNX importer needs: rounding, erf, logic, broadcast_to, prod, batched matmul, transposed conv
    ("floor", [A], {}), ("ceil", [A], {}), ("erf", [A], {}),
    ("logical_not", [((2, 3), "b", "bool")], {}), ("logical_and", [((2, 3), "b", "bool"), ((3,), "b", "bool")], {}),
    ("logical_or", [((2, 3), "b", "bool"), ((2, 1), "b", "bool")], {}),
    ("logical_xor", [((2, 3), "b", "bool"), ((2, 3), "b", "bool")], {}),
    ("broadcast_to", [((3, 1), "f", "any")], {"shape": [2, 3, 4]}),
    ("prod", [X3], {"axes": [0, 2], "keepdims": False}),
    ("batch_matmul", [((2, 3, 4), "f", "any"), ((2, 5, 4), "f", "any")], {"transpose_a": False, "transpose_b": True}),
    ("batch_matmul", [((2, 4, 3), "f", "any"), ((2, 4, 5), "f", "any")], {"transpose_a": True, "transpose_b": False}),
    ("batch_matmul", [((2, 2, 3, 4), "f", "any"), ((4, 5), "f", "any")], {"transpose_a": False, "transpose_b": False}),
    ("batch_matmul", [((3, 4), "f", "any"), ((2, 5, 4), "f", "any")], {"transpose_a": False, "transpose_b": True}),
    ("conv_transpose2d", [((1, 4, 3, 3), "f", "any"), ((4, 2, 3, 3), "f", "any")], {**CONV_ODD, "output_padding": [1, 0]}),
    # indexing: gather (indices drawn below the first input's last dim), strided slices, the padding modes
    ("gather", [((2, 5), "f", "any"), ((2, 3), "i", "label")], {"axis": 1}),
    ("gather_backward", [((2, 3), "f", "any"), ((3,), "i", "label"), ((2, 5), "f", "any")], {"axis": 1}),
    ("strided_slice", [((3, 6, 5), "f", "any")], STRIDED),
    ("strided_slice_backward", [((3, 3, 3), "f", "any"), ((3, 6, 5), "f", "any")], STRIDED),
    ("pad", [X3], {"pads": [0, 1, -1, 1, 2, 2], "mode": "constant", "value": 1.5}),
    ("pad", [X3], {"pads": [0, 2, 3, 0, 1, 2], "mode": "reflect", "value": 0.0}),
    ("pad", [X3], {"pads": [0, 2, 3, 0, 1, 2], "mode": "edge", "value": 0.0}),
    ("pad", [X3], {"pads": [0, 2, 3, 0, 1, 2], "mode": "wrap", "value": 0.0}),
    ("pad_backward", [((2, 4, 9), "f", "any"), X3], {"pads": [0, 1, 3, 0, 0, 2], "mode": "reflect", "value": 0.0}),
    ("pad_backward", [((2, 5, 5), "f", "any"), X3], {"pads": [0, 1, -1, 0, 1, 2], "mode": "constant", "value": 0.0}),
    ("argmax", [X3], {"axis": 1, "keepdims": True, "select_last_index": False}),
    ("argmin", [X3], {"axis": -1, "keepdims": False, "select_last_index": True}),
]


def case_id(case) -> str:
    """A readable test id: the op and its input shapes (attrs are in the failure message)."""
    return f"{case[0]}-" + "-".join("x".join(map(str, s[0])) or "scalar" for s in case[1])


def family(op: str) -> str:
    """The op's family: the module of ``nncc/ops`` that defines it."""
    return get_op(op).infer.__module__.rsplit(".", 1)[-1]


def make_inputs(case, rng: np.random.Generator, float_dtype=np.float32) -> list[np.ndarray]:
    arrays: list[np.ndarray] = []
    for shape, dtype, kind in case[1]:
        arrays.append(_draw(shape, dtype, kind, rng, float_dtype, arrays[0] if arrays else None))
    return arrays


def _draw(shape, dtype, kind, rng, float_dtype, first):
    if kind == "bool":
        return rng.random(shape) > 0.5
    if kind == "int":
        return rng.integers(-3, 4, shape).astype(np.int64)
    if kind == "label":
        return rng.integers(0, first.shape[-1], shape).astype(np.int64)
    if kind == "seed":
        return np.array(1234, np.int64)
    fixed = {"lr": 0.05, "step": 3.0, "first_step": 1.0}
    if kind in fixed:
        return np.array(fixed[kind])
    float_type = np.float64 if dtype == "d" else float_dtype
    if kind == "ties":  # few distinct values: windows with several maxima
        return rng.integers(-1, 2, shape).astype(float_type)
    if kind == "pos":
        return np.asarray(rng.uniform(0.5, 2.0, shape), float_type)
    x = rng.standard_normal(shape)
    return np.asarray(x + np.sign(x) * 0.2, float_type)
