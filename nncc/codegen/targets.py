"""Targets: how to generate code for a device and how to move arrays to and from it.

The CPU target works on numpy arrays in place. The CUDA target keeps parameters, optimizer state and
intermediate buffers on the GPU; only the batch goes in and the results the caller asks for come out.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..errors import NNCCError, UnsupportedError
from ..ir.graph import Graph
from ..passes.fusion import Kernel
from ..passes.memory import MemoryPlan
from .emitted import Emitted


class CpuTarget:
    name = "cpu"
    epilogues = True  # anchors apply fused elementwise consumers (see passes/fusion.py)

    def emit(self, graph: Graph, kernels: list[Kernel], parallel: bool, memory: Optional[MemoryPlan],
             flush_denormals: bool = True) -> Emitted:
        from .cpu.emitter import CpuEmitter

        return CpuEmitter(graph, kernels, parallel, memory, flush_denormals).emit()

    def to_device(self, array: np.ndarray) -> Any:
        return array

    def to_host(self, array: Any) -> np.ndarray:
        return array

    def empty(self, size: int, dtype) -> Any:
        return np.empty(size, dtype)


class CudaTarget:
    name = "cuda"
    epilogues = False  # the CUDA emitter launches elementwise groups as kernels of their own

    def __init__(self):
        try:
            from numba import cuda
        except ImportError as e:
            raise UnsupportedError(f"target='cuda' needs numba's CUDA support: pip install 'nncc[cuda]' ({e})") from None
        if not cuda.is_available():
            raise NNCCError("target='cuda' needs an NVIDIA GPU with a working CUDA driver, and none was found; "
                            "set NUMBA_ENABLE_CUDASIM=1 to run the CUDA kernels on numba's simulator")
        self.cuda = cuda

    def emit(self, graph: Graph, kernels: list[Kernel], parallel: bool, memory: Optional[MemoryPlan],
             flush_denormals: bool = True) -> Emitted:  # a GPU's float32 arithmetic is not slowed by denormals
        from .cuda.emitter import CudaEmitter

        return CudaEmitter(graph, kernels, memory).emit()

    def to_device(self, array: Any) -> Any:
        if hasattr(array, "copy_to_host"):  # numba's (or its simulator's) device array
            return array
        if on_device(array):  # another library's CUDA array (CuPy, PyTorch): shared, not copied
            return self.cuda.as_cuda_array(array)
        return self.cuda.to_device(np.asarray(array, order="C"))  # keeps 0-d arrays 0-d

    def to_host(self, array: Any) -> np.ndarray:
        return array.copy_to_host() if hasattr(array, "copy_to_host") else np.asarray(array)

    def empty(self, size: int, dtype) -> Any:
        return self.cuda.device_array(size, dtype)


def get_target(name: str):
    if name == "cpu":
        return CpuTarget()
    if name == "cuda":
        return CudaTarget()
    raise UnsupportedError(f"target {name!r} is not supported (targets: cpu, cuda)")


def on_device(array: Any) -> bool:
    """Whether ``array`` is a CUDA array: numba's, its simulator's, or any with ``__cuda_array_interface__``."""
    return hasattr(array, "copy_to_host") or hasattr(array, "__cuda_array_interface__")
