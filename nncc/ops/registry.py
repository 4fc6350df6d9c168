"""The op registry. An op is defined in one place: its shape rule, numpy reference, VJP rule and lowering.

Fusion classes (``kind``):
- ``elementwise``: one scalar expression per output element (``scalar``); inputs broadcast numpy-style.
  The codegen turns chains of them into one loop nest.
- ``view``: no kernel; the driver rebinds the buffer (``view`` returns a driver expression).
- ``kernel``: a hand-written loop nest per target (``lower``), e.g. conv, matmul, pooling, reductions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from ..errors import IRError, ShapeError
from ..ir.types import TensorType

# (builder, node, output grads, which inputs need a grad) -> one grad Value (or None) per input
VJPRule = Callable[[Any, Any, list, list], list]


@dataclass
class OpDef:
    name: str
    kind: str  # "elementwise" | "view" | "kernel"
    infer: Callable[[list[TensorType], dict], list[TensorType]]
    reference: Callable[[list[np.ndarray], dict], list[np.ndarray]]
    vjp: Optional[VJPRule] = None
    scalar: Optional[Callable[..., str]] = None  # elementwise: (arg exprs, attrs, const) -> expression
    view: Optional[Callable[[str, str], str]] = None  # view: (input expr, output shape expr) -> driver expr
    lower: dict[str, Callable] = field(default_factory=dict)  # kernel: target -> (node, fn name) -> source
    inplace: dict[int, int] = field(default_factory=dict)  # output index -> input index whose buffer it reuses
    flops: Optional[Callable[[Any, dict], int]] = None  # (node, symbol sizes) -> FLOP count, for --stats
    # kernel: its CPU loops may sum in any order (LLVM then vectorises the reductions), as BLAS and numpy's
    # pairwise sums do; results move by rounding only
    reassociate: bool = False
    # kernel: an anchor whose CPU lowering, given epilogue="e0, e1, ..." (the parameters of the elementwise
    # consumers the fusion pass gave it), calls {name}_epilogue(lo, hi, e0, e1, ...) on each finished range of
    # output rows, while they are still in cache
    epilogue: bool = False
    # kernel: an anchor whose CPU lowering, given bias_grad=True, also writes into an extra output after its
    # own the sum of one of its inputs over every axis but 1 (the bias gradient, folded into the weight
    # gradient's pass over the output gradient): bias_grad(node) is the index of that input, None where the
    # node's attributes rule it out; the fusion pass gives the anchor such a sum
    bias_grad: Optional[Callable[[Any], Optional[int]]] = None
    # kernel: an anchor whose CPU lowering, given prologue=node, computes its input #1 one sample at a time with
    # that node's ``sample_prologue`` into a scratch of its own instead of reading it (the fusion pass gives it
    # a producer nothing else reads: the gradient never goes to memory)
    prologue: bool = False
    # kernel: CPU source of ``name(<its inputs>, out, n)`` writing sample n of its output into out[0], for an
    # anchor's prologue; (node, name) -> source, or None where the node's attributes have no such form
    sample_prologue: Optional[Callable[[Any, str], Optional[str]]] = None
    # kernel: its CPU lowering reads every array parameter of rank > 0 flat (``.reshape(-1)``): the driver passes
    # 1-D views, so parameters of any shape share one compiled kernel (an optimizer update: LeNet's ten
    # parameters of ranks 1, 2 and 4 took three compiles)
    flat: bool = False
    # kernel: attributes its CPU lowering takes as trailing integer parameters (after the arrays, before any
    # epilogue parameters) instead of constants in the source, so nodes differing only in them share one
    # compiled kernel (conv padding: LeNet's two convolutions and their weight gradients); node -> name: value
    runtime_attrs: Optional[Callable[[Any], dict[str, int]]] = None

    def infer_types(self, node) -> list[TensorType]:
        """Run the shape rule; ShapeError messages gain the node's description."""
        try:
            return self.infer([v.type for v in node.inputs], node.attrs)
        except ShapeError as e:
            raise ShapeError(f"{node.describe()}: {e}") from None
        except (KeyError, TypeError, IndexError) as e:
            raise IRError(f"{node.describe()}: bad attributes {node.attrs}: {e}") from None


_OPS: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    if op.name in _OPS:
        raise ValueError(f"op {op.name!r} registered twice")
    _OPS[op.name] = op
    return op


def get_op(name: str) -> OpDef:
    _load_all()
    try:
        return _OPS[name]
    except KeyError:
        raise IRError(f"unknown op {name!r}") from None


def all_ops() -> dict[str, OpDef]:
    _load_all()
    return dict(_OPS)


def _load_all() -> None:
    from . import conv, elementwise, indexing, losses, matmul, optim, pool, random, reduce, shape  # noqa: F401


def expect_rank(t: TensorType, rank: int, what: str) -> None:
    if t.rank != rank:
        raise ShapeError(f"{what} must have rank {rank}, got {t}")

