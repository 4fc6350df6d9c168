"""Denormal floats are flushed to zero while a compiled CPU module runs (nncc/codegen/cpu/float_mode.py), on the
calling thread and on the threads running a kernel's chunks, and the caller's mode is back afterwards."""
import numpy as np
import pytest

import nncc
from nncc import nn
from nncc.ops.cpu_chunks import launcher_slot

TINY = np.float32(1e-20)  # its square is denormal (about 1e-40)
DENORMAL = np.float32(1e-39)


class Square(nn.Module):
    def forward(self, x):
        return x * x


class Sum25(nn.Module):
    """A 5x5 convolution of ones: 25 denormal inputs add up to a normal float (2.5e-38)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 5, bias=False)
        self.conv.weight[...] = 1.0

    def forward(self, x):
        return self.conv(x)


@pytest.mark.parametrize("flush", [True, False])
def test_denormal_results_flush_to_zero_unless_asked_not_to(flush):
    fwd = nncc.compile(Square(), input_shape=(None, 4), flush_denormals=flush)
    out = fwd(np.full((2, 4), TINY, np.float32))
    np.testing.assert_array_equal(out, 0 if flush else TINY * TINY)
    assert TINY * TINY > 0  # the caller's mode is back


def test_chunks_on_numba_threads_read_denormal_inputs_as_zero():
    assert launcher_slot() is not None, "this test needs numba to have more than one thread"
    x = np.full((4, 1, 5, 5), DENORMAL, np.float32)  # 4 samples: a chunk of 2 on each of two threads
    flushing = nncc.compile(Sum25(), input_shape=(None, 1, 5, 5))
    assert "_launch(k0_chunk, addresses" in flushing.source()
    flushed, kept = flushing(x), nncc.compile(Sum25(), input_shape=(None, 1, 5, 5), flush_denormals=False)(x)
    np.testing.assert_array_equal(flushed, 0)
    np.testing.assert_allclose(kept, 25 * np.float64(DENORMAL), rtol=1e-5)

