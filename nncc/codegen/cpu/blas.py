"""How generated CPU kernels multiply matrices: numpy's own BLAS, called by symbol from the kernels.

numba's ``np.dot`` calls SciPy's BLAS (through ``scipy.linalg.cython_blas``). The two libraries can differ a
lot: on the 2-core machine of BENCHMARKS.md, SciPy's OpenBLAS 0.3.30 took 15-17 us for a 6x25x784 sgemm
(LeNet's first convolution, one sample) where numpy's OpenBLAS 0.3.31 took 6-7 us. So kernels call
``_gemm(a, b, out, beta)`` (``out = a @ b + beta * out``), which reaches numpy's ``cblas_?gemm`` directly.
``_gemm`` is an intrinsic: the caller's code picks each operand's BLAS layout from its strides and makes the
call, inline. As an @njit function it cost each kernel calling it about 0.3-0.9 s more cold compile (its
specialisations for each mix of array layouts, compiled in every worker, then linked into the caller and
optimised again): LeNet's fc weight gradient compiled in 0.11-0.13 s instead of 0.83-0.95 s (BENCHMARKS.md).

The generated module must stay cacheable and importable without nncc: when it is imported it looks the
functions up in numpy's BLAS with ctypes and registers their addresses with llvmlite under fixed names
(``nncc_cblas_sgemm_i32`` ...); compiled kernels, fresh or loaded from numba's cache, refer to those names,
which the JIT linker resolves, as it does numba's own C helpers. Whether that BLAS takes 32- or 64-bit integers
(pip wheels of numpy 2 ship a 64-bit "ILP64" OpenBLAS; conda and system builds are 32-bit) is read at run
time from a registered flag, so cached code is right for either.

``BLAS_CALLS`` is the text pasted into every generated CPU module, after ``BLAS_IMPORTS`` and native_calls.py's
``NATIVE_CALLS_IMPORTS`` (it uses their names, and ``np`` and ``njit``); it needs numpy, numba and llvmlite only.
"""

BLAS_IMPORTS = """import ctypes
import glob
import os

import llvmlite.binding as _llvm
from llvmlite import ir as _ir"""

BLAS_CALLS = '''
# ---- matrix products: numpy's BLAS, reached by symbol (see nncc/codegen/cpu/blas.py) ----------------------------
_CBLAS_NAMES = (  # (symbol of sgemm, with {} for the type letter; whether it takes 64-bit integers)
    ("scipy_cblas_{}gemm64_", 1), ("cblas_{}gemm64_", 1), ("cblas_{}gemm$NEWLAPACK$ILP64", 1), ("cblas_{}gemm", 0))


def _numpy_blas_libraries():
    """numpy's compiled core (its BLAS is among its dependencies) and the BLAS libraries its wheel bundles."""
    try:
        from numpy._core import _multiarray_umath as umath
    except ImportError:  # numpy 1.x
        from numpy.core import _multiarray_umath as umath
    root = os.path.dirname(os.path.dirname(np.__file__))
    return [umath.__file__] + sorted(glob.glob(os.path.join(root, "numpy.libs", "*blas*")) +
                                     glob.glob(os.path.join(os.path.dirname(np.__file__), ".dylibs", "*blas*")))


def _find_cblas():
    """(sgemm address, dgemm address, 1 if they take 64-bit integers) of numpy's BLAS."""
    paths = _numpy_blas_libraries()
    for path in paths:
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for name, ilp64 in _CBLAS_NAMES:
            try:
                found = [getattr(library, name.format(t)) for t in "sd"]
            except AttributeError:
                continue
            return tuple(ctypes.cast(f, ctypes.c_void_p).value for f in found) + (ilp64,)
    raise ImportError(f"nncc kernels need numpy's BLAS: none of {[n.format('s') for n, _ in _CBLAS_NAMES]} "
                      f"is in {paths}")


def _register_cblas():
    sgemm, dgemm, ilp64 = _find_cblas()
    for bits in (32, 64):  # both names resolve (the linker wants every declared symbol); the flag picks one
        _llvm.add_symbol(f"nncc_cblas_sgemm_i{bits}", sgemm)
        _llvm.add_symbol(f"nncc_cblas_dgemm_i{bits}", dgemm)
    global _CBLAS_ILP64
    _CBLAS_ILP64 = ctypes.c_int32(ilp64)  # a module global: its memory lives as long as the module
    _llvm.add_symbol("nncc_cblas_ilp64", ctypes.addressof(_CBLAS_ILP64))


_register_cblas()
_NO_TRANS, _TRANS = 111, 112  # CBLAS_TRANSPOSE


def _blas_layout(builder, shape, strides, itemsize):
    """How BLAS reads a 2-D array with these dims and byte strides: (whether it can, whether it reads the
    array transposed, leading dimension), as IR values. An array it cannot read has gaps between its rows
    and between its columns."""
    (rows, cols), (s0, s1) = shape, [builder.sdiv(s, itemsize) for s in strides]
    one = rows.type(1)

    def _max1(value):
        return builder.select(builder.icmp_signed(">", value, one), value, one)

    eq, ge = (lambda x, y: builder.icmp_signed("==", x, y)), (lambda x, y: builder.icmp_signed(">=", x, y))
    rows_ok = builder.and_(builder.or_(eq(s1, one), eq(cols, one)), builder.or_(eq(rows, one), ge(s0, cols)))
    cols_ok = builder.and_(builder.or_(eq(s0, one), eq(rows, one)), builder.or_(eq(cols, one), ge(s1, rows)))
    ld_rows = _max1(builder.select(builder.icmp_signed(">", rows, one), s0, cols))
    ld_cols = _max1(builder.select(builder.icmp_signed(">", cols, one), s1, rows))
    return builder.or_(rows_ok, cols_ok), builder.not_(rows_ok), builder.select(rows_ok, ld_rows, ld_cols)


def _refuse_if(context, builder, condition, message):
    with cgutils.if_unlikely(builder, condition):
        context.call_conv.return_user_exc(builder, ValueError, (message,))


def _scale(context, builder, ty, array, m, n, beta):
    """out[i, j] = beta * out[i, j] (0 where beta is 0: BLAS never reads out then): a product with no inner
    dimension, which BLAS implementations differ on."""
    zero = beta.type(0)
    with cgutils.for_range(builder, m) as i, cgutils.for_range(builder, n) as j:
        ptr = cgutils.get_item_pointer(context, builder, ty, array, [i.index, j.index])
        scaled = builder.fmul(builder.load(ptr), beta)
        builder.store(builder.select(builder.fcmp_ordered("==", beta, zero), zero, scaled), ptr)


@intrinsic
def _gemm(typingctx, a, b, out, beta):
    """out[...] = a @ b + beta * out for 2-D arrays of one float dtype (beta 0: out's old values are ignored),
    as one call of numpy's cblas_?gemm inlined into the caller (no function of its own to compile). a and b
    may be transposed views; out's rows must be contiguous; anything else raises ValueError."""
    arrays = (a, b, out)
    if not all(isinstance(x, types.Array) and x.ndim == 2 for x in arrays) or not isinstance(beta, types.Number):
        raise errors.TypingError(f"_gemm multiplies 2-D arrays and takes a number beta, got {a}, {b}, {out}, {beta}")
    if out.dtype not in (types.float32, types.float64) or a.dtype != out.dtype or b.dtype != out.dtype:
        raise errors.TypingError(f"_gemm multiplies float32 or float64 matrices of one dtype, got {a}, {b}, {out}")
    letter = "s" if out.dtype == types.float32 else "d"

    def codegen(context, builder, sig, args):
        real = _ir.FloatType() if letter == "s" else _ir.DoubleType()
        scale = context.cast(builder, args[3], sig.args[3], out.dtype)
        structs = [context.make_array(ty)(context, builder, value) for ty, value in zip(arrays, args[:3])]
        itemsize = context.get_constant(types.intp, context.get_abi_sizeof(real))
        shapes = [cgutils.unpack_tuple(builder, x.shape, 2) for x in structs]
        (m, k), (k_b, n), (m_out, n_out) = shapes
        mismatch = builder.or_(builder.icmp_signed("!=", k_b, k), builder.or_(
            builder.icmp_signed("!=", m_out, m), builder.icmp_signed("!=", n_out, n)))
        _refuse_if(context, builder, mismatch, "_gemm: the shapes of a @ b and out do not match")
        layouts = [_blas_layout(builder, shape, cgutils.unpack_tuple(builder, x.strides, 2), itemsize)
                   for shape, x in zip(shapes, structs)]
        (a_ok, trans_a, lda), (b_ok, trans_b, ldb), (out_ok, out_trans, ldc) = layouts
        zero = m.type(0)
        empty = builder.or_(builder.icmp_signed("==", m, zero), builder.icmp_signed("==", n, zero))
        with builder.if_then(builder.not_(empty)):  # an empty array's strides say nothing
            _refuse_if(context, builder, builder.or_(builder.not_(out_ok), out_trans),
                       "_gemm: out's rows must be contiguous")
            with builder.if_else(builder.icmp_signed("==", k, zero)) as (no_inner, product):
                with no_inner:
                    _scale(context, builder, out, structs[2], m, n, scale)
                with product:
                    _refuse_if(context, builder, builder.not_(builder.and_(a_ok, b_ok)),
                               "_gemm: a and b must each have contiguous rows or columns")
                    flags = [builder.select(t, _ir.IntType(32)(_TRANS), _ir.IntType(32)(_NO_TRANS))
                             for t in (trans_a, trans_b)]
                    _call_cblas(builder, letter, real, flags, (m, n, k, lda, ldb, ldc),
                                [x.data for x in structs], scale)
        return context.get_dummy_value()

    return types.none(a, b, out, beta), codegen


def _call_cblas(builder, letter, real, flags, ints, data, beta):
    """cblas_?gemm(RowMajor, flags..., m, n, k, 1, a, lda, b, ldb, beta, c, ldc), through the symbol of the
    integer width numpy's BLAS was built with (read at run time from the registered flag)."""
    i32, module = _ir.IntType(32), builder.module
    flag = module.globals.get("nncc_cblas_ilp64") or _ir.GlobalVariable(module, i32, "nncc_cblas_ilp64")

    def call(bits):
        index = _ir.IntType(bits)
        fnty = _ir.FunctionType(_ir.VoidType(), [i32, i32, i32, index, index, index, real, real.as_pointer(),
                                                 index, real.as_pointer(), index, real, real.as_pointer(), index])
        gemm = cgutils.get_or_insert_function(module, fnty, f"nncc_cblas_{letter}gemm_i{bits}")
        m, n, k, lda, ldb, ldc = (builder.trunc(v, index) if bits == 32 else v for v in ints)
        builder.call(gemm, [i32(101), flags[0], flags[1], m, n, k, real(1.0), data[0], lda, data[1], ldb, beta,
                            data[2], ldc])

    with builder.if_else(builder.icmp_signed("!=", builder.load(flag), i32(0))) as (wide, narrow):
        with wide:
            call(64)
        with narrow:
            call(32)
'''
