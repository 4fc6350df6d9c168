"""Denormal floats are flushed to zero while a compiled CPU module runs (nncc/codegen/cpu/float_mode.py), on the
calling thread and on the threads running a kernel's chunks, and the caller's mode is back afterwards."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nncc
from nncc import nn
from nncc.ops.cpu_chunks import launcher_slot

TINY = np.float32(1e-20)  # its square is denormal (about 1e-40)
DENORMAL = np.float32(1e-39)
ROOT = Path(__file__).resolve().parents[2]


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


# in a fresh process, so that the flushing call is the one that starts numba's threads
AFTERWARDS = """
import numpy as np, nncc
from numba import njit, prange
from codegen.test_cpu_float_mode import Sum25

@njit(parallel=True)
def squares(a, out):
    for i in prange(a.size):
        out[i] = a[i] * a[i]

nncc.compile(Sum25(), input_shape=(None, 1, 5, 5))(np.full((4, 1, 5, 5), np.float32(1e-39), np.float32))
a = np.full(1000, np.float32(1e-20), np.float32)
out = np.zeros_like(a)
squares(a, out)
print(int((out == 0).sum()))
"""


def test_numba_threads_started_by_a_flushing_call_do_not_keep_flushing():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    out = subprocess.run([sys.executable, "-c", AFTERWARDS], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "0"  # every thread's squares are denormal, none flushed
