"""Shared test setup: a repo-local kernel cache (so test processes reuse compiled kernels) and data paths."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("NNCC_CACHE_DIR", str(ROOT / ".nncc_cache"))
# CUDA tests run on numba's simulator unless NUMBA_ENABLE_CUDASIM=0 is set (on a machine with a GPU);
# the variable must be set before numba.cuda is first imported, and it does not affect CPU kernels
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
sys.path.insert(0, str(ROOT / "examples"))

MNIST_SMALL = ROOT.parent / "shared" / "data" / "mnist-small"


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not MNIST_SMALL.exists():
        pytest.fail(f"the MNIST test data is expected at {MNIST_SMALL}")
    return MNIST_SMALL
