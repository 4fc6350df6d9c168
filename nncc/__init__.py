"""nncc: a code-generating compiler for small neural networks (numba kernels for CPU and CUDA).

Example::

    import nncc
    from nncc import nn
    fwd = nncc.compile(MyModel(), input_shape=(None, 1, 28, 28))
    y = fwd(x)
"""
from .compiler import CompiledModule, compile
from .errors import IRError, NNCCError, ShapeError, UnsupportedError
from . import nn, onnx
from .frontend.nn.init import manual_seed

__version__ = "0.1.0"
__all__ = ["compile", "CompiledModule", "nn", "onnx", "manual_seed", "NNCCError", "ShapeError", "IRError",
           "UnsupportedError"]
