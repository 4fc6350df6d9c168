"""Code generation: per target, a graph and its kernel plan become a generated Python module."""
from __future__ import annotations

from typing import Optional

from ..errors import UnsupportedError
from ..ir.graph import Graph
from ..passes.fusion import Kernel
from ..passes.memory import MemoryPlan
from .emitted import Emitted


def emit(target: str, graph: Graph, kernels: list[Kernel], parallel: bool = False,
         memory: Optional[MemoryPlan] = None) -> Emitted:
    """Generate the module for ``target``; ``parallel`` lets CPU kernels run their prange loops on threads;
    ``memory`` places intermediate buffers in one arena."""
    if target == "cpu":
        from .cpu.emitter import CpuEmitter

        return CpuEmitter(graph, kernels, parallel, memory).emit()
    raise UnsupportedError(f"no code generator for target {target!r}")
