"""One BLAS thread beside numba's threads.

CPU convolutions run their batch in chunks on numba's threads (ops/cpu_chunks.py) and call BLAS (numpy's, see
blas.py) from each chunk. If that BLAS keeps threads of its own, the two pools fight over the cores even when
they never run at once, for both spin a while after their work waits for more: on 2 cores the LeNet training
step at batch 256 ran at 6.2k img/s with OpenBLAS's two threads and 12.6k with one (and in an earlier
version with parallel=True everywhere, 1.7k against 22.5k at batch 64). Setting the thread count per call
costs ~11 us through threadpoolctl, a tenth of a batch-1 step, so it is set once for the process; numpy's own
matrix products then use one thread as well.
"""
from __future__ import annotations

import os
import warnings

import numpy as np


def _numpy_dirs() -> tuple[str, ...]:
    """Where a numpy wheel keeps the BLAS it bundles (numpy.libs on Linux/Windows, numpy/.dylibs on macOS)."""
    package = os.path.dirname(np.__file__)
    return package + os.sep, os.path.join(os.path.dirname(package), "numpy.libs") + os.sep


def one_blas_thread_for_kernels() -> None:
    """Limit the BLAS library that compiled kernels call (numpy's) to one thread, for this process."""
    from threadpoolctl import ThreadpoolController

    loaded = ThreadpoolController().select(user_api="blas").lib_controllers
    # A numpy built against a system BLAS (conda, distributions) keeps it elsewhere; alone, it is numpy's.
    found = [lib for lib in loaded if lib.filepath and lib.filepath.startswith(_numpy_dirs())]
    for lib in found or (loaded if len(loaded) == 1 else []):
        lib.set_num_threads(1)
    if not found and len(loaded) != 1:
        warnings.warn("nncc's threaded kernels: numpy's BLAS library was not told apart from the other loaded BLAS "
                      f"libraries ({[lib.filepath for lib in loaded]}), so its threads were left as they are; if it is "
                      "threaded, its threads and numba's compete for the cores", stacklevel=3)
