"""Seeded parameter initialisation with PyTorch's default rules (Kaiming-uniform with a=sqrt(5))."""
from __future__ import annotations

import math

import numpy as np

_RNG = [np.random.default_rng(0)]


def manual_seed(seed: int) -> None:
    """Seed the generator that new layers draw their initial weights from."""
    _RNG[0] = np.random.default_rng(seed)


def uniform(shape, bound: float) -> np.ndarray:
    return _RNG[0].uniform(-bound, bound, size=shape).astype(np.float32)


def kaiming_uniform(shape, fan_in: int) -> np.ndarray:
    """PyTorch's ``kaiming_uniform_(w, a=math.sqrt(5))``: bound = sqrt(6 / ((1 + a^2) * fan_in))."""
    return uniform(shape, math.sqrt(6.0 / (6.0 * fan_in)))


def bias_uniform(shape, fan_in: int) -> np.ndarray:
    return uniform(shape, 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0)
