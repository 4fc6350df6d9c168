"""Threads on the CPU: by default convolutions and max-pools run their batch in chunks on numba's threads
(through the one launcher of their module, compiled with prange-only parallel options) and the BLAS they
call, numpy's, is left with one thread; parallel=True also runs the other kernels' batch loops on numba's
threads, with the same results."""
import numba
import numpy as np
from threadpoolctl import ThreadpoolController

import nncc
from nncc import nn
from nncc.codegen.cpu.blas_threads import _numpy_dirs
from nncc.ops.cpu_chunks import CHUNK_LOOP, PRANGE_ONLY
from parity.nncc_models import MODELS


def _numpy_blas_threads() -> list[int]:
    return [lib.num_threads for lib in ThreadpoolController().select(user_api="blas").lib_controllers
            if lib.filepath.startswith(_numpy_dirs())]


def test_parallel_kernels_match_the_default_ones_and_blas_keeps_one_thread(monkeypatch):
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 2)  # chunks on threads even on a 1-core runner
    nncc.manual_seed(0)
    model = MODELS["lenet"][0]()
    default = nncc.compile(model, input_shape=(None, 1, 28, 28), loss=nn.CrossEntropyLoss())
    assert _numpy_blas_threads() == [1]
    parallel = nncc.compile(model, input_shape=(None, 1, 28, 28), loss=nn.CrossEntropyLoss(), parallel=True)
    for source in (default.source("grad"), parallel.source("grad")):
        # conv forward (a kernel per register tile: 6 and 16 channels), input gradient, weight gradients (conv1's
        # 6 channels by BLAS, conv2's 16 in tiles); max-pool and its gradient; five kinds of matrix product
        assert source.count("    _launch(k") == 12
        assert source.count(CHUNK_LOOP) == source.count(f"parallel={PRANGE_ONLY}") == 1  # their launcher
    assert "parallel=True" in parallel.source("grad") and "parallel=True" not in default.source("grad")
    rng = np.random.default_rng(0)
    x, y = rng.random((5, 1, 28, 28), np.float32), rng.integers(0, 10, 5)
    loss, grads = parallel.grad(x, y)
    want_loss, want = default.grad(x, y)
    assert abs(loss - want_loss) <= 1e-6 * abs(want_loss)
    for name, g in want.items():
        np.testing.assert_allclose(grads[name], g, rtol=1e-5, atol=1e-6, err_msg=name)
