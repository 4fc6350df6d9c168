"""_view, _empty and _zeros, arrays in generated CPU code made without numba's library code
(nncc/codegen/cpu/arrays.py): shapes, dtypes, zeroing, shared memory, and the errors for what they do not take."""
import numpy as np
import pytest
from numba import errors

from nncc.codegen.cache import load_generated
from nncc.codegen.cpu.arrays import ARRAYS, ARRAYS_IMPORTS
from nncc.codegen.cpu.native_calls import NATIVE_CALLS_IMPORTS

CALLERS = """
@njit
def zeros_like_rows(x):
    return _zeros((x.shape[0], 3), x.dtype)


@njit
def empty_then_filled(n):
    out = _empty(n, np.int64)
    for i in range(n):
        out[i] = 3 * i
    return out


@njit
def zeros_scalar():
    return _zeros((), np.float64)


@njit
def zeros_of_int32_count(n):
    return _zeros(np.int32(n), np.float32)


@njit
def view_of(base, start, rows, cols):
    return _view(base, start, (rows, cols))


@njit
def zeros_of_float_shape():
    return _zeros(2.5, np.float32)


@njit
def zeros_of_strings():
    return _zeros(3, "float32")


@njit
def view_of_strided(x):
    return _view(x[:, ::2], 0, (2,))
"""


@pytest.fixture(scope="module")
def arrays():
    return load_generated("\n".join(["# nncc test: _view, _empty and _zeros alone", "import numpy as np",
                                     "from numba import njit", NATIVE_CALLS_IMPORTS, ARRAYS_IMPORTS, ARRAYS,
                                     CALLERS]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_zeros_takes_shape_tuple_and_dtype_of_an_array(arrays, dtype):
    out = arrays.zeros_like_rows(np.ones((5, 2), dtype))
    assert out.shape == (5, 3) and out.dtype == dtype and out.flags.c_contiguous
    np.testing.assert_array_equal(out, 0)


def test_empty_takes_an_integer_and_a_scalar_type(arrays):
    out = arrays.empty_then_filled(7)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, np.arange(7) * 3)


def test_zeros_of_rank_zero_and_of_a_narrow_integer_count(arrays):
    scalar = arrays.zeros_scalar()
    assert scalar.shape == () and scalar.dtype == np.float64 and scalar[()] == 0
    assert arrays.zeros_of_int32_count(4).shape == (4,)
    assert arrays.zeros_of_int32_count(0).shape == (0,)


def test_view_shares_the_base_memory_from_an_offset(arrays):
    base = np.arange(20, dtype=np.float32)
    view = arrays.view_of(base, 5, 3, 4)
    np.testing.assert_array_equal(view, base[5:17].reshape(3, 4))
    view[0, 0] = -1
    assert base[5] == -1


def test_view_keeps_a_read_only_base_read_only(arrays):
    base = np.arange(6, dtype=np.float64)
    base.flags.writeable = False
    view = arrays.view_of(base, 0, 2, 3)
    assert not view.flags.writeable


@pytest.mark.parametrize("caller, message", [
    ("zeros_of_float_shape", "an integer or a tuple of integers and a dtype"),
    ("zeros_of_strings", "an integer or a tuple of integers and a dtype"),
])
def test_allocation_rejects_what_is_not_a_shape_and_dtype(arrays, caller, message):
    with pytest.raises(errors.TypingError, match=message):
        getattr(arrays, caller)()


def test_view_rejects_a_non_contiguous_base(arrays):
    with pytest.raises(errors.TypingError, match="_view needs a C-contiguous array"):
        arrays.view_of_strided(np.zeros((2, 4)))
