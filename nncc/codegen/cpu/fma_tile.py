"""Register-tiled multiply-adds that generated CPU kernels call for the products LLVM would not tile alone.

``_fma_tile(vec, vec_at, bcast, bcast_at, out, j0, group_step, rows, cols, group, width)``
computes, for i < out.shape[0] (at most ``rows``) and V the lanes of a ``width``-byte vector,

    out[i, j0:j0 + cols * V] = sum over t of b(t, i) * vec[vec_at[t] + j0 : vec_at[t] + j0 + cols * V]
    with b(t, i) = bcast[bcast_at[t] + (i // group) * group_step + i % group]

``rows``, ``cols``, ``group`` and ``width`` are literals: rows * cols vector accumulators held in registers
across the loop over t, each step ``cols`` vector loads of vec and rows * cols multiply-adds by broadcast
scalars. The sizes suit the compiling machine (``vector_registers``: with AVX-512's 32 registers, 64-byte
vectors of 16 float32; else 32-byte ones and 16 registers, as AVX2 has), so the accumulators fit. Two
convolution products take this form (ops/conv.py):

- a unit-stride convolution and its input gradient: t a tap, vec the zero-padded input planes flattened, j the
  output positions on "wide" rows, the broadcasts a row of weights (``group`` = rows: one run of adjacent
  scalars). No im2col matrix; on AVX-512 the loop is ``cols`` vmovups and rows * cols vfmadd231ps with embedded
  broadcasts. Several columns give a few output channels (LeNet's first conv has 6) enough independent
  accumulators to hide the multiply-add's latency;
- a weight gradient: t an output position, vec gy transposed (a row of output channels per position), the
  broadcasts the padded input planes at the position's first tap plus each tap's offset: ``group`` taps of
  a kernel row are adjacent, kernel rows ``group_step`` apart. Rows are taps, lanes output channels.

``_dot_tile(a, a_at, b, b_at, out, length, rows, cols, width)`` is the other orientation, for products whose
output is small and whose sum is long: out[i, c] = the dot product of a[a_at[i]:][:length] and
b[b_at[c]:][:length], rows * cols vector accumulators over the vectors of the sum, each summed across its lanes
at the end. A weight gradient with few output channels takes this form: i a channel (a its gy on wide rows), c
a tap (b the padded input planes at the tap's offset), the sum over output positions (LeNet's conv1: 6
channels, 25 taps, 896 wide positions).

Written in LLVM IR because numba's loops cannot say it: an accumulator array in a numba kernel lives in memory
(the heap), and one kept in ``out`` is loaded and stored on every step, since LLVM cannot prove that ``out``
does not alias ``vec``; a numba multiply-add loop over a row of ``out`` ran LeNet's conv2 2x slower than im2col
and BLAS, this tile 1.5-1.9x faster (one thread, a sample at a time; BENCHMARKS.md). The caller guarantees the
bounds: vec holds every vec_at[t] + j0 + cols * V, bcast every broadcast index of the tile's rows (all
``rows``, those past out's included), out's rows j0 + cols * V entries.

``vector_registers()`` says what the compiling machine has; ``FMA_TILE`` (both intrinsics) is the text pasted
into every generated CPU module, after native_calls.py's ``NATIVE_CALLS_IMPORTS`` and blas.py's ``BLAS_IMPORTS``
(it uses their names).
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
def _fma_tile(typingctx, vec, vec_at, bcast, bcast_at, out, j0, group_step, rows, cols, group, width):
    """out[i, j0 + c * V:...] = sum over t of bcast[bcast_at[t] + (i // group) * group_step + i % group] *
    vec[vec_at[t] + j0 + c * V:... + V] for i < out.shape[0] <= rows, c < cols, V = ``width`` bytes of the
    dtype; rows * cols vector accumulators in registers, no bounds checks."""
    sizes = (rows, cols, group, width)
    if not all(isinstance(n, types.IntegerLiteral) for n in sizes):
        raise errors.TypingError(f"_fma_tile takes a literal tile size and vector width, got {sizes}")
    arrays = (vec, vec_at, bcast, bcast_at, out)
    if not all(isinstance(a, types.Array) and a.layout == "C" for a in arrays) or \\
            [a.ndim for a in arrays] != [1, 1, 1, 1, 2] or vec.dtype != bcast.dtype or vec.dtype != out.dtype or \\
            vec.dtype not in (types.float32, types.float64) or vec_at.dtype != types.int64 or \\
            bcast_at.dtype != types.int64:
        raise errors.TypingError("_fma_tile takes C-contiguous vec[:], int64 vec_at[:], bcast[:], int64 bcast_at[:] "
                                 f"and out[:, :], vec, bcast and out of one float dtype, got {arrays}")
    n_rows, n_cols, n_group, width_bytes = (n.literal_value for n in sizes)

    def codegen(context, builder, sig, args):
        vecs, vat, bcs, bat, outs = (context.make_array(t)(context, builder, a) for t, a in zip(arrays, args[:5]))
        j0, step = args[5], args[6]
        real = context.get_data_type(vec.dtype)
        size = context.get_abi_sizeof(real)
        vector = _ir.VectorType(real, width_bytes // size)
        fma = _vector_fma(builder.module, vector)
        index = _ir.IntType(64)
        out_rows, _ = cgutils.unpack_tuple(builder, outs.shape, 2)
        out_row = cgutils.unpack_tuple(builder, outs.strides, 2)[0]

        def out_vector(i, c):  # a pointer to vector c of row i of the tile in out
            row = _row(builder, outs.data, builder.mul(index(i), out_row), real)
            return builder.bitcast(builder.gep(row, [builder.add(j0, index(c * vector.count))]), vector.as_pointer())

        acc = [[cgutils.alloca_once_value(builder, _ir.Constant(vector, None)) for _ in range(n_cols)]
               for _ in range(n_rows)]
        groups = [builder.mul(index(a), step) for a in range(-(-n_rows // n_group))]
        with cgutils.for_range(builder, cgutils.unpack_tuple(builder, vat.shape, 1)[0]) as loop:
            at = builder.add(builder.load(builder.gep(vat.data, [loop.index])), j0)
            vv = [builder.load(builder.bitcast(builder.gep(vecs.data, [builder.add(at, index(c * vector.count))]),
                                               vector.as_pointer()), align=size) for c in range(n_cols)]
            base = builder.load(builder.gep(bat.data, [loop.index]))
            for i in range(n_rows):
                first = builder.gep(bcs.data, [builder.add(base, groups[i // n_group])])
                splat = _splat(builder, builder.load(builder.gep(first, [index(i % n_group)])), vector)
                for c in range(n_cols):
                    builder.store(builder.call(fma, [splat, vv[c], builder.load(acc[i][c])]), acc[i][c])
        for i in range(n_rows):
            with builder.if_then(builder.icmp_signed("<", index(i), out_rows)):
                for c in range(n_cols):
                    builder.store(builder.load(acc[i][c]), out_vector(i, c), align=size)
        return context.get_dummy_value()

    return types.none(*arrays, j0, group_step, *sizes), codegen


@intrinsic
def _dot_tile(typingctx, a, a_at, b, b_at, out, length, rows, cols, width):
    """out[i, c] = sum over j < ``length`` of a[a_at[i] + j] * b[b_at[c] + j] for i < out.shape[0] <= rows,
    c < out.shape[1] <= cols: rows * cols vector accumulators in registers over the vectors of j, each then
    summed across its lanes. ``length`` is a multiple of the lanes; every a_at[i < rows] and b_at[c < cols]
    is read. No bounds checks."""
    sizes = (rows, cols, width)
    if not all(isinstance(n, types.IntegerLiteral) for n in sizes):
        raise errors.TypingError(f"_dot_tile takes a literal tile size and vector width, got {sizes}")
    arrays = (a, a_at, b, b_at, out)
    if not all(isinstance(x, types.Array) for x in arrays) or [x.ndim for x in arrays] != [1, 1, 1, 1, 2] or \
            any(x.layout != "C" for x in arrays[:4]) or a.dtype != b.dtype or a.dtype != out.dtype or \
            a.dtype not in (types.float32, types.float64) or a_at.dtype != types.int64 or b_at.dtype != types.int64:
        raise errors.TypingError("_dot_tile takes C-contiguous a[:], int64 a_at[:], b[:], int64 b_at[:] and any "
                                 f"out[:, :], a, b and out of one float dtype, got {arrays}")
    n_rows, n_cols, width_bytes = (n.literal_value for n in sizes)

    def codegen(context, builder, sig, args):
        avs, aat, bvs, bat, outs = (context.make_array(t)(context, builder, x) for t, x in zip(arrays, args[:5]))
        real = context.get_data_type(a.dtype)
        size = context.get_abi_sizeof(real)
        vector = _ir.VectorType(real, width_bytes // size)
        fma, index = _vector_fma(builder.module, vector), _ir.IntType(64)
        firsts = [[builder.gep(data, [builder.load(builder.gep(at, [index(i)]))]) for i in range(count)]
                  for data, at, count in ((avs.data, aat.data, n_rows), (bvs.data, bat.data, n_cols))]
        acc = [[cgutils.alloca_once_value(builder, _ir.Constant(vector, None)) for _ in range(n_cols)]
               for _ in range(n_rows)]
        steps = builder.udiv(args[5], index(vector.count))
        with cgutils.for_range(builder, steps) as loop:
            j = builder.mul(loop.index, index(vector.count))
            va, vb = ([builder.load(builder.bitcast(builder.gep(first, [j]), vector.as_pointer()), align=size)
                       for first in row] for row in firsts)
            for i in range(n_rows):
                for c in range(n_cols):
                    builder.store(builder.call(fma, [va[i], vb[c], builder.load(acc[i][c])]), acc[i][c])
        out_rows, out_cols = cgutils.unpack_tuple(builder, outs.shape, 2)
        row_stride, col_stride = cgutils.unpack_tuple(builder, outs.strides, 2)
        add_lanes = _vector_sum(builder.module, vector)
        for i in range(n_rows):
            for c in range(n_cols):
                inside = builder.and_(builder.icmp_signed("<", index(i), out_rows),
                                      builder.icmp_signed("<", index(c), out_cols))
                with builder.if_then(inside):
                    total = builder.call(add_lanes, [_ir.Constant(real, -0.0), builder.load(acc[i][c])],
                                         fastmath=("reassoc",))  # a tree of adds, not lane after lane
                    at = builder.add(builder.mul(index(i), row_stride), builder.mul(index(c), col_stride))
                    builder.store(total, _row(builder, outs.data, at, real))
        return context.get_dummy_value()

    return types.none(*arrays, length, *sizes), codegen


def _vector_sum(module, vector):
    """llvm.vector.reduce.fadd on ``vector``: a start value plus the sum of the lanes."""
    name = f"llvm.vector.reduce.fadd.v{vector.count}{'f32' if isinstance(vector.element, _ir.FloatType) else 'f64'}"
    return module.globals.get(name) or _ir.Function(module, _ir.FunctionType(vector.element, [vector.element, vector]),
                                                    name)


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
