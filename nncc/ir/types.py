"""Tensor types: a dtype and a shape whose dims are ints or symbols (the batch dimension ``N``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from ..errors import UnsupportedError

Dim = Union[int, str]

#: IR dtype name -> numpy dtype.
DTYPES: dict[str, np.dtype] = {
    "f32": np.dtype(np.float32),
    "f64": np.dtype(np.float64),
    "i64": np.dtype(np.int64),
    "i32": np.dtype(np.int32),
    "bool": np.dtype(np.bool_),
}
_BY_NUMPY = {v: k for k, v in DTYPES.items()}


def dtype_of(np_dtype) -> str:
    """The IR dtype name of a numpy dtype, e.g. ``dtype_of(np.float32) == "f32"``."""
    try:
        return _BY_NUMPY[np.dtype(np_dtype)]
    except KeyError:
        raise UnsupportedError(f"dtype {np.dtype(np_dtype)} is not supported (supported: {sorted(DTYPES)})")


def is_float(dtype: str) -> bool:
    return dtype in ("f32", "f64")


@dataclass(frozen=True)
class TensorType:
    """``TensorType("f32", ("N", 1, 28, 28))`` prints as ``f32[N,1,28,28]``."""

    dtype: str
    shape: tuple[Dim, ...]

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise UnsupportedError(f"dtype {self.dtype!r} is not supported (supported: {sorted(DTYPES)})")
        object.__setattr__(self, "shape", tuple(self.shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def np_dtype(self) -> np.dtype:
        return DTYPES[self.dtype]

    def with_shape(self, shape) -> "TensorType":
        return TensorType(self.dtype, tuple(shape))

    def with_dtype(self, dtype: str) -> "TensorType":
        return TensorType(dtype, self.shape)

    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    def concrete(self, sizes: dict[str, int]) -> tuple[int, ...]:
        """The shape with every symbol replaced by its size in ``sizes``."""
        return tuple(sizes[d] if isinstance(d, str) else d for d in self.shape)

    def numel_static(self) -> int:
        """Number of elements counting each symbolic dim as 1 (per-sample size)."""
        n = 1
        for d in self.shape:
            n *= d if isinstance(d, int) else 1
        return n

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(str(d) for d in self.shape)}]"


def broadcast_shapes(*shapes: tuple[Dim, ...]) -> tuple[Dim, ...] | None:
    """numpy broadcasting of shapes that may hold symbols; None when they do not broadcast."""
    rank = max((len(s) for s in shapes), default=0)
    out: list[Dim] = []
    for axis in range(rank):
        dims = {s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0}
        dims.discard(1)
        if len(dims) > 1:
            return None
        out.append(dims.pop() if dims else 1)
    return tuple(out)
