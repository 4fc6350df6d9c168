"""Denormal floats flushed to zero while a generated CPU module runs.

Arithmetic that produces or reads denormal floats (magnitudes below 1.2e-38 in float32) is far slower on x86
CPUs than on normal ones, and training drifts into them: the momentum buffers of weights whose gradients have
died decay through the denormal range, step after step. LeNet's batch-1 training step went from 0.15 to 1.9 ms
that way after a few hundred steps (BENCHMARKS.md, 2026-12-04), and held 0.15 ms with denormals flushed.

With ``flush_denormals=True`` (``nncc.compile``'s default) the module's ``run`` sets the FTZ (results flush to
zero) and DAZ (denormal inputs read as zero) bits of MXCSR, the SSE control register of the calling thread,
for the duration of the call and restores the caller's register afterwards, when a kernel raises too. Chunks
of a kernel running on numba's threads (``ops/cpu_chunks.py``) take the mode of the thread that launched
them, whether it flushes or not, and each thread that ran one flushes no more after it (NO_FLUSH): numba
starts its threads when they are first needed, inside a flushing call, and they would keep that mode for the
process's other parallel numba code (the launching thread takes its own mode back once its chunks are done;
a chunk that raises leaves its thread flushing). The loops that ``parallel=True`` hands numba's parfors run
in their threads' own mode. Values differ from IEEE arithmetic only where they would have been denormal.
PyTorch keeps denormals unless told otherwise (``torch.set_flush_denormal(True)``); TensorFlow flushes them.
On processors other than x86-64 the mode is left as it is (``_X86`` is decided where the module is imported,
which may not be where it was generated).
"""

#: MXCSR's FTZ (bit 15) and DAZ (bit 6)
FLUSH_DENORMALS = 0x8040
#: a mask keeping every other bit of MXCSR
NO_FLUSH = ~FLUSH_DENORMALS & 0xFFFFFFFF

FLOAT_MODE_IMPORTS = "import platform\n\nfrom llvmlite import ir as llvm_ir"

#: pasted into every generated CPU module, before the native calls (``_launch`` reads and writes the mode with
#: ``_read_float_mode`` and ``_write_float_mode``)
FLOAT_MODE = '''
# ---- the floating-point mode of a call: denormals flushed to zero (see nncc/codegen/cpu/float_mode.py) -----------
_X86 = platform.machine().lower() in ("x86_64", "amd64")


def _mxcsr(builder, operation, slot):
    """``llvm.x86.sse.stmxcsr`` or ``ldmxcsr``: MXCSR stored to, or loaded from, the i32 at ``slot``."""
    pointer = llvm_ir.IntType(8).as_pointer()
    function = cgutils.get_or_insert_function(
        builder.module, llvm_ir.FunctionType(llvm_ir.VoidType(), [pointer]), f"llvm.x86.sse.{operation}")
    builder.call(function, [builder.bitcast(slot, pointer)])


def _read_float_mode(builder):
    """The calling thread's MXCSR as an int64 (0 where there is none)."""
    if not _X86:
        return llvm_ir.Constant(llvm_ir.IntType(64), 0)
    slot = cgutils.alloca_once(builder, llvm_ir.IntType(32))
    _mxcsr(builder, "stmxcsr", slot)
    return builder.zext(builder.load(slot), llvm_ir.IntType(64))


def _write_float_mode(builder, mode):
    """The calling thread's MXCSR := ``mode`` (an int64; nothing where there is no MXCSR)."""
    if _X86:
        slot = cgutils.alloca_once(builder, llvm_ir.IntType(32))
        builder.store(builder.trunc(mode, llvm_ir.IntType(32)), slot)
        _mxcsr(builder, "ldmxcsr", slot)


@intrinsic
def _float_mode(typingctx, set_bits, keep_bits):
    """MXCSR := (MXCSR & keep_bits) | set_bits on the calling thread; returns its previous value."""
    def codegen(context, builder, sig, args):
        previous = _read_float_mode(builder)
        _write_float_mode(builder, builder.or_(builder.and_(previous, args[1]), args[0]))
        return previous

    return types.int64(types.int64, types.int64), codegen


@njit(cache=True)
def _set_float_mode(set_bits, keep_bits):
    return _float_mode(set_bits, keep_bits)
'''
