"""CPU kernels that split the batch into chunks and run the chunks on numba's threads.

A chunked kernel is two generated functions, both written here around the op's per-chunk code. ``KERNEL_chunk(t,
T, <params>, partial)`` runs samples [lo, hi) = [t*N//T, (t+1)*N//T) of the batch with scratch of its own;
``KERNEL(<params>, addresses)`` runs its T chunks in a ``prange`` loop, each through ``_call``
(codegen/cpu/native_calls.py), an indirect call. That indirection is what makes the threads affordable: numba
compiles a parallel loop's body as a function of its own and links in and optimises again everything that body
calls, so with the chunk's code inline ``parallel=True`` cost LeNet's conv weight gradient 6 s more compile; with
one indirect call in the body it costs 0.3 s (BENCHMARKS.md). The kernel is compiled with ``PRANGE_ONLY``: its
allocations and array expressions stay serial code, not parallel loops compiled one by one.

``partial`` is a [T, size] array of the output's dtype, zeroed, one row per chunk, for kernels that reduce over
the batch (a weight gradient): each chunk adds into its row and the kernel adds the rows up. Kernels whose
chunks write disjoint samples get a [T, 0] array.

Chunks call BLAS on per-sample products, with BLAS kept to one thread (codegen/cpu/blas_threads.py): numba's
threads split the batch instead.
"""
from __future__ import annotations

import numba

#: numba's parallel options for the kernel: only prange loops run in parallel
PRANGE_ONLY = ('{"prange": True, "numpy": False, "reduction": False, "setitem": False, "inplace_binop": False, '
               '"comprehension": False, "stencil": False, "fusion": False}')
#: the loop header the emitter recognises a chunked kernel by (it compiles it with PRANGE_ONLY)
CHUNK_LOOP = "for t in prange(T):  # one chunk per thread"


def chunked_kernel(name: str, params: str, batch: str, chunk: str, reduced: bool = False,
                   output: str = "out") -> str:
    """The chunk function ``name_chunk(t, T, params, partial)``, whose body ``chunk`` runs samples [lo, hi) of
    the ``batch`` (an expression of the params), and the kernel ``name(params, addresses)`` running it on one
    chunk per thread of numba's. The thread count is fixed when the source is generated (numba's
    get_num_threads() in a kernel would make it uncacheable), so it is part of the cache key. ``reduced``: the
    chunks' partial rows are summed into ``output``, the param holding the kernel's (first) output."""
    threads = numba.config.NUMBA_NUM_THREADS
    call = f"_call({name}_chunk, addresses, ({{t}}, T, {params}, partial))"
    run = f"    {call.format(t='0')}\n"
    if threads > 1:  # one chunk runs on the calling thread, without the parallel launch
        run = (f"    if T == 1:\n    {run}    else:\n        {CHUNK_LOOP}\n"
               f"            {call.format(t='np.int64(t)')}\n")
    finish = f"""    flat = {output}.reshape(-1)
    for i in range(flat.size):
        total = partial[0, i]
        for t in range(1, T):
            total += partial[t, i]
        flat[i] = total
""" if reduced else ""
    return f"""def {name}_chunk(t, T, {params}, partial):
    lo, hi = t * {batch} // T, (t + 1) * {batch} // T  # this chunk's samples
{chunk}


def {name}({params}, addresses):
    T = max(1, min({batch}, {threads}))  # chunks of the batch
    partial = np.zeros((T, {output + ".size" if reduced else 0}), {output}.dtype)
{run}{finish}"""
