"""Shared test setup: a repo-local kernel cache (so test processes reuse compiled kernels) and data paths."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("NNCC_CACHE_DIR", str(ROOT / ".nncc_cache"))
sys.path.insert(0, str(ROOT / "examples"))

MNIST_SMALL = ROOT.parent / "shared" / "data" / "mnist-small"


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not MNIST_SMALL.exists():
        pytest.fail(f"the MNIST test data is expected at {MNIST_SMALL}")
    return MNIST_SMALL
