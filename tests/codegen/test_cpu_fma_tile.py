"""_fma_tile and _dot_tile, the register-tiled multiply-adds of convolutions and their gradients
(nncc/codegen/cpu/fma_tile.py), against numpy: both dtypes, both vector widths, partial tiles, several vectors
per row, grouped broadcast offsets, a strided out."""
import numpy as np
import pytest
from numba import errors

from nncc.codegen.cache import load_generated
from nncc.codegen.cpu.blas import BLAS_IMPORTS
from nncc.codegen.cpu.fma_tile import FMA_TILE, vector_registers
from nncc.codegen.cpu.native_calls import NATIVE_CALLS_IMPORTS

CALLERS = """
@njit
def tile_3x2_32(vec, vec_at, bcast, bcast_at, out, j0):  # an intrinsic runs inside compiled code only
    _fma_tile(vec, vec_at, bcast, bcast_at, out, j0, 0, 3, 2, 3, 32)


@njit
def tile_3x2_64(vec, vec_at, bcast, bcast_at, out, j0):
    _fma_tile(vec, vec_at, bcast, bcast_at, out, j0, 0, 3, 2, 3, 64)


@njit
def grouped(vec, vec_at, bcast, bcast_at, out, j0, group_step):  # rows in groups of 3
    _fma_tile(vec, vec_at, bcast, bcast_at, out, j0, group_step, 6, 1, 3, 32)


@njit
def dot_2x3_32(a, a_at, b, b_at, out, length):
    _dot_tile(a, a_at, b, b_at, out, length, 2, 3, 32)


@njit
def dot_2x3_64(a, a_at, b, b_at, out, length):
    _dot_tile(a, a_at, b, b_at, out, length, 2, 3, 64)


@njit
def dot_rows_given(a, a_at, b, b_at, out, length, rows):
    _dot_tile(a, a_at, b, b_at, out, length, rows, 1, 64)


@njit
def tile_rows_given(vec, vec_at, bcast, bcast_at, out, j0, rows):
    _fma_tile(vec, vec_at, bcast, bcast_at, out, j0, 0, rows, 1, rows, 64)
"""


@pytest.fixture(scope="module")
def tiles():
    return load_generated("\n".join(["# nncc test: _fma_tile alone", "import numpy as np", "from numba import njit",
                                     NATIVE_CALLS_IMPORTS, BLAS_IMPORTS, FMA_TILE, CALLERS]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("width", [32, 64])
def test_a_tile_sums_its_steps(tiles, dtype, width):
    """The convolution's form: vectors at tap offsets, one weight per row and tap broadcast."""
    rng = np.random.default_rng(0)
    lanes = width // np.dtype(dtype).itemsize
    x = rng.standard_normal(100).astype(dtype)
    offsets = np.array([0, 3, 7, 20, 41], np.int64)
    wt = rng.standard_normal((5, 3)).astype(dtype)
    out = np.full((2, 2 * lanes + 9), -1.0, dtype)  # two of the tile's three rows, a spare column before
    j0 = 1
    getattr(tiles, f"tile_3x2_{width}")(x, offsets, wt.reshape(-1), np.arange(5) * 3, out, j0)
    span = slice(j0, j0 + 2 * lanes)
    want = sum(wt[t, :2, None] * x[None, o + j0:o + j0 + 2 * lanes] for t, o in enumerate(offsets))
    np.testing.assert_allclose(out[:, span], want, rtol=1e-5 if dtype == np.float32 else 1e-12)
    assert (out[:, 0] == -1).all() and (out[:, j0 + 2 * lanes:] == -1).all()  # nothing outside the tile


def test_grouped_broadcasts(tiles):
    """The weight gradient's form: row i broadcasts bcast[bcast_at[t] + (i // 3) * group_step + i % 3]; rows
    past out's (5 of 6) are not written."""
    rng = np.random.default_rng(1)
    vec, bcast = rng.standard_normal(40).astype(np.float32), rng.standard_normal(200).astype(np.float32)
    vec_at, bcast_at = np.array([0, 8, 16], np.int64), np.array([5, 9, 30], np.int64)
    out = rng.standard_normal((5, 10)).astype(np.float32)
    before = out.copy()
    tiles.grouped(vec, vec_at, bcast, bcast_at, out, 1, 17)
    taps = np.array([[bcast[b + (i // 3) * 17 + i % 3] for i in range(5)] for b in bcast_at])
    want = sum(taps[t][:, None] * vec[None, v + 1:v + 9] for t, v in enumerate(vec_at))
    np.testing.assert_allclose(out[:, 1:9], want, rtol=1e-5)
    assert np.array_equal(out[:, [0, 9]], before[:, [0, 9]])


def test_the_tile_size_must_be_a_constant(tiles):
    x, wt, out = np.zeros(64, np.float32), np.zeros(4, np.float32), np.zeros((4, 16), np.float32)
    with pytest.raises(errors.TypingError, match="literal tile size"):
        tiles.tile_rows_given(x, np.zeros(1, np.int64), wt, np.zeros(1, np.int64), out, 0, 4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("width", [32, 64])
@pytest.mark.parametrize("shape", [(2, 3), (1, 2)])
def test_a_dot_tile_sums_products_along_j(tiles, dtype, width, shape):
    """The weight gradient's form for few channels: rows of a (gy's) by shifted runs of b (the input's taps),
    summed along j; a tile of 2 x 3 into a whole or a partial, strided view of out."""
    rng = np.random.default_rng(2)
    lanes = width // np.dtype(dtype).itemsize
    length = 3 * lanes
    a, b = rng.standard_normal(4 * length).astype(dtype), rng.standard_normal(5 * length).astype(dtype)
    a_at, b_at = np.array([length, 0], np.int64), np.array([7, 0, 2 * length + 3], np.int64)
    grid = np.full((4, 8), -1.0, dtype)
    out = grid[1:1 + shape[0], 2:2 + 2 * shape[1]:2]  # rows and columns both strided
    getattr(tiles, f"dot_2x3_{width}")(a, a_at, b, b_at, out, length)
    want = np.array([[a[i:i + length] @ b[c:c + length] for c in b_at[:shape[1]]] for i in a_at[:shape[0]]])
    np.testing.assert_allclose(out, want, rtol=1e-5 if dtype == np.float32 else 1e-12)
    assert (grid == -1).sum() == grid.size - out.size  # nothing outside the tile


def test_the_dot_tile_size_must_be_a_constant(tiles):
    a, out = np.zeros(32, np.float32), np.zeros((2, 1), np.float32)
    with pytest.raises(errors.TypingError, match="literal tile size"):
        tiles.dot_rows_given(a, np.zeros(2, np.int64), a, np.zeros(1, np.int64), out, 16, 2)


def test_this_machine_has_vector_registers():
    width, registers = vector_registers()
    assert (width, registers) in ((64, 32), (32, 16))


def test_convolutions_tiled_for_avx2_registers_match_the_reference(monkeypatch):
    """The tile sizes of a machine with 16 vector registers of 32 bytes, whatever this one has: for the conv,
    runs of 4 of an output row's 7 positions by 3 vectors of the 20 channels; for the input gradient 3 rows (of
    3 channels) by 2 vectors of positions; for the weight gradient one row of 3 taps by 3 vectors of the 20
    channels."""
    import nncc.ops.conv as conv
    from nncc.compiler import Program
    from nncc.ir import GraphBuilder, TensorType
    from nncc.ops import get_op

    monkeypatch.setattr(conv, "vector_registers", lambda: (32, 16))
    rng = np.random.default_rng(0)
    attrs = {"stride": [1, 1], "padding": [1, 2], "dilation": [1, 1], "groups": 1}
    arrays = {"x": rng.standard_normal((2, 3, 6, 5)), "w": rng.standard_normal((20, 3, 3, 3)),
              "gy": rng.standard_normal((2, 20, 6, 7))}
    b = GraphBuilder("avx2_tiles")
    v = {k: b.input(k, TensorType("f32", a.shape)) for k, a in arrays.items()}
    outs = (b.add("conv2d", [v["x"], v["w"]], attrs) + b.add("conv2d_backward_input", [v["gy"], v["w"], v["x"]], attrs)
            + b.add("conv2d_backward_weight", [v["x"], v["gy"], v["w"]], attrs))
    program = Program(b.finish(outs))
    for tile in (", Wp, 4, 3, 4, 32)", ", 0, 3, 2, 3, 32)", ", 3, 3, 3, 32)"):
        assert tile in program.emitted.source
    feeds = {k: a.astype(np.float32) for k, a in arrays.items()}
    got = program(feeds)
    want = (get_op("conv2d").reference([feeds["x"], feeds["w"]], attrs)[0],
            get_op("conv2d_backward_input").reference([feeds["gy"], feeds["w"], feeds["x"]], attrs)[0],
            get_op("conv2d_backward_weight").reference([feeds["x"], feeds["gy"], feeds["w"]], attrs)[0])
    for have, expected in zip(got, want):
        np.testing.assert_allclose(have, expected, rtol=1e-4, atol=1e-5)
