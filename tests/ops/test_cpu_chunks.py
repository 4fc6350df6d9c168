"""Chunked CPU kernels (nncc/ops/cpu_chunks.py: convolutions, grouped and strided too, max-pools, and matrix
products big enough to split): any number of chunks, one included, gives the numpy reference interpreter's
values and gradients node by node; with one thread the kernel calls its single chunk directly and the module's
launcher is not compiled."""
import numba
import numpy as np
import pytest

import nncc
from nncc import nn
from nncc.check import find_divergence


class ConvPoolConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 3, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.b = nn.Conv2d(3, 2, 3)

    def forward(self, x):
        return self.b(self.pool(nn.functional.relu(self.a(x))))


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 4, 3, padding=1, groups=2)
        self.b = nn.Conv2d(4, 2, 3, stride=2, groups=2)

    def forward(self, x):
        return self.b(self.a(x))


def wide_mlp():
    """From batch 4, its first layer's product and that product's weight gradient (72 x 1024 multiply-adds per
    sample) are split into chunks of rows (matmul.THREADED_PRODUCT); the second layer's stay whole."""
    return nn.Sequential(nn.Flatten(), nn.Linear(72, 1024), nn.ReLU(), nn.Linear(1024, 4))


CASES = {"conv-pool-conv": (ConvPoolConv, (2, 1, 1)), "grouped-strided": (Grouped, (2, 2, 2)),
         "wide-mlp": (wide_mlp, (4,))}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("threads", [1, 3])
def test_any_chunk_count_gives_the_reference_gradients(monkeypatch, threads, case):
    numba.get_num_threads()  # numba's pool starts with the machine's thread count, not the patched one below
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", threads)  # read when the source is generated
    nncc.manual_seed(0)
    make, target_shape = CASES[case]
    model = make()
    step = nncc.compile(model, input_shape=(None, 2, 6, 6), loss=nn.MSELoss())
    assert ("\n    (_chunks, " in step.source("grad")) == (threads > 1)  # the launcher has a slot
    chunk_counts = [line for line in step.source("grad").splitlines() if line.endswith("# chunks of the batch")]
    assert chunk_counts and all(f", {threads}))" in line for line in chunk_counts)
    rng = np.random.default_rng(0)
    for batch in (1, 2, 5):  # fewer samples than chunks, as many, more
        x, y = rng.random((batch, 2, 6, 6), np.float32), rng.random((batch,) + target_shape, np.float32)
        assert find_divergence(step, x, y, kind="grad") is None, f"batch {batch}"
