"""Helpers for writing CUDA lowerings: grid-stride loops over units of work, block reductions, tiled products.

Two kinds of kernel (see the emitter's docstring for the launch protocol):

* ``cuda_kernel``: every thread strides over the units of work on its own (an element, a row, ...).
* ``block_kernel``: a block of a fixed shape takes one unit at a time (a row, a tile of a matrix product) and
  its threads cooperate through shared memory; blocks stride over the units.

The block shapes are constants of the generated module (``BLOCK_CONSTANTS``), chosen small on numba's
simulator, which runs every CUDA thread as a Python thread and takes milliseconds per ``cuda.syncthreads()``:
there few threads do much work each between barriers.
"""
from __future__ import annotations

from ..ir.types import is_float

#: module-level constants of every generated CUDA module; numba reads globals as compile-time constants, as
#: ``cuda.shared.array`` shapes must be
BLOCK_CONSTANTS = """# threads of a block reduction (a power of two)
BLOCK = 4 if config.ENABLE_CUDASIM else 128
# matrix products: TILE x TILE threads each compute MICRO x MICRO outputs of a SPAN x SPAN output tile, with the
# operands staged DEPTH deep in shared memory
TILE, MICRO, DEPTH = (2, 16, 64) if config.ENABLE_CUDASIM else (16, 4, 16)
SPAN = TILE * MICRO
# elements each thread of a split reduction combines before the block reduction
CHUNK = 64 if config.ENABLE_CUDASIM else 16"""

_SHARED_TYPES = {"f32": "float32", "f64": "float64"}


def shared_type(dtype: str) -> str:
    """The numba type name of a float dtype, for ``cuda.shared.array`` (imported by every generated module)."""
    if not is_float(dtype) or dtype not in _SHARED_TYPES:
        from ..errors import UnsupportedError

        raise UnsupportedError(f"CUDA tiles of dtype {dtype} are not supported (supported: {list(_SHARED_TYPES)})")
    return _SHARED_TYPES[dtype]


def cuda_kernel(name: str, params: str, work: str, body: str, fill: str = "") -> str:
    """A kernel ``name(params)`` that runs ``body`` (written indented by 4) for every ``i`` in ``[0, work)``.

    Each thread strides over the work by the grid's size, so the launcher may cap the grid: on a GPU at a few
    waves of blocks, on numba's simulator (one Python thread per CUDA thread) at a handful of threads.

    ``fill`` ("out = 0.0") initialises an output before the launch, for kernels that accumulate with atomics.
    """
    loop = f"    for i in range(cuda.grid(1), {work}, cuda.gridsize(1)):\n"
    return _header(name, params, work, fill) + loop + _indent(body)


def block_kernel(name: str, params: str, work: str, body: str, fill: str = "", block: str = "BLOCK",
                 setup: str = "") -> str:
    """A kernel launched with blocks of shape ``block`` in which a whole block runs ``body`` for each unit ``i``
    in ``[0, work)``, blocks striding over the units; ``tid`` is the thread's index in a 1-D block.

    ``setup`` (indented by 4) runs once per thread before the loop: shared arrays, thread coordinates. It
    defaults to a ``scratch`` array of BLOCK doubles for ``block_reduce``. Every thread of a block runs the same
    iterations, so the body may call ``cuda.syncthreads()``.
    """
    setup = setup or "    scratch = cuda.shared.array(BLOCK, float64)\n    tid = cuda.threadIdx.x"
    loop = f"    for i in range(cuda.blockIdx.x, {work}, cuda.gridDim.x):\n"
    return _header(name, params, work, fill, block) + setup + "\n" + loop + _indent(body)


def _header(name: str, params: str, work: str, fill: str, block: str = "") -> str:
    lines = [f"def {name}({params}):", f"    # work: {work}"]
    lines += [f"    # block: {block}"] if block else []
    lines += [f"    # fill: {fill}"] if fill else []
    return "\n".join(lines) + "\n"


def _indent(body: str) -> str:
    return "\n".join("    " + line if line.strip() else line for line in body.split("\n"))


def unravel(names: list[str], array: str, index: str = "i") -> str:
    """Lines that split the flat ``index`` into the coordinates ``names`` of ``array``'s shape (C order)."""
    lines = [f"    rest = {index}"]
    for axis in reversed(range(1, len(names))):
        lines.append(f"    {names[axis]} = rest % {array}.shape[{axis}]")
        lines.append(f"    rest //= {array}.shape[{axis}]")
    lines.append(f"    {names[0]} = rest")
    return "\n".join(lines) + "\n"


def block_reduce(value: str, combine: str) -> str:
    """Lines (indented by 4) after which every thread's ``value`` is the combination of all the block's
    ``value`` s: a tree over the ``scratch`` array of ``block_kernel``. ``combine`` formats two operands, e.g.
    ``"{} + {}"`` or ``"max({}, {})"``."""
    mine, other = "scratch[tid]", "scratch[tid + half]"
    return f"""    scratch[tid] = {value}
    cuda.syncthreads()
    half = BLOCK // 2
    while half > 0:
        if tid < half:
            {mine} = {combine.format(mine, other)}
        cuda.syncthreads()
        half //= 2
    {value} = scratch[0]
    cuda.syncthreads()  # every thread has read scratch[0]: the next reduction may overwrite it"""


def block_logsumexp(read: str, n: str, row_sum: bool = False) -> str:
    """Lines leaving ``m`` (the maximum) and ``lse`` (the log-sum-exp) of ``read`` over ``k`` in ``[0, n)`` in
    every thread of the block, which strides over ``k``; with ``row_sum``, also ``row``, the plain sum."""
    plain = "\n        row += " + read if row_sum else ""
    return f"""    m = -math.inf
    for k in range(tid, {n}, BLOCK):
        m = max(m, {read})
{block_reduce("m", "max({}, {})")}
    s = 0.0{chr(10) + "    row = 0.0" if row_sum else ""}
    for k in range(tid, {n}, BLOCK):
        s += math.exp({read} - m){plain}
{block_reduce("s", "{} + {}")}{chr(10) + block_reduce("row", "{} + {}") if row_sum else ""}
    lse = m + math.log(s)"""


def tiled_matmul(name: str, views: str, out_rank: int, dtype: str, transpose_a: bool, transpose_b: bool) -> str:
    """A kernel ``name(a, b, out)`` computing ``out3[t] = op(a3[t]) @ op(b3[t])`` for stacks of matrices
    (``views`` defines a3, b3 and out3 from the parameters; a stack of one matrix is reused by every ``t``).

    Each block computes one SPAN x SPAN tile of one output matrix: it stages a SPAN x DEPTH slab of A and a
    DEPTH x SPAN slab of B in shared memory, read along each operand's contiguous axis (so a transposed operand
    is read as coalesced as a plain one), and each thread accumulates MICRO x MICRO outputs in registers, at
    rows ``ty + TILE * u`` and columns ``tx + TILE * v``, so neighbouring threads write neighbouring columns.
    Outside the matrices the slabs hold zeros and threads skip the outputs.
    """
    kind = shared_type(dtype)
    inner = "a3.shape[1]" if transpose_a else "a3.shape[2]"
    setup = f"""    sa = cuda.shared.array((SPAN, DEPTH), {kind})  # A[r0 + row, kt + kk]
    sb = cuda.shared.array((DEPTH, SPAN), {kind})  # B[kt + kk, c0 + col]
    acc = cuda.local.array((MICRO, MICRO), float64)
    ty, tx = cuda.threadIdx.y, cuda.threadIdx.x
    tid = ty * TILE + tx
{views}    M, N, K = out3.shape[1], out3.shape[2], {inner}
    rows, cols = (M + SPAN - 1) // SPAN, (N + SPAN - 1) // SPAN"""
    body = f"""    t = i // (rows * cols)
    r0 = (i // cols) % rows * SPAN
    c0 = i % cols * SPAN
    ta, tb = t % a3.shape[0], t % b3.shape[0]
    # this thread's outputs inside the matrix: edge tiles (and small batches) skip the rest of the work
    rows_in = min(MICRO, (M - r0 - ty + TILE - 1) // TILE)
    cols_in = min(MICRO, (N - c0 - tx + TILE - 1) // TILE)
    for u in range(MICRO):
        for v in range(MICRO):
            acc[u, v] = 0.0
    for kt in range(0, K, DEPTH):
{_indent(_stage("sa", "a3[ta, {}, {}]", ("r0", "M"), transpose_a))}
{_indent(_stage("sb", "b3[tb, {}, {}]", ("c0", "N"), not transpose_b))}
        cuda.syncthreads()
        for kk in range(min(DEPTH, K - kt)):
            for u in range(rows_in):
                x = sa[ty + TILE * u, kk]
                for v in range(cols_in):
                    acc[u, v] += x * sb[kk, tx + TILE * v]
        cuda.syncthreads()  # the slabs are consumed: the next stage may overwrite them
    for u in range(rows_in):
        for v in range(cols_in):
            out3[t, r0 + ty + TILE * u, c0 + tx + TILE * v] = acc[u, v]"""
    m, n = f"out.shape[{out_rank - 2}]", f"out.shape[{out_rank - 1}]"
    work = f"out.size // max({m} * {n}, 1) * (({m} + SPAN - 1) // SPAN) * (({n} + SPAN - 1) // SPAN)"
    return block_kernel(name, "a, b, out", work, body, block="(TILE, TILE)", setup=setup)


def _stage(slab: str, read: str, start: tuple[str, str], k_first: bool) -> str:
    """Lines (indented by 4) in which the block's threads copy one slab of an operand into shared memory.

    The operand's stored element (p, q) is ``read.format("p", "q")``; its non-K axis starts at ``start[0]`` and
    has ``start[1]`` entries. ``k_first``: the operand is stored [K, other] (a transposed A, a plain B), else
    [other, K]. Consecutive threads take consecutive elements of the stored (contiguous) last axis.
    """
    (p0, p_size), (q0, q_size) = (("kt", "K"), start) if k_first else (start, ("kt", "K"))
    width = "SPAN" if k_first else "DEPTH"  # the slab's extent along the stored last axis
    same_order = (slab == "sa") != k_first  # sa is [row, kk], sb is [kk, col]
    index = f"[e // {width}, e % {width}]" if same_order else f"[e % {width}, e // {width}]"
    return f"""    for e in range(tid, SPAN * DEPTH, TILE * TILE):
        p = {p0} + e // {width}
        q = {q0} + e % {width}
        {slab}{index} = {read.format("p", "q")} if p < {p_size} and q < {q_size} else 0.0"""
