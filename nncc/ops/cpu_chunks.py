"""CPU kernels that split the batch into chunks and run the chunks on numba's threads.

A chunked kernel is two generated functions, both written here around the op's per-chunk code.
``KERNEL_chunk(t, T, args)`` runs samples [lo, hi) = [t*N//T, (t+1)*N//T) of the batch with scratch of its
own; ``args`` points to its arguments, packed in a tuple. ``KERNEL(<params>, addresses)`` (serial) packs them
and runs its T chunks with ``_launch``: through ``_chunks``, the one parallel function of the module, whose
``prange`` body is an indirect call (``_call_at``) of the chunk whose address it is given. The driver calls
``KERNEL`` by name and numba inlines it there (codegen/cpu/emitter.py): compiled as functions of their own,
LeNet's twelve such kernels took 2.5 s of its step's cold compile work, a total of 16.4 s (13.3 s inlined).

That shape is what keeps the threads cheap to compile. numba compiles a parallel loop's body as a function of
its own and links in and optimises again everything that body calls: with the chunk's code inline,
``parallel=True`` cost LeNet's conv weight gradient 6 s more compile; a prange of one indirect call in each
kernel still cost 0.8-1.4 s per kernel; one launcher for all of a module's kernels costs about 0.5 s, once
(BENCHMARKS.md). The launcher is compiled with ``PRANGE_ONLY``: nothing else of it becomes a parallel loop.

``partial`` (the chunk tuple's last item) is a [T, size] array of the output's dtype, zeroed, one row per
chunk, for kernels that reduce over the batch (a weight gradient): each chunk adds into its row and the kernel
adds the rows up. Kernels whose chunks write disjoint samples have none (it was an allocation per launch).

A matrix product's "batch" is the rows of its output (ops/matmul.py), split only when the product is big
enough (``worth_threads``).

Chunks call BLAS on per-sample products, with BLAS kept to one thread (codegen/cpu/blas_threads.py): numba's
threads split the batch instead.
"""
from __future__ import annotations

from typing import Optional

import numba

from ..codegen.cpu.float_mode import NO_FLUSH
from ..codegen.cpu.native_calls import NATIVE_ONLY

#: numba's parallel options for the launcher: only prange loops run in parallel
PRANGE_ONLY = ('{"prange": True, "numpy": False, "reduction": False, "setitem": False, "inplace_binop": False, '
               '"comprehension": False, "stencil": False, "fusion": False}')
#: the loop of the launcher: one chunk per thread
CHUNK_LOOP = "for t in prange(T):  # one chunk per thread"

#: pasted into generated CPU modules with chunked kernels, after native_calls.py's NATIVE_CALLS (it uses
#: ``_SLOTS``, ``_plain`` and ``_invoke``, and float_mode.py's ``_read_float_mode``, ``_write_float_mode`` and
#: ``_float_mode``)
LAUNCH_CALLS = f'''
# ---- chunked kernels: their chunks run on numba's threads (see nncc/ops/cpu_chunks.py) --------------------------
@intrinsic
def _launch(typingctx, chunk, addresses, T, args):
    """Run ``chunk(t, T, packed args)`` for t in [0, T): on this thread when T is 1 (or ``_chunks`` has no
    slot: one thread), else on numba's threads through ``_chunks``, in this thread's floating-point mode. The
    args are packed in a tuple on this function's stack, which lives until the chunks are done."""
    packed = types.Tuple(tuple(map(_plain, args.types)))
    given = (types.int64, types.int64, types.CPointer(packed))
    chunk_slot = _slot_of(chunk.dispatcher, given)
    launcher = [i for i, (k, _) in enumerate(_SLOTS) if k is _chunks]

    def codegen(context, builder, sig, llargs):
        table = context.make_array(addresses)(context, builder, llargs[1]).data
        values = cgutils.unpack_tuple(builder, llargs[3], len(args))
        slot = cgutils.alloca_once(builder, context.get_value_type(packed))
        builder.store(context.make_tuple(builder, packed, values), slot)
        address = builder.load(cgutils.gep(builder, table, chunk_slot))
        count = llargs[2]
        one = count.type(1)

        def on_this_thread():
            _invoke(context, builder, address, given, (count.type(0), one, slot))

        if not launcher:
            on_this_thread()
            return context.get_dummy_value()
        with builder.if_else(builder.icmp_signed("==", count, one)) as (alone, threaded):
            with alone:
                on_this_thread()
            with threaded:
                pointer, mode = builder.ptrtoint(slot, count.type), _read_float_mode(builder)
                _invoke(context, builder, builder.load(cgutils.gep(builder, table, launcher[0])),
                        (types.int64,) * 4, (count, address, pointer, mode))
                _write_float_mode(builder, mode)  # this thread may have run a chunk: its mode back
        return context.get_dummy_value()

    return types.none(chunk, addresses, T, args), codegen


@intrinsic
def _call_at(typingctx, address, args):
    """Call the function at ``address`` (int64) with the tuple ``args``, numba's calling convention (a chunk,
    whose packed-args pointer is passed as the int64 it is: the same register either way)."""
    given = tuple(map(_plain, args.types))

    def codegen(context, builder, sig, llargs):
        _invoke(context, builder, llargs[0], given, cgutils.unpack_tuple(builder, llargs[1], len(args)))
        return context.get_dummy_value()

    return types.none(address, args), codegen


@njit(cache=True, error_model="numpy", parallel={PRANGE_ONLY}{NATIVE_ONLY})
def _chunks(T, chunk, args, mode):
    """Chunks 0 .. T-1 of a chunked kernel on numba's threads: ``chunk`` is the address of its chunk function
    and ``args`` that of its packed arguments; each runs in floating-point ``mode``, its launcher's MXCSR,
    and leaves its thread flushing no denormals (codegen/cpu/float_mode.py)."""
    {CHUNK_LOOP}
        _float_mode(mode, 0)
        _call_at(chunk, (np.int64(t), T, args))
        _float_mode(0, {NO_FLUSH:#x})
'''


def launcher_slot() -> Optional[tuple[str, str]]:
    """The slot of the module's launcher ``_chunks`` (name, signature), or None with one thread of numba's:
    every chunked kernel then runs its single chunk on the calling thread and nothing launches."""
    return ("_chunks", "void(int64, int64, int64, int64)") if numba.config.NUMBA_NUM_THREADS > 1 else None


#: how a chunked kernel allocates its chunks' rows of partial sums (it has them when it reduces over the batch)
_PARTIAL_ROWS = "partial = _zeros((T, "


def chunked_kernel(name: str, params: str, batch: str, chunk: str, reduced: tuple[str, ...] = (),
                   worth_threads: str = "") -> str:
    """The chunk function ``name_chunk(t, T, args)``, whose body ``chunk`` runs samples [lo, hi) of the
    ``batch`` (an expression of the params) on the unpacked ``params`` (and ``partial``), and the kernel
    ``name(params, addresses)`` running it on one chunk per thread of numba's. The thread count is fixed when
    the source is generated (numba's get_num_threads() in a kernel would make it uncacheable), so it is part of
    the cache key. ``reduced``: the params (outputs of one dtype) whose elements a partial row holds, one
    after the other; the kernel sums the chunks' rows into them (without ``reduced`` there is no ``partial``).
    ``worth_threads``: a condition on the params under which the work is split at all (launching chunks costs
    microseconds: a small product runs as one chunk on the calling thread)."""
    outputs = "".join(f"_view({o}, 0, ({o}.size,)), " for o in reduced)
    rows = f"""    {_PARTIAL_ROWS}{" + ".join(f"{o}.size" for o in reduced)}), {reduced[0]}.dtype)  # one per chunk
""" if reduced else ""
    finish = f"""    at = 0
    for flat in ({outputs}):
        for i in range(flat.size):
            total = partial[0, at + i]
            for t in range(1, T):
                total += partial[t, at + i]
            flat[i] = total
        at += flat.size
""" if reduced else ""
    packed = f"{params}, partial" if reduced else f"{params},"
    threads = f"max(1, min({batch}, {numba.config.NUMBA_NUM_THREADS}))"
    if worth_threads:
        threads += f" if {worth_threads} else 1"
    return f"""def {name}_chunk(t, T, args):
    {packed} = args[0]
    lo, hi = t * {batch} // T, (t + 1) * {batch} // T  # this chunk's samples
{chunk}


def {name}({params}, addresses):
    T = {threads}  # chunks of the batch
{rows}    _launch({name}_chunk, addresses, T, ({packed}))
{finish}"""


def has_partial_rows(source: str) -> bool:
    """Whether the chunked kernel in ``source`` (chunked_kernel's) passes its chunks a [T, size] array of partial
    sums, after their arguments."""
    return _PARTIAL_ROWS in source
