"""One BLAS thread inside parallel kernels.

Kernels compiled with ``parallel=True`` run their batch loops on numba's thread pool, one chunk of samples
per core, and call BLAS (numba's ``np.dot`` goes to SciPy's OpenBLAS) from each chunk. If that OpenBLAS
keeps its own threads too, the two pools fight over the cores: on 2 cores the LeNet training step fell from
10k to 1.7k img/s, while with one BLAS thread the parallel step ran at 22.5k against 13.8k serial (batch 64).
Setting the thread count per call costs ~11 us through threadpoolctl, a tenth of a batch-1 step, so it is set
once for the process. Only SciPy's BLAS is touched: numpy's own BLAS (a separate library) keeps its threads.
"""
from __future__ import annotations

import os
import warnings


def one_blas_thread_for_kernels() -> None:
    """Limit the BLAS library that compiled kernels call (SciPy's) to one thread, for this process."""
    import scipy
    import scipy.linalg.cython_blas  # noqa: F401  (loads the library numba binds np.dot to)
    from threadpoolctl import ThreadpoolController

    scipy_dir = os.path.dirname(scipy.__file__)  # its bundled OpenBLAS lives in the sibling scipy.libs
    found = [lib for lib in ThreadpoolController().select(user_api="blas").lib_controllers
             if lib.filepath and lib.filepath.startswith(scipy_dir)]
    for lib in found:
        lib.set_num_threads(1)
    if not found:
        warnings.warn("parallel=True: SciPy's BLAS library was not found, so its threads were left as they are; "
                      "if it is threaded, its threads and numba's compete for the cores", stacklevel=3)
