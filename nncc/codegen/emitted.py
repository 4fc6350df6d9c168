"""The result of code generation, for any target."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from ..passes.memory import MemoryPlan
from .cache import load_generated


@dataclass
class Emitted:
    """Generated source and how to run it: ``load()`` imports it and returns the driver."""

    source: str
    entry: str  # name of the driver function
    constants: list[np.ndarray]  # passed after the graph inputs
    kernel_count: int
    memory: Optional[MemoryPlan] = None  # when set, the driver takes an ``arena`` array after the constants
    batch_source: Optional[tuple[int, int]] = None  # (input index, axis) of the batch size scaling the arena
    # (module) -> {work item: CPU seconds its compile took}: run before a Program's first call
    before_first_call: Optional[Callable] = None
    threaded: bool = False  # some kernels run on numba's threads (CPU)

    def load(self) -> Callable:
        return getattr(load_generated(self.source), self.entry)
