"""CUDA test setup: a short GIL switch interval on numba's simulator.

The simulator runs every CUDA thread as a Python thread and polls them, holding the GIL, while they wait in
``cuda.syncthreads()``; each barrier then costs a few switch intervals (5 ms each by default), which would make
the shared-memory kernels (tiled matrix products, block reductions) dominate the suite's time.
"""
import sys

import pytest
from numba import config


@pytest.fixture(autouse=True, scope="session")
def _fast_simulated_barriers():
    if not config.ENABLE_CUDASIM:
        yield
        return
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-3)
    yield
    sys.setswitchinterval(previous)
