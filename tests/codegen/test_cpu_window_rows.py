"""_max_row and _max_row_bwd, max pooling a row of tiling windows in vector registers
(nncc/codegen/cpu/window_rows.py), against numpy: both dtypes and vector widths, rows of fewer windows than
lanes, of exactly a vector's and of more, 2 x 2, 3 x 2 and 1 x 3 windows, ties (the first maximum in row-major
order takes the gradient), the ReLU mask, and nothing written outside the row."""
import numpy as np
import pytest
from numba import errors

from nncc.codegen.cache import load_generated
from nncc.codegen.cpu.blas import BLAS_IMPORTS
from nncc.codegen.cpu.fma_tile import FMA_TILE
from nncc.codegen.cpu.native_calls import NATIVE_CALLS_IMPORTS
from nncc.codegen.cpu.window_rows import WINDOW_ROWS

WINDOWS = [(2, 2), (3, 2), (1, 3)]
CALLERS = "".join(f"""
@njit
def max_{kh}x{kw}_{width}(x, at, pitch, out, out_at, count):
    _max_row(x, at, pitch, out, out_at, count, {kh}, {kw}, {width})


@njit
def bwd_{kh}x{kw}_{width}_{mask}(x, at, pitch, g, g_at, d, count):
    _max_row_bwd(x, at, pitch, g, g_at, d, count, {kh}, {kw}, {mask}, {width})
""" for kh, kw in WINDOWS for width in (32, 64) for mask in (0, 1)) + """

@njit
def max_size_given(x, out, kh):
    _max_row(x, 0, 4, out, 0, 2, kh, 2, 64)
"""


@pytest.fixture(scope="module")
def rows():
    return load_generated("\n".join(["# nncc test: _max_row alone", "import numpy as np", "from numba import njit",
                                     NATIVE_CALLS_IMPORTS, BLAS_IMPORTS, FMA_TILE, WINDOW_ROWS, CALLERS]))


def _plane(rng, kh, kw, count, dtype):
    """kh rows of count windows plus a spare column, from row 1 of a plane; small integers, so ties are many."""
    pitch = count * kw + 1
    return rng.integers(-3, 4, (kh + 2, pitch)).astype(dtype), pitch


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("width", [32, 64])
@pytest.mark.parametrize("kh, kw", WINDOWS)
@pytest.mark.parametrize("count", [3, 16, 21])
def test_a_row_of_windows_matches_numpy(rows, dtype, width, kh, kw, count):
    rng = np.random.default_rng(count * kh + kw)
    x, pitch = _plane(rng, kh, kw, count, dtype)
    windows = x[1:1 + kh, :count * kw].reshape(kh, count, kw).transpose(1, 0, 2).reshape(count, kh * kw)
    out = np.full(count + 2, -9, dtype)
    getattr(rows, f"max_{kh}x{kw}_{width}")(x.reshape(-1), pitch, pitch, out, 1, count)
    np.testing.assert_array_equal(out[1:-1], windows.max(axis=1))
    assert out[0] == out[-1] == -9
    for mask in (0, 1):
        g = rng.standard_normal(count + 1).astype(dtype)
        d = np.full_like(x, -9)
        getattr(rows, f"bwd_{kh}x{kw}_{width}_{mask}")(x.reshape(-1), pitch, pitch, g, 1, d.reshape(-1), count)
        want = np.zeros((count, kh * kw), dtype)
        first = windows.argmax(axis=1)  # numpy's argmax: the first maximum
        want[np.arange(count), first] = g[1:] * ((windows.max(axis=1) > 0) if mask else 1)
        np.testing.assert_array_equal(d[1:1 + kh, :count * kw],
                                      want.reshape(count, kh, kw).transpose(1, 0, 2).reshape(kh, count * kw))
        untouched = np.ones(d.shape, bool)
        untouched[1:1 + kh, :count * kw] = False
        assert (d[untouched] == -9).all()


def test_the_window_size_must_be_a_constant(rows):
    with pytest.raises(errors.TypingError, match="literal window sizes"):
        rows.max_size_given(np.zeros(8, np.float32), np.zeros(2, np.float32), 2)
