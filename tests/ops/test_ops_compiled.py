"""Every op's compiled CPU kernel against its numpy reference.

Each op family (a module of nncc/ops) becomes one graph of independent nodes, so a family costs one module
compile rather than one per case.
"""
import numpy as np
import pytest

from nncc.compiler import Program
from nncc.ir import GraphBuilder, TensorType, dtype_of
from nncc.ops import all_ops, get_op

from .cases import CASES, family, make_inputs

FAMILIES = sorted({family(case[0]) for case in CASES})


def test_every_op_has_a_compiled_case():
    missing = sorted(set(all_ops()) - {case[0] for case in CASES})
    assert not missing, f"ops without a case in tests/ops/cases.py: {missing}"


@pytest.mark.parametrize("name", FAMILIES)
def test_compiled_kernels_match_the_reference(name):
    rng = np.random.default_rng(0)
    b = GraphBuilder(f"ops_{name}")
    feeds, expected, outputs = {}, [], []
    for i, case in enumerate(c for c in CASES if family(c[0]) == name):
        arrays = make_inputs(case, rng)
        values = [b.input(f"c{i}_{j}", TensorType(dtype_of(a.dtype), a.shape)) for j, a in enumerate(arrays)]
        feeds.update({v.name: a for v, a in zip(values, arrays)})
        outs = b.add(case[0], values, case[2])
        outputs.extend(outs)
        expected.extend((case, want) for want in get_op(case[0]).reference(arrays, case[2]))
    program = Program(b.finish(outputs))
    got = program({k: v.copy() for k, v in feeds.items()})  # copies: optimizer updates write in place
    assert len(got) == len(expected)
    for (case, want), have in zip(expected, got):
        assert have.dtype == want.dtype and have.shape == want.shape, f"{case[0]} {case[2]}"
        # a sum's rounding error scales with its terms, not with its result: atol by the output's magnitude
        scale = max(1.0, float(np.abs(want).max())) if want.size and want.dtype.kind == "f" else 1.0
        np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-6 * scale, err_msg=f"{case[0]} {case[2]}")
