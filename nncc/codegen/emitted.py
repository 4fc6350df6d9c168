"""The result of code generation, for any target."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .cache import load_generated


@dataclass
class Emitted:
    """Generated source and how to run it: ``load()`` imports it and returns the driver."""

    source: str
    entry: str  # name of the driver function
    constants: list[np.ndarray]  # passed after the graph inputs
    kernel_count: int

    def load(self) -> Callable:
        return getattr(load_generated(self.source), self.entry)
