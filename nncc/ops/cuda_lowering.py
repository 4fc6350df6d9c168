"""Helpers for writing CUDA lowerings: grid-stride loops over units of work, block reductions, tiled products.

Two kinds of kernel (see the emitter's docstring for the launch protocol):

* ``cuda_kernel``: every thread strides over the units of work on its own (an element, a row, ...).
* ``block_kernel``: a block of a fixed shape takes one unit at a time (a row, a tile of a matrix product) and
  its threads cooperate through shared memory; blocks stride over the units.

``tiled_gemm``'s products read their operands through formulas, so the convolutions run as implicit GEMMs on
the same tiles as the matrix products (``tiled_matmul``).

The block shapes are constants of the generated module (``BLOCK_CONSTANTS``), chosen small on numba's
simulator, which runs every CUDA thread as a Python thread and takes milliseconds per ``cuda.syncthreads()``:
there few threads do much work each between barriers.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..ir.types import is_float

#: module-level constants of every generated CUDA module; numba reads globals as compile-time constants, as
#: ``cuda.shared.array`` shapes must be
BLOCK_CONSTANTS = """# threads of a block reduction (a power of two)
BLOCK = 4 if config.ENABLE_CUDASIM else 128
# matrix products: TILE x TILE threads each compute MICRO x MICRO outputs of a SPAN x SPAN output tile, with the
# operands staged DEPTH deep in shared memory
TILE, MICRO, DEPTH = (2, 16, 64) if config.ENABLE_CUDASIM else (16, 4, 16)
SPAN = TILE * MICRO
# split reductions of products (weight gradients): the entries of K that one block reduces, a multiple of DEPTH
SLICE = DEPTH * (2 if config.ENABLE_CUDASIM else 16)
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


@dataclass(frozen=True)
class Operand:
    """How a tiled product reads one operand: ``read`` is its element at reduction index ``k`` and row (A) or
    column (B) ``j``, after ``lines`` (statements indented by 4, run for every staged element, that may derive
    names from ``k``, ``j`` and ``t``, the product's index). A formula rather than an array, so that an operand
    can be gathered (im2col) as it is staged. ``along_k``: memory is contiguous along ``k`` (else along ``j``);
    consecutive threads stage consecutive elements along it, so their reads coalesce."""
    read: str
    along_k: bool
    lines: str = ""


def tiled_matmul(name: str, views: str, out_rank: int, dtype: str, transpose_a: bool, transpose_b: bool) -> str:
    """A kernel ``name(a, b, out)`` computing ``out3[t] = op(a3[t]) @ op(b3[t])`` for stacks of matrices
    (``views`` defines a3, b3 and out3 from the parameters; a stack of one matrix is reused by every ``t``):
    ``tiled_gemm`` on stored operands, each staged along its contiguous axis, so a transposed operand is read
    as coalesced as a plain one."""
    m, n = f"out.shape[{out_rank - 2}]", f"out.shape[{out_rank - 1}]"
    a = Operand("a3[t % a3.shape[0], k, j]", False) if transpose_a else Operand("a3[t % a3.shape[0], j, k]", True)
    b = Operand("b3[t % b3.shape[0], j, k]", True) if transpose_b else Operand("b3[t % b3.shape[0], k, j]", False)
    dims = (f"out.size // max({m} * {n}, 1)", m, n, "a3.shape[1]" if transpose_a else "a3.shape[2]")
    return tiled_gemm(name, "a, b, out", dtype, views, dims, a, b, "    out3[t, row, col] = value")


def tiled_gemm(name: str, params: str, dtype: str, setup: str, dims: tuple[str, str, str, str], a: Operand,
               b: Operand, store: str, split_k: bool = False, fill: str = "") -> str:
    """A kernel ``name(params)`` computing T products ``A[t] @ B[t]`` of an [M, K] by a [K, N] matrix whose
    elements are formulas (``Operand``), handing each output to ``store`` (lines indented by 4 that write
    ``value``, entry (``row``, ``col``) of product ``t``). ``dims`` are T, M, N, K: T, M and N (and K with
    ``split_k``) size the grid, so they are expressions over the parameters; the others may use names that
    ``setup`` (lines indented by 4, run once per thread) defines.

    Each block computes one SPAN x SPAN tile of one product: it stages DEPTH-deep slabs of A (SPAN x DEPTH) and
    B (DEPTH x SPAN) in shared memory, and each thread accumulates MICRO x MICRO outputs in registers, at rows
    ``ty + TILE * u`` and columns ``tx + TILE * v``, so neighbouring threads write neighbouring columns. Only
    the slabs' part inside the matrices is staged (the products read no further) and threads skip the
    outputs outside them.

    ``split_k``: for long reductions onto few outputs (weight gradients) each unit of work reduces one SLICE of
    K, so that the grid has enough blocks; ``store`` adds its partial tile atomically to an output that ``fill``
    zeroes first.

    The kernel's own names, which setup, operands and store must not assign: i, t, row0, col0, k0, k_end, kt,
    depth, e, kk, jj, k, j, u, v, av, row, col, value, acc, sa, sb, ty, tx, tid, rows_in, cols_in, m_in, n_in,
    M, N, K, rows, cols, reach, splits.
    """
    kind = shared_type(dtype)
    t, m, n, k = dims
    reach = ("    reach = SLICE  # of K, reduced by one unit of work\n    splits = (K + SLICE - 1) // SLICE"
             if split_k else "    reach, splits = K, 1  # a unit of work reduces all of K")
    prologue = f"""    sa = cuda.shared.array((SPAN, DEPTH), {kind})  # A[row0 + jj, kt + kk]
    sb = cuda.shared.array((DEPTH, SPAN), {kind})  # B[kt + kk, col0 + jj]
    acc = cuda.local.array((MICRO, MICRO), float64)
    ty, tx = cuda.threadIdx.y, cuda.threadIdx.x
    tid = ty * TILE + tx
{setup}    M, N, K = {m}, {n}, {k}
    rows, cols = (M + SPAN - 1) // SPAN, (N + SPAN - 1) // SPAN
{reach}"""
    body = f"""    t = i // (rows * cols * splits)
    row0 = i // (cols * splits) % rows * SPAN
    col0 = i // splits % cols * SPAN
    k0 = i % splits * reach
    k_end = min(K, k0 + reach)
    m_in, n_in = min(SPAN, M - row0), min(SPAN, N - col0)
    # this thread's outputs inside the matrix: edge tiles (and small batches) skip the rest of the work
    rows_in = min(MICRO, (m_in - ty + TILE - 1) // TILE)
    cols_in = min(MICRO, (n_in - tx + TILE - 1) // TILE)
    for u in range(MICRO):
        for v in range(MICRO):
            acc[u, v] = 0.0
    for kt in range(k0, k_end, DEPTH):
        depth = min(DEPTH, k_end - kt)
{_indent(_stage("sa", a, "row0", "m_in"))}
{_indent(_stage("sb", b, "col0", "n_in"))}
        cuda.syncthreads()
        for kk in range(depth):
            for u in range(rows_in):
                av = sa[ty + TILE * u, kk]
                for v in range(cols_in):
                    acc[u, v] += av * sb[kk, tx + TILE * v]
        cuda.syncthreads()  # the slabs are consumed: the next stage may overwrite them
    for u in range(rows_in):
        for v in range(cols_in):
            row, col, value = row0 + ty + TILE * u, col0 + tx + TILE * v, acc[u, v]
{_indent(_indent(store))}"""
    work = f"{t} * (({m} + SPAN - 1) // SPAN) * (({n} + SPAN - 1) // SPAN)"
    work += f" * (({k} + SLICE - 1) // SLICE)" if split_k else ""
    return block_kernel(name, params, work, body, fill=fill, block="(TILE, TILE)", setup=prologue)


def _stage(slab: str, operand: Operand, j0: str, width: str) -> str:
    """Lines (indented by 4) in which the block's threads copy the part inside the matrix of one slab of an
    operand into shared memory: ``depth`` entries along K from ``kt``, ``width`` along the other axis from
    ``j0``. Consecutive threads take consecutive elements along the operand's contiguous axis."""
    local = "kk, jj = e % depth, e // depth" if operand.along_k else f"kk, jj = e // {width}, e % {width}"
    index = "[jj, kk]" if slab == "sa" else "[kk, jj]"
    derive = _indent(operand.lines) + "\n" if operand.lines else ""
    return f"""    for e in range(tid, depth * {width}, TILE * TILE):
        {local}
        k, j = kt + kk, {j0} + jj
{derive}        {slab}{index} = {operand.read}"""
