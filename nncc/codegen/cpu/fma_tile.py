"""A register-tiled multiply-add that generated CPU kernels call for the products LLVM would not tile alone.

``_fma_tile(x, offsets, wt, out, j0, rows, cols, width)`` computes, for k < out.shape[0] (at most ``rows``),

    out[k, j0:j0 + cols * V] = sum over t of wt[t, k] * x[offsets[t] + j0 : offsets[t] + j0 + cols * V]

with V the lanes of a ``width``-byte vector and ``rows``, ``cols``, ``width`` literals: rows * cols vector
accumulators held in registers across the loop over t, each step ``cols`` vector loads of x and rows * cols
multiply-adds by broadcast weights. The sizes suit the compiling machine (``vector_registers``: with AVX-512's
32 registers, 64-byte vectors of 16 float32; else 32-byte ones and 16 registers, as AVX2 has), so the
accumulators fit. A unit-stride convolution is that sum with t its taps, x its zero-padded input planes
flattened and j the output positions on "wide" rows (ops/conv.py): no im2col matrix is built, and on AVX-512
the loop is ``cols`` vmovups and rows * cols vfmadd231ps with embedded broadcasts. Several columns give a few
output channels (LeNet's first conv has 6) enough independent accumulators to hide the multiply-add's latency.

Written in LLVM IR because numba's loops cannot say it: an accumulator array in a numba kernel lives in memory
(the heap), and one kept in ``out`` is loaded and stored on every step, since LLVM cannot prove that ``out``
does not alias ``x``; a numba multiply-add loop over a row of ``out`` ran LeNet's conv2 2x slower than im2col
and BLAS, this tile 1.5-1.9x faster (one thread, a sample at a time; BENCHMARKS.md). The caller guarantees the
bounds: x holds every offsets[t] + j0 + cols * V, out's rows j0 + cols * V entries.

``vector_registers()`` says what the compiling machine has; ``FMA_TILE`` is the text pasted into every generated
CPU module, after native_calls.py's ``NATIVE_CALLS_IMPORTS`` and blas.py's ``BLAS_IMPORTS`` (it uses their names).
"""
from functools import cache

import llvmlite.binding as llvm


@cache
def vector_registers() -> tuple[int, int]:
    """(bytes in a vector register, number of them) on this machine, for the tiles' sizes: AVX-512's 64 and 32
    where LLVM reports avx512f, else AVX2's (and NEON's count of) 32-byte vectors and 16 registers. Generated
    sources carry the sizes, so the content-addressed cache keeps a module per kind of machine."""
    features = llvm.get_host_cpu_features()
    return (64, 32) if features.get("avx512f", False) else (32, 16)


FMA_TILE = '''
# ---- register-tiled multiply-adds (see nncc/codegen/cpu/fma_tile.py) ------------------------------------------
@intrinsic
def _fma_tile(typingctx, x, offsets, wt, out, j0, rows, cols, width):
    """out[k, j0:j0 + cols * V] = sum over t of wt[t, k] * x[offsets[t] + j0:... + cols * V] for
    k < out.shape[0] <= rows, V = ``width`` bytes of x's dtype; rows * cols vector accumulators in registers,
    no bounds checks."""
    if not all(isinstance(n, types.IntegerLiteral) for n in (rows, cols, width)):
        raise errors.TypingError(f"_fma_tile takes a literal tile size and vector width, got {rows}, {cols}, {width}")
    arrays = (x, offsets, wt, out)
    if not all(isinstance(a, types.Array) and a.layout == "C" for a in arrays) or \\
            [a.ndim for a in arrays] != [1, 1, 2, 2] or x.dtype != wt.dtype or x.dtype != out.dtype or \\
            x.dtype not in (types.float32, types.float64) or offsets.dtype != types.int64:
        raise errors.TypingError("_fma_tile takes C-contiguous x[:], int64 offsets[:], wt[:, :] and out[:, :], x, wt "
                                 f"and out of one float dtype, got {arrays}")
    shape, width_bytes = (rows.literal_value, cols.literal_value), width.literal_value

    def codegen(context, builder, sig, args):
        xs, offs, ws, outs = (context.make_array(t)(context, builder, a) for t, a in zip(arrays, args[:4]))
        real = context.get_data_type(x.dtype)
        size = context.get_abi_sizeof(real)
        vector = _ir.VectorType(real, width_bytes // size)
        fma = _vector_fma(builder.module, vector)
        index = _ir.IntType(64)
        acc = [[cgutils.alloca_once_value(builder, _ir.Constant(vector, None)) for _ in range(shape[1])]
               for _ in range(shape[0])]
        w_row = cgutils.unpack_tuple(builder, ws.strides, 2)[0]
        with cgutils.for_range(builder, cgutils.unpack_tuple(builder, offs.shape, 1)[0]) as loop:
            t = loop.index
            at = builder.add(builder.load(builder.gep(offs.data, [t])), args[4])
            xv = [builder.load(builder.bitcast(builder.gep(xs.data, [builder.add(at, index(c * vector.count))]),
                                               vector.as_pointer()), align=size) for c in range(shape[1])]
            weights = _row(builder, ws.data, builder.mul(t, w_row), real)
            for k in range(shape[0]):
                splat = _splat(builder, builder.load(builder.gep(weights, [index(k)])), vector)
                for c in range(shape[1]):
                    builder.store(builder.call(fma, [splat, xv[c], builder.load(acc[k][c])]), acc[k][c])
        out_rows, _ = cgutils.unpack_tuple(builder, outs.shape, 2)
        out_row = cgutils.unpack_tuple(builder, outs.strides, 2)[0]
        for k in range(shape[0]):
            with builder.if_then(builder.icmp_signed("<", index(k), out_rows)):
                row = _row(builder, outs.data, builder.mul(index(k), out_row), real)
                for c in range(shape[1]):
                    at = builder.add(args[4], index(c * vector.count))
                    target = builder.bitcast(builder.gep(row, [at]), vector.as_pointer())
                    builder.store(builder.load(acc[k][c]), target, align=size)
        return context.get_dummy_value()

    return types.none(x, offsets, wt, out, j0, rows, cols, width), codegen


def _vector_fma(module, vector):
    """llvm.fma on ``vector``: one fused multiply-add per lane."""
    name = f"llvm.fma.v{vector.count}{'f32' if isinstance(vector.element, _ir.FloatType) else 'f64'}"
    return module.globals.get(name) or _ir.Function(module, _ir.FunctionType(vector, [vector] * 3), name)


def _splat(builder, value, vector):
    """``value`` in every lane of ``vector`` (on AVX-512, an embedded broadcast of the multiply-add's load)."""
    lanes = _ir.Constant(_ir.VectorType(_ir.IntType(32), vector.count), [0] * vector.count)
    first = builder.insert_element(_ir.Constant(vector, _ir.Undefined), value, _ir.IntType(32)(0))
    return builder.shuffle_vector(first, _ir.Constant(vector, _ir.Undefined), lanes)


def _row(builder, data, byte_offset, real):
    """A pointer to the element ``byte_offset`` bytes after ``data``."""
    return builder.bitcast(builder.gep(builder.bitcast(data, _ir.IntType(8).as_pointer()), [byte_offset]),
                           real.as_pointer())
'''
