"""CPU emitter: a graph and its kernel plan become one Python module of ``numba.njit`` functions.

The module holds one function per kernel and a driver ``_run`` that allocates buffers and calls the kernels
in order through their addresses (``native_calls.py``), so one call from Python, ``run``, runs the whole
graph. Sizes are read from the arrays at run time, so a new batch size reuses the compiled code. Identifiers
come from counters; model names appear only in comments, escaped.
"""
from __future__ import annotations

import re
from typing import Optional

import numpy as np

from ...ir.graph import Graph, Node, Value
from ...ir.printer import format_attr, format_name
from ...ir.types import TensorType, dtype_of, is_float
from ...ops.cpu_chunks import LAUNCH_CALLS, has_partial_rows, launcher_slot
from ...ops.registry import get_op
from ...passes.fusion import Kernel
from ...passes.memory import MemoryPlan
from ..emitted import Emitted
from ..naming import comment_text
from .arrays import ARRAYS, ARRAYS_IMPORTS
from .blas import BLAS_CALLS, BLAS_IMPORTS
from .float_mode import FLOAT_MODE, FLOAT_MODE_IMPORTS
from .fma_tile import FMA_TILE
from .native_calls import NATIVE_CALLS, NATIVE_CALLS_IMPORTS, NATIVE_ONLY, array_type, numba_type, wrapper
from .parallel_compile import compile_module
from .window_rows import WINDOW_ROWS

_NP_NAMES = {"f32": "np.float32", "f64": "np.float64", "i64": "np.int64", "i32": "np.int32", "bool": "np.bool_"}
_JIT = '@njit(cache=True, error_model="numpy"{flags})'


class _Consts:
    """Renders literal constants in a kernel's float dtype so float32 arithmetic stays float32."""

    def __init__(self, dtype: str):
        self.np_name = _NP_NAMES[dtype if is_float(dtype) else "f32"]

    def __call__(self, value: float) -> str:
        return f"{self.np_name}({float(value)!r})"

    @staticmethod
    def cast(dtype: str) -> str:
        return _NP_NAMES[dtype]


def _decorate(function_source: str, parallel: bool, reassociate: bool = False, helper: bool = False) -> str:
    # A prange is a plain range unless parallel: numba's parfors make the cold compile ~3x longer (BENCHMARKS.md);
    # chunked kernels run on threads through the module's one launcher instead (ops/cpu_chunks.py)
    flags = ", parallel=True" if parallel and "prange(" in function_source else ""
    flags += ', fastmath={"reassoc"}' if reassociate else ""
    # A helper (im2col, an epilogue) is inlined into its kernel's numba IR: compiled as a function of its own,
    # it was compiled once alone and again when linked into the kernel (a third of a conv kernel's compile)
    flags += ', inline="always"' if helper else NATIVE_ONLY
    return _JIT.format(flags=flags) + "\n" + function_source


def describe_node(node: Node, names: dict[Value, str]) -> str:
    """``%3 = relu(%2)  [fc1]``: the provenance comment placed above generated code."""
    outs = ", ".join(names.get(o, "?") for o in node.outputs)
    ins = ", ".join(names.get(v, "?") for v in node.inputs)
    attrs = ""
    if node.attrs and node.op != "constant":
        attrs = " {" + ", ".join(f"{k}={format_attr(v)}" for k, v in sorted(node.attrs.items())) + "}"
    label = f"  [{comment_text(node.label)}]" if node.label else ""
    return f"{outs} = {node.op}({ins}){attrs}{label}"


class CpuEmitter:
    def __init__(self, graph: Graph, kernels: list[Kernel], parallel: bool = False,
                 memory: Optional[MemoryPlan] = None, flush_denormals: bool = True):
        self.graph = graph
        self.parallel = parallel
        self.flush_denormals = flush_denormals
        self.memory = memory
        self.kernels = kernels
        self.ir_names: dict[Value, str] = {}  # printer-style %names, for comments
        self.var: dict[Value, str] = {}  # driver variable of each value
        self.symbols: dict[str, str] = {}  # symbolic dim -> driver variable
        self.functions: list[str] = []
        self.by_source: dict[str, str] = {}  # kernel source (name placeholder) -> function name
        self.slots: dict[tuple[str, str], int] = {}  # (function name, signature) -> index in _SLOTS
        # kernel functions running their batch in chunks (ops/cpu_chunks.py) -> whether they pass partial sums
        self.chunked: dict[str, bool] = {}
        self.constants: list[np.ndarray] = []
        self.lines: list[str] = []

    def emit(self) -> Emitted:
        self._name_values()
        args = [self.var[v] for v in self.graph.inputs]
        for v in self.graph.inputs:
            for axis, d in enumerate(v.type.shape):
                if isinstance(d, str) and d not in self.symbols:
                    self.symbols[d] = f"s{len(self.symbols)}"
                    self.lines.append(f"    {self.symbols[d]} = {self.var[v]}.shape[{axis}]")
        self._check_arena()
        last_use = self._last_uses()
        for index, kernel in enumerate(self.kernels):
            self._emit_kernel(index, kernel, last_use)
        outs = ", ".join(self.var[v] for v in self.graph.outputs)
        self.lines.append(f"    return ({outs},)")
        const_args = [f"c{i}" for i in range(len(self.constants))] + (["arena"] if self.memory else [])
        header = [
            f"# Generated by nncc from graph {comment_text(self.graph.name)!s}. Do not edit.",
            BLAS_IMPORTS,
            "import math",
            "",
            "import numpy as np",
            "from numba import njit, prange",
            NATIVE_CALLS_IMPORTS,
            ARRAYS_IMPORTS,
            FLOAT_MODE_IMPORTS,
            ARRAYS,
            BLAS_CALLS,
            FMA_TILE,
            WINDOW_ROWS,
        ]
        slots = "".join(f"\n    ({name}, {sig!r})," for name, sig in self.slots)
        driver = [FLOAT_MODE, NATIVE_CALLS] + ([LAUNCH_CALLS] if self.chunked else []) + [
            f"_SLOTS = ({slots}\n)", f"_DRIVER_SIGNATURE = {self._driver_signature()!r}", "", "",
            _JIT.format(flags=""), f"def _run({', '.join(args + const_args + ['addresses'])}):"]
        source = "\n".join(header + ["", "\n\n\n".join(self.functions), ""] + driver + self.lines +
                           [wrapper(self.flush_denormals)])
        return Emitted(source, "run", self.constants, len(self.by_source), self.memory, self._batch_source(),
                       before_first_call=compile_module,
                       threaded=launcher_slot() in self.slots or "parallel=True" in source)

    def _check_arena(self) -> None:
        """The driver's arena views (``_view``) are not bounds-checked: the arena's size is, once."""
        if not self.memory:
            return
        batch = self._arena_batch()
        need = f"{self.memory.per_sample_size} * {batch} + {self.memory.static_size}" if batch \
            else str(self.memory.static_size)
        self.lines += [f"    if arena.size < {need}:",
                       f'        raise ValueError("the arena is smaller than this batch needs ({need} elements)")']

    def _driver_signature(self) -> str:
        """The argument types ``run`` passes ``_run``, so a worker process can compile it (parallel_compile.py)."""
        types_ = [numba_type(v.type) for v in self.graph.inputs]
        types_ += [array_type(dtype_of(c.dtype), c.ndim) for c in self.constants]
        types_ += [array_type(self.memory.dtype, 1)] if self.memory else []
        return f"({', '.join(types_ + ['int64[::1]'])})"

    # ---- naming --------------------------------------------------------------------------------------------
    def _name_values(self) -> None:
        for i, v in enumerate(self.graph.inputs):
            self.var[v] = f"a{i}"
            self.ir_names[v] = format_name(v.name)  # escaped: it lands in comments
        counter = 0
        for node in self.graph.nodes:
            for out in node.outputs:
                self.ir_names[out] = f"%{counter}"
                self.var[out] = f"v{counter}"
                counter += 1

    def _last_uses(self) -> dict[Value, int]:
        last: dict[Value, int] = {}
        for index, kernel in enumerate(self.kernels):
            for v in kernel.inputs:
                last[v] = index
        for v in self.graph.outputs:
            last[v] = len(self.kernels)
        return last

    def _dims(self, t: TensorType) -> list[str]:
        return [self.symbols[d] if isinstance(d, str) else str(d) for d in t.shape]

    def _shape_expr(self, t: TensorType) -> str:
        dims = self._dims(t)
        return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"

    def _batch_source(self) -> Optional[tuple[int, int]]:
        """(graph input index, axis) where the driver reads the batch size that scales the arena."""
        if self.memory is None or self.memory.symbol is None:
            return None
        for i, v in enumerate(self.graph.inputs):
            if self.memory.symbol in v.type.shape:
                return i, list(v.type.shape).index(self.memory.symbol)
        return None

    def _alloc(self, v: Value) -> None:
        place = self.memory.placements.get(v) if self.memory else None
        if place is None:
            self.lines.append(f"    {self.var[v]} = _empty({self._shape_expr(v.type)}, {_NP_NAMES[v.dtype]})")
            return
        batch = self._arena_batch()
        if place.per_sample:
            start = f"{place.offset} * {batch}"
        else:  # after the per-sample part, which scales with the batch
            start = f"{self.memory.per_sample_size} * {batch} + {place.offset}" if batch else str(place.offset)
        self.lines.append(f"    {self.var[v]} = _view(arena, {start}, {self._shape_expr(v.type)})")

    def _arena_batch(self) -> Optional[str]:
        """The driver variable of the batch size the arena's per-sample part scales with (None: no such)."""
        return self.symbols[self.memory.symbol] if self.memory.symbol else None

    def _function(self, source_with_placeholder: str, reassociate: bool = False) -> str:
        """Register a kernel function (deduplicated by source) and return its name."""
        if source_with_placeholder not in self.by_source:
            name = f"k{len(self.by_source)}"
            src = source_with_placeholder.replace("KERNEL", name)
            chunked = f"def {name}_chunk(" in src
            # what the driver and the launcher call through addresses; a chunked kernel's own function (a few
            # lines around _launch) is inlined into the driver like a helper (ops/cpu_chunks.py)
            entries = (f"def {name}_chunk(",) if chunked else (f"def {name}(",)
            self.functions.append("\n".join(
                _decorate(part, self.parallel, reassociate, helper=not part.startswith(entries))
                for part in re.split(r"(?m)^(?=def )", src) if part))
            self.by_source[source_with_placeholder] = name
            if chunked:
                self.chunked[name] = has_partial_rows(src)
        return self.by_source[source_with_placeholder]

    # ---- kernels ---------------------------------------------------------------------------------------------
    def _emit_kernel(self, index: int, kernel: Kernel, last_use: dict[Value, int]) -> None:
        for node in kernel.nodes:
            self.lines.append("    # " + describe_node(node, self.ir_names))
        node = kernel.nodes[0]
        if node.op == "constant":
            out = node.outputs[0]
            self.var[out] = f"c{len(self.constants)}"
            # in the IR's dtype: kernels are compiled for the types the graph declares; keeps 0-d arrays 0-d
            self.constants.append(np.array(node.attrs["value"], dtype=out.type.np_dtype, order="C"))
            return
        if kernel.kind == "view":  # a reshape (OpDef.view): every array of the driver is C-contiguous
            out, source = node.outputs[0], self.var[node.inputs[0]]
            self.lines.append(f"    {self.var[out]} = _view({source}, 0, {self._shape_expr(out.type)})")
            return
        flat = False
        if kernel.kind == "elementwise":
            name = self._function(elementwise_source(kernel))
            for v in kernel.outputs:
                self._alloc(v)
            values = kernel.inputs + kernel.outputs
        elif kernel.epilogue:
            name, values = self._anchor_with_epilogue(kernel)
        elif kernel.bias_sum is not None or kernel.prologue is not None:
            name, values = self._anchor_with_bias_grad_or_prologue(kernel)
        else:
            op = get_op(node.op)
            name = self._function(op.lower["cpu"](node, "KERNEL"), op.reassociate)
            for i, out in enumerate(node.outputs):
                src = op.inplace.get(i)
                donor = node.inputs[src] if src is not None else None
                if donor is not None and last_use.get(donor) == index:
                    self.lines.append(f"    {self.var[out]} = {self.var[donor]}")
                else:
                    self._alloc(out)
            values = node.inputs + node.outputs + _runtime_attrs(node)
            flat = op.flat
        self.lines.append(self._call(name, values, node.outputs[0].dtype, flat))

    def _call(self, name: str, args: list, dtype: str, flat: bool = False) -> str:
        """The driver line calling kernel ``name`` on ``args`` (values, and integers of ``runtime_attrs``)
        through its slot: one per kernel and signature; with ``flat`` (OpDef.flat) arrays are passed as 1-D
        views. A chunked kernel is called by name (it is inlined) with the addresses; its chunk function gets a
        slot (t, T, a pointer to the kernel's arguments, packed, with a [T, size] array of ``dtype`` after them
        where it reduces), and the module's launcher one when there are threads to launch on (ops/cpu_chunks.py)."""
        def flattened(a) -> bool:
            return flat and not isinstance(a, int) and a.type.rank > 1

        types_ = [array_type(a.dtype, 1) if flattened(a) else numba_type(a if isinstance(a, int) else a.type)
                  for a in args]
        passed = "".join((str(a) if isinstance(a, int) else self._flat(a) if flattened(a) else self.var[a]) + ", "
                         for a in args)
        if name in self.chunked:
            partial = [array_type(dtype, 2)] if self.chunked[name] else []
            packed = f"CPointer(Tuple(({', '.join(types_ + partial)},)))"
            self.slots.setdefault((f"{name}_chunk", _signature(["int64", "int64", packed])), len(self.slots))
            if launcher_slot():
                self.slots.setdefault(launcher_slot(), len(self.slots))
            return f"    {name}({passed}addresses)"
        self.slots.setdefault((name, _signature(types_)), len(self.slots))
        return f"    _call({name}, addresses, ({passed}))"

    def _flat(self, v: Value) -> str:
        """A 1-D view of value ``v`` (C-contiguous, as every array the driver has)."""
        return f"_view({self.var[v]}, 0, ({' * '.join(self._dims(v.type))},))"

    def _anchor_with_epilogue(self, kernel: Kernel) -> tuple[str, list]:
        """An anchor op whose lowering calls ``KERNEL_epilogue(lo, hi, ...)``, the fused elementwise consumers,
        on each finished range [lo, hi) of its output's leading axis. The anchor's result keeps a buffer of its
        own even when only the epilogue reads it: written in place, the epilogue's loads and stores overlap,
        LLVM's runtime alias check fails and the loop runs scalar (measured 12 us instead of 1 us per LeNet
        sample for max-pool backward + ReLU mask)."""
        anchor, result = kernel.nodes[0], kernel.nodes[0].outputs[0]
        op = get_op(anchor.op)
        epi = Kernel(kernel.epilogue, "elementwise", [v for v in kernel.outputs if v is not result])
        made = {out for n in epi.nodes for out in n.outputs}
        epi.inputs = list(dict.fromkeys(v for n in epi.nodes for v in n.inputs if v not in made))
        params = ", ".join(f"e{i}" for i in range(len(epi.inputs) + len(epi.outputs)))
        source = op.lower["cpu"](anchor, "KERNEL", epilogue=params) + "\n\n\n" + \
            elementwise_source(epi, function="KERNEL_epilogue", rows=True)
        name = self._function(source, op.reassociate)
        for v in [result] + epi.outputs:
            self._alloc(v)
        return name, anchor.inputs + anchor.outputs + _runtime_attrs(anchor) + epi.inputs + epi.outputs

    def _anchor_with_bias_grad_or_prologue(self, kernel: Kernel) -> tuple[str, list]:
        """A ``bias_grad`` anchor (a weight gradient: a conv's, a matrix product's) that also writes the bias
        gradient, the sum the fusion pass gave it, into a parameter after its own outputs; with a prologue, the
        anchor takes the producer's inputs in place of its input #1, which it computes per sample."""
        anchor, prologue = kernel.anchor, kernel.prologue
        bias = [kernel.bias_sum.outputs[0]] if kernel.bias_sum is not None else []
        op = get_op(anchor.op)
        given = {"prologue": prologue} if prologue else {}  # only anchors declaring ``prologue`` take one
        name = self._function(op.lower["cpu"](anchor, "KERNEL", bias_grad=bool(bias), **given), op.reassociate)
        for v in anchor.outputs + bias:
            self._alloc(v)
        inputs = anchor.inputs[:1] + prologue.inputs + anchor.inputs[2:] if prologue else anchor.inputs
        return name, inputs + anchor.outputs + bias + _runtime_attrs(anchor)


def _signature(types_: list[str]) -> str:
    return f"void({', '.join(types_)})"


def _runtime_attrs(node: Node) -> list[int]:
    rule = get_op(node.op).runtime_attrs
    return list(rule(node).values()) if rule else []


def elementwise_source(kernel: Kernel, function: str = "KERNEL", rows: bool = False) -> str:
    """One loop nest over the kernel's domain computing every member node as a scalar expression. With
    ``rows``, the function takes ``lo, hi`` first and covers rows [lo, hi) of the leading axis only (an anchor's
    epilogue)."""
    domain = kernel.domain
    rank = domain.rank
    ins = {v: f"i{n}" for n, v in enumerate(kernel.inputs)}
    outs = {v: f"o{n}" for n, v in enumerate(kernel.outputs)}
    flat = all(v.type.shape == domain.shape or v.type.rank == 0 for v in kernel.inputs)
    params = (["lo", "hi"] if rows else []) + list(ins.values()) + list(outs.values())
    lines = [f"def {function}({', '.join(params)}):"]
    scalars = {}
    for v, name in ins.items():
        if v.type.rank == 0:
            scalars[v] = f"{name}s"
            lines.append(f"    {name}s = {name}[()]")
    first_out = next(iter(outs.values()))
    if flat and rank > 0:
        # rows: slice the flat views so the loop counts from 0; an index that may be negative costs a
        # wraparound check per element and stops LLVM from vectorising (7x slower measured)
        part = "[lo * row:hi * row]" if rows else ""
        if rows:
            lines.append(f"    row = {first_out}.size // max({first_out}.shape[0], 1)")
        for v, name in list(ins.items()) + list(outs.items()):
            if v.type.rank > 0:
                lines.append(f"    {name}f = {name}.reshape(-1){part}")
        lines.append(f"    for j in range({first_out}f.size):")
        depth = 2
    else:
        depth = 1
        for a in range(rank):
            extent = "lo, hi" if rows and a == 0 else f"{first_out}.shape[{a}]"
            lines.append("    " * depth + f"for j{a} in range({extent}):")
            depth += 1
    pad = "    " * depth

    def read(v: Value) -> str:
        if v in scalars:
            return scalars[v]
        if flat:
            return f"{ins[v]}f[j]"
        offset = rank - v.type.rank
        idx = [f"j{offset + a}" if not (d == 1 and domain.shape[offset + a] != 1) else "0"
               for a, d in enumerate(v.type.shape)]
        return f"{ins[v]}[{', '.join(idx)}]"

    local: dict[Value, str] = {}
    for v in kernel.inputs:
        local[v] = read(v)
    for n, node in enumerate(kernel.nodes):
        op = get_op(node.op)
        float_dtype = next((v.dtype for v in node.inputs + node.outputs if is_float(v.dtype)), "f32")
        expr = op.scalar([f"({local[v]})" for v in node.inputs], node.attrs, _Consts(float_dtype))
        tmp = f"t{n}"
        lines.append(f"{pad}{tmp} = {expr}  # {node.op}")
        local[node.outputs[0]] = tmp
    for v, name in outs.items():
        if rank == 0:
            lines.append(f"{pad}{name}[()] = {local[v]}")
        elif flat:
            lines.append(f"{pad}{name}f[j] = {local[v]}")
        else:
            lines.append(f"{pad}{name}[{', '.join(f'j{a}' for a in range(rank))}] = {local[v]}")
    return "\n".join(lines)
