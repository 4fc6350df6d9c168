"""How generated CPU kernels multiply matrices: numpy's own BLAS, called by symbol from the kernels.

numba's ``np.dot`` calls SciPy's BLAS (through ``scipy.linalg.cython_blas``). The two libraries can differ a
lot: on the 2-core machine of BENCHMARKS.md, SciPy's OpenBLAS 0.3.30 took 15-17 us for a 6x25x784 sgemm
(LeNet's first convolution, one sample) where numpy's OpenBLAS 0.3.31 took 6-7 us. So kernels call
``_gemm(a, b, out, beta)`` (``out = a @ b + beta * out``), which reaches numpy's ``cblas_?gemm`` directly.

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


@intrinsic
def _cblas_gemm(typingctx, trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc):
    """cblas_?gemm(RowMajor, trans_a, trans_b, m, n, k, 1, a, lda, b, ldb, beta, c, ldc) on the arrays' data."""
    if c.dtype not in (types.float32, types.float64):
        raise errors.TypingError(f"_gemm multiplies float32 or float64 matrices, got {c.dtype}")
    if a.dtype != c.dtype or b.dtype != c.dtype or beta != types.float64:
        raise errors.TypingError(f"_gemm: a, b and out share one dtype, beta is a float; got {a}, {b}, {c}, {beta}")
    letter = "s" if c.dtype == types.float32 else "d"

    def codegen(context, builder, sig, args):
        real = _ir.FloatType() if letter == "s" else _ir.DoubleType()
        i32 = _ir.IntType(32)
        module = builder.module
        flag = module.globals.get("nncc_cblas_ilp64") or _ir.GlobalVariable(module, i32, "nncc_cblas_ilp64")
        data = [context.make_array(sig.args[i])(context, builder, args[i]).data for i in (5, 7, 10)]
        scale = builder.fptrunc(args[9], real) if letter == "s" else args[9]
        ints = [args[i] for i in (2, 3, 4, 6, 8, 11)]  # m, n, k, lda, ldb, ldc (intp)

        def call(bits):
            index = _ir.IntType(bits)
            fnty = _ir.FunctionType(_ir.VoidType(), [i32, i32, i32, index, index, index, real, real.as_pointer(),
                                                     index, real.as_pointer(), index, real, real.as_pointer(), index])
            gemm = cgutils.get_or_insert_function(module, fnty, f"nncc_cblas_{letter}gemm_i{bits}")
            m_, n_, k_, lda_, ldb_, ldc_ = (builder.trunc(v, index) if bits == 32 else v for v in ints)
            builder.call(gemm, [i32(101), builder.trunc(args[0], i32), builder.trunc(args[1], i32), m_, n_, k_,
                                real(1.0), data[0], lda_, data[1], ldb_, scale, data[2], ldc_])

        with builder.if_else(builder.icmp_signed("!=", builder.load(flag), i32(0))) as (wide, narrow):
            with wide:
                call(64)
            with narrow:
                call(32)
        return context.get_dummy_value()

    return types.none(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc), codegen


@njit(cache=True)
def _layout(x):
    """How BLAS reads the 2-D array x: (_NO_TRANS or _TRANS, leading dimension), or (0, 0) when its rows and
    its columns both have gaps (a view BLAS cannot describe)."""
    rows, cols = x.shape
    s0, s1 = x.strides[0] // x.itemsize, x.strides[1] // x.itemsize
    if (s1 == 1 or cols == 1) and (rows == 1 or s0 >= cols):
        return _NO_TRANS, max(s0 if rows > 1 else cols, 1)
    if (s0 == 1 or rows == 1) and (cols == 1 or s1 >= rows):
        return _TRANS, max(s1 if cols > 1 else rows, 1)
    return 0, 0


@njit(cache=True)
def _gemm(a, b, out, beta):
    """out[...] = a @ b + beta * out for 2-D arrays of one float dtype (beta 0: out's old values are ignored);
    a and b may be transposed views; out's rows must be contiguous."""
    m, k = a.shape
    n = b.shape[1]
    if b.shape[0] != k or out.shape[0] != m or out.shape[1] != n:
        raise ValueError("_gemm: the shapes of a @ b and out do not match")
    if m == 0 or n == 0:
        return
    if k == 0:  # nothing to add up: BLAS would not touch out
        if beta == 0:
            out[...] = 0
        else:
            out *= beta
        return
    trans_out, ldc = _layout(out)
    if trans_out != _NO_TRANS:
        raise ValueError("_gemm: out's rows must be contiguous")
    trans_a, lda = _layout(a)
    if trans_a == 0:
        a = np.ascontiguousarray(a)
        trans_a, lda = _NO_TRANS, max(k, 1)
    trans_b, ldb = _layout(b)
    if trans_b == 0:
        b = np.ascontiguousarray(b)
        trans_b, ldb = _NO_TRANS, max(n, 1)
    _cblas_gemm(trans_a, trans_b, m, n, k, a, lda, b, ldb, float(beta), out, ldc)
'''
