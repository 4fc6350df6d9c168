"""ONNX's backend node test cases (``onnx.backend.test.case.node``) through nncc: import, compile, run, compare.

A case runs when every operator in its graph is one nncc claims: those with an import handler, and those it only
evaluates at import time on constant inputs (Constant, ConstantOfShape, Range). It passes when the compiled
model's outputs equal the expected ones (same dtype and shape, values within the case's tolerances). A case
that raises ``UnsupportedError`` (a dtype, attribute value or variant nncc lacks) counts as unsupported, and only
for a reason listed in ``UNSUPPORTED``; any other error, or a wrong value, is a failure.

Graph inputs that nncc must know while compiling (a Reshape's shape, a Slice's bounds, axes, pads: the inputs
``DEMANDED`` lists, and whatever computes them) are bound from the case's data with ``nncc.onnx.load(...,
constants=...)``, as a deployed model would have them as initializers; the rest stay runtime inputs.

Each case is a compilation (numba compiles its kernels), so by default the test runs a representative subset:
the first cases of each claimed operator. ``NNCC_ONNX_CONFORMANCE=full`` runs them all, and
``python tests/frontend/test_onnx_conformance.py [full]`` prints the counts and every unsupported case.
"""
from __future__ import annotations

import os
import re
import sys
import time
import warnings
from collections import Counter

import numpy as np

import nncc
from nncc.errors import UnsupportedError
from nncc.frontend.onnx_ops import HANDLERS

FOLDED = {"Constant", "ConstantOfShape", "Range"}
CLAIMED = set(HANDLERS) | FOLDED
SUBSET_PER_OP = 3  # cases per operator in the default run

# Inputs that nncc needs as constants, by operator (every Reduce* op: input 1, the axes).
DEMANDED = {"Reshape": [1], "Slice": [1, 2, 3, 4], "Squeeze": [1], "Unsqueeze": [1], "Pad": [1, 2, 3], "Expand": [1],
            "Split": [1], "Dropout": [1, 2], "ConstantOfShape": [0], "Range": [0, 1, 2]}

# Why a case may be unsupported: a pattern its UnsupportedError message must match, and the reason.
UNSUPPORTED = {
    r"has type (U?INT(8|16)|UINT(32|64)|FLOAT16|BFLOAT16|STRING|FLOAT8\w*|U?INT4|FLOAT4\w*|U?INT2)\b":
        "nncc compiles f32, f64, i64, i32 and bool tensors only",
    r"dtype (float16|bfloat16|uint8|int8|int16|uint16|uint32|uint64) is not supported": "as above",
    r"graph input '[^']*' is of (sequence|optional|map|sparse_tensor) type, not a tensor": "nncc compiles tensors only",
    r"casting to \w+ is not supported": "as above: casts to other element types",
    r"(Div|Pow) node .*: input of dtype i(32|64)": "integer division and powers have no nncc kernel",
    r"[345]-D input \[": "nncc has 1-D and 2-D convolution and pooling only",
    r"MaxPool node .*: the Indices output": "max-pool indices are not implemented",
    r"Dropout node .*: training_mode=True": "random masks: nncc's generator cannot reproduce ONNX's",
    r"Cast node .*: attribute round_mode": "a rounding mode for 8-bit float casts",
}


def claimed_cases(full: bool) -> list:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the case generators warn about float overflows
        cases = [c for c in collect_testcases() if {n.op_type for n in c.model.graph.node} <= CLAIMED]
    if full:
        return cases
    per_op: Counter = Counter()
    subset = []
    for case in cases:
        ops = {n.op_type for n in case.model.graph.node}
        if any(per_op[op] < SUBSET_PER_OP for op in ops):
            subset.append(case)
            per_op.update(ops)
    return subset


def _array(value) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(value) if hasattr(value, "data_type") else np.asarray(value)


def _demanded_inputs(graph) -> set[str]:
    """Names that must be constants: DEMANDED inputs, and everything they are computed from (but not through Shape)."""
    demanded: set[str] = set()
    for node in reversed(graph.node):
        positions = [1] if node.op_type.startswith("Reduce") else DEMANDED.get(node.op_type, [])
        demanded.update(node.input[i] for i in positions if i < len(node.input))
        if node.op_type not in ("Shape", "Size") and any(o in demanded for o in node.output):
            demanded.update(node.input)
    return demanded


def run_case(case) -> None:
    """Compile and run one case; raises on any mismatch."""
    names = [v.name for v in case.model.graph.input]
    demanded = _demanded_inputs(case.model.graph)
    first_inputs = [_array(a) for a in case.data_sets[0][0]]
    constants = {n: a for n, a in zip(names, first_inputs) if n in demanded}
    compiled = nncc.compile(nncc.onnx.load(case.model, constants=constants))
    for inputs, expected in case.data_sets:
        feeds = [_array(a) for n, a in zip(names, inputs) if n not in constants]
        got = compiled(*feeds)
        got = got if isinstance(got, tuple) else (got,)
        assert len(got) == len(expected), f"{len(got)} outputs, expected {len(expected)}"
        for k, (have, want) in enumerate(zip(got, expected)):
            want = _array(want)
            assert (have.dtype, have.shape) == (want.dtype, want.shape), \
                f"output {k}: {have.dtype}{list(have.shape)}, expected {want.dtype}{list(want.shape)}"
            np.testing.assert_allclose(have, want, rtol=case.rtol, atol=case.atol, err_msg=f"output {k}")


def unsupported_reason(message: str):
    return next((reason for pattern, reason in UNSUPPORTED.items() if re.search(pattern, message)), None)


def run_all(cases) -> tuple[Counter, list, list]:
    counts: Counter = Counter()
    failures, unsupported = [], []
    for case in cases:
        try:
            run_case(case)
            counts["passed"] += 1
        except UnsupportedError as e:
            if unsupported_reason(str(e)) is None:
                counts["failed"] += 1
                failures.append((case.name, f"unsupported for no listed reason: {e}"))
            else:
                counts["unsupported"] += 1
                unsupported.append((case.name, str(e)))
        except Exception as e:  # noqa: BLE001 - every other error is a failure to report
            counts["failed"] += 1
            failures.append((case.name, f"{type(e).__name__}: {e}"))
    return counts, failures, unsupported


# The operators issue 4 asks the importer for, besides elementwise arithmetic, comparison and math.
REQUIRED = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "Gemm", "MatMul",
            "BatchNormalization", "Dropout", "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Sigmoid", "HardSigmoid",
            "Tanh", "Softplus", "Gelu", "Erf", "Softmax", "LogSoftmax", "Flatten", "Reshape", "Transpose", "Squeeze",
            "Unsqueeze", "Concat", "Slice", "Pad", "Gather", "Shape", "Constant", "ConstantOfShape", "Identity",
            "Cast", "Expand", "Where", "ArgMax", "ArgMin", "SoftmaxCrossEntropyLoss", "NegativeLogLikelihoodLoss",
            "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
            "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp"}


def test_every_required_operator_is_claimed():
    assert REQUIRED - CLAIMED == set()


def test_onnx_node_conformance(capsys):
    full = os.environ.get("NNCC_ONNX_CONFORMANCE") == "full"
    cases = claimed_cases(full)
    start = time.perf_counter()
    counts, failures, _ = run_all(cases)
    with capsys.disabled():  # the counts are the point of the run: show them without -s
        print(f"\nONNX node conformance ({'full' if full else 'subset'}, {len(cases)} cases): passed "
              f"{counts['passed']}, failed {counts['failed']}, unsupported {counts['unsupported']} "
              f"in {time.perf_counter() - start:.0f} s")
    assert not failures, "\n".join(f"{name}: {why}" for name, why in failures)
    assert counts["passed"] > counts["unsupported"]


if __name__ == "__main__":
    cases = claimed_cases(full=sys.argv[1:] == ["full"])
    start = time.perf_counter()
    counts, failures, unsupported = run_all(cases)
    for name, why in unsupported:
        print(f"unsupported {name}: {why}")
    for name, why in failures:
        print(f"FAILED {name}: {why}")
    print(f"{len(cases)} cases: passed {counts['passed']}, failed {counts['failed']}, unsupported "
          f"{counts['unsupported']} ({time.perf_counter() - start:.0f} s)")
