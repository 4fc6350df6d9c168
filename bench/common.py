"""Shared benchmark helpers: the PyTorch twin of examples/lenet.py, alternating timers, cold/warm compiles."""
from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "tests"))  # the PyTorch twins of the example models


def torch_lenet(state: dict):
    """PyTorch's twin of examples/lenet.py (the one the parity tests use), loaded with ``state``."""
    import torch

    from parity.torch_models import LeNet

    model = LeNet()
    model.load_state_dict({k: torch.tensor(v) for k, v in state.items()})
    return model


MNIST_SMALL = ROOT.parent / "shared" / "data" / "mnist-small"


def batch_cycle(batch: int, samples: int = 4096, convert=None):
    """A function returning the next of the distinct LeNet batches (x, y) cut from about ``samples`` images,
    in a cycle, each passed through ``convert`` (``torch.tensor``, say) once: MNIST digits from the
    mnist-small set beside the checkout, else random images with random labels. Training benchmarks step
    through real data because their values matter to the speed: a step trained on one random batch over and
    over drives activations and gradients into denormal floats, whose arithmetic is slow (nncc's batch-1 step
    went from 0.15 to 1.9-2.4 ms after a few hundred such steps on an AVX-512 machine, and stayed at 0.15 ms
    with denormals flushed)."""
    samples = max(samples, 2 * batch)
    if MNIST_SMALL.exists():
        from runtime import data

        train, _ = data.mnist(MNIST_SMALL)
        images, labels = train.images[:samples], train.labels[:samples]
    else:
        rng = np.random.default_rng(0)
        images, labels = rng.random((samples, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, samples)
    pool = [(images[i:i + batch], labels[i:i + batch]) for i in range(0, len(labels) - batch + 1, batch)]
    if convert is not None:
        pool = [(convert(x), convert(y)) for x, y in pool]
    return itertools.cycle(pool).__next__


def alternate(fns: dict, seconds: float = 1.0, rounds: int = 7) -> dict:
    """Median seconds per call of each function, timed in interleaved rounds (A B A B ...) on a noisy machine."""
    per_call = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # warm up
    for _ in range(rounds):
        for name, fn in fns.items():
            n, start = 0, time.perf_counter()
            while True:
                fn()
                n += 1
                elapsed = time.perf_counter() - start
                if elapsed > seconds / rounds:
                    break
            per_call[name].append(elapsed / n)
    return {name: statistics.median(v) for name, v in per_call.items()}


def timed_subprocess(code: str, env_extra: dict) -> float:
    """Run ``code`` in a fresh interpreter and return the seconds it printed as JSON {"seconds": ...}."""
    env = dict(os.environ, **env_extra)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def cold_and_warm(code: str) -> tuple[float, float]:
    """Compile time with an empty kernel cache, then again in a new process with the cache filled."""
    with tempfile.TemporaryDirectory() as cache:
        cold = timed_subprocess(code, {"NNCC_CACHE_DIR": cache})
        warm = timed_subprocess(code, {"NNCC_CACHE_DIR": cache})
    return cold, warm


def matmul_peak_gflops() -> float:
    """The machine's practical fp32 peak: a large numpy sgemm on every core, best of a few (numpy's BLAS on all
    cores: compiling an nncc model leaves it one thread, see nncc/codegen/cpu/blas_threads.py)."""
    from threadpoolctl import threadpool_limits

    a = np.random.rand(2048, 2048).astype(np.float32)
    b = np.random.rand(2048, 2048).astype(np.float32)
    with threadpool_limits(limits=len(os.sched_getaffinity(0)), user_api="blas"):
        a @ b
        best = min(_timeit(lambda: a @ b) for _ in range(5))
    return 2 * 2048 ** 3 / best / 1e9


def _timeit(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def table(rows: list[dict]) -> str:
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    lines = [" | ".join(k.ljust(widths[k]) for k in keys), "-|-".join("-" * widths[k] for k in keys)]
    lines += [" | ".join(str(r[k]).ljust(widths[k]) for k in keys) for r in rows]
    return "\n".join(lines)
