"""_gemm, the matrix product generated CPU kernels call: numpy's BLAS reached by symbol (nncc/codegen/cpu/blas.py).
Checked against numpy's own `@` on every layout the kernels pass it, and on the inputs it must refuse."""
import numpy as np
import pytest

from nncc.codegen.cache import load_generated
from nncc.codegen.cpu.blas import BLAS_CALLS, BLAS_IMPORTS
from nncc.codegen.cpu.native_calls import NATIVE_CALLS_IMPORTS


@pytest.fixture(scope="module")
def blas():
    return load_generated("\n".join(["# nncc test: _gemm alone", "import numpy as np", "from numba import njit",
                                     NATIVE_CALLS_IMPORTS, BLAS_IMPORTS, BLAS_CALLS, CALLER]))


CALLER = """
@njit
def gemm(a, b, out, beta):  # _gemm is an intrinsic: it runs inside compiled code only
    _gemm(a, b, out, beta)
"""


def _numpy_blas_is_ilp64() -> bool:
    config = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    return "64" in config.get("name", "") or "USE64BITINT" in config.get("openblas configuration", "")


def test_the_integer_width_is_the_one_numpy_was_built_with(blas):
    assert blas._find_cblas()[2] == int(_numpy_blas_is_ilp64())


@pytest.mark.parametrize("dtype,rtol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("layout", ["plain", "a.T", "b.T", "both.T", "row of out", "rows of a slice"])
def test_gemm_matches_numpy(blas, dtype, rtol, layout):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 7)).astype(dtype), rng.standard_normal((7, 3)).astype(dtype)
    if layout in ("a.T", "both.T"):
        a = np.ascontiguousarray(a.T).T
    if layout in ("b.T", "both.T"):
        b = np.ascontiguousarray(b.T).T
    if layout == "rows of a slice":  # a's rows further apart than its length: a leading dimension of 9
        a = rng.standard_normal((5, 9)).astype(dtype)[:, 1:8]
    big = np.full((4, 5, 3), 7.0, dtype)
    out = big[2] if layout == "row of out" else np.full((5, 3), np.nan, dtype)
    blas.gemm(a, b, out, 0.0)
    np.testing.assert_allclose(out, a @ b, rtol=rtol, atol=rtol)
    if layout == "row of out":
        assert (big[[0, 1, 3]] == 7).all()


def test_beta_one_accumulates(blas):
    rng = np.random.default_rng(1)
    a, b = rng.random((4, 6), np.float32), rng.random((6, 5), np.float32)
    out = np.ones((4, 5), np.float32)
    blas.gemm(a, b, out, 1.0)
    blas.gemm(a, b, out, 1.0)
    np.testing.assert_allclose(out, 1 + 2 * (a @ b), rtol=1e-5)


@pytest.mark.parametrize("beta,want", [(0.0, 0.0), (1.0, 3.0)])
def test_empty_inner_dimension_scales_out_by_beta(blas, beta, want):
    out = np.full((2, 3), 3.0)
    blas.gemm(np.empty((2, 0)), np.empty((0, 3)), out, beta)
    assert (out == want).all()


def test_mismatched_shapes_are_refused(blas):
    with pytest.raises(ValueError, match="shapes"):
        blas.gemm(np.ones((2, 3)), np.ones((4, 2)), np.empty((2, 2)), 0.0)


def test_an_operand_with_gapped_rows_and_columns_is_refused(blas):
    with pytest.raises(ValueError, match="contiguous rows or columns"):
        blas.gemm(np.ones((10, 14))[::2, ::2], np.ones((7, 3)), np.empty((5, 3)), 0.0)


def test_out_with_gapped_rows_is_refused(blas):
    out = np.zeros((4, 6))[:, ::2]
    with pytest.raises(ValueError, match="out's rows"):
        blas.gemm(np.ones((4, 2)), np.ones((2, 3)), out, 0.0)
