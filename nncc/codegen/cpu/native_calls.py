"""How the generated driver calls its kernels: through their machine-code addresses, not as numba calls.

When one ``@njit`` function calls another, numba links the callee's LLVM module into the caller's and runs
LLVM's optimiser and code generator over the whole again: a driver calling 20 kernels compiled each kernel a
second time (9.5 s of the LeNet training step's 23 s cold compile, BENCHMARKS.md). Instead, each kernel is
compiled on its own for the exact argument types the driver passes (a *slot*: kernel and signature), the
Python wrapper ``run`` hands the driver the slots' entry addresses as an int64 array, and the driver calls
each through ``_call(kernel, addresses, (args...))``, an indirect call in numba's own calling convention (so
a kernel's exception still reaches the caller). Kernels that split the batch across threads reach their chunk
function the same way (``_launch``, ``ops/cpu_chunks.py``); their own few lines, which launch the chunks, are
inlined into the driver. The driver stays cacheable: the addresses are an
argument, not constants baked into its code.

``NATIVE_CALLS`` is the text of that machinery as it is pasted into every generated CPU module (which must
import with numpy and numba alone); the emitter fills ``_SLOTS`` in after its kernels.
"""
from typing import Union

from ...ir.types import TensorType
from .float_mode import FLUSH_DENORMALS

#: the flags of the functions reached only through their addresses: numba builds no Python or C wrapper for
#: them (a tenth to a half of a small kernel's compile)
NATIVE_ONLY = ", no_cpython_wrapper=True, no_cfunc_wrapper=True"

_NUMBA_DTYPES = {"f32": "float32", "f64": "float64", "i64": "int64", "i32": "int32", "bool": "boolean"}

NATIVE_CALLS = '''
# ---- native calls: the driver reaches each kernel through its entry address (see nncc/codegen/cpu/native_calls.py)
def _plain(ty):
    """Types up to what does not change how a value is passed: array flags (read-only, alignment), literals."""
    return types.Array(ty.dtype, ty.ndim, ty.layout) if isinstance(ty, types.Array) else types.unliteral(ty)


def _address(kernel, signature):
    """Compile (or load from numba's cache) ``kernel`` for ``signature``; the address of its native entry."""
    argtypes = sigutils.normalize_signature(signature)[0]
    kernel.compile(argtypes)  # types, not the string: numba's cache is keyed by what compile() is given
    compiled = kernel.overloads[argtypes]
    if compiled.signature.return_type != types.none:  # _call passes no room for a result
        raise TypeError(f"kernel {kernel.__name__} returns {compiled.signature.return_type}; kernels return nothing")
    return compiled.library.get_pointer_to_function(compiled.fndesc.llvm_func_name)


def _slot_of(function, given):
    """The index in ``_SLOTS`` of ``function``'s slot for the argument types ``given`` (a TypingError if none)."""
    slots = [(i, tuple(sigutils.normalize_signature(s)[0])) for i, (k, s) in enumerate(_SLOTS) if k is function]
    slot = next((i for i, expected in slots if expected == given), None)
    if slot is None:
        raise errors.TypingError(f"no slot of {function.__name__} takes {given}; its slots take "
                                 f"{[expected for _, expected in slots]}")
    return slot


def _invoke(context, builder, address, given, values):
    """Call the native function at ``address`` (an int64 value) with ``values`` of types ``given``, in numba's
    calling convention: an exception it raises is raised by the caller."""
    fnty = context.call_conv.get_function_type(types.none, given)
    callee = builder.inttoptr(address, fnty.as_pointer())
    status, _ = context.call_conv.call_function(builder, callee, types.none, given, values)
    with cgutils.if_unlikely(builder, status.is_error):
        context.call_conv.return_status_propagate(builder, status)


@intrinsic
def _call(typingctx, kernel, addresses, args):
    """Call ``kernel`` with the tuple ``args`` through ``addresses[slot]``, its slot of ``_SLOTS`` for these
    argument types (resolved when the caller compiles)."""
    if not isinstance(kernel, types.Dispatcher):
        raise errors.TypingError(f"_call calls a kernel (an @njit function), got {kernel}")
    given = tuple(map(_plain, args.types))
    slot = _slot_of(kernel.dispatcher, given)

    def codegen(context, builder, sig, llargs):
        table = context.make_array(addresses)(context, builder, llargs[1])
        address = builder.load(cgutils.gep(builder, table.data, slot))
        _invoke(context, builder, address, given, cgutils.unpack_tuple(builder, llargs[2], len(args)))
        return context.get_dummy_value()

    return types.none(kernel, addresses, args), codegen

'''

NATIVE_CALLS_IMPORTS = """from numba import errors, types
from numba.core import cgutils, sigutils
from numba.extending import intrinsic"""

_WRAPPER = '''
_addresses = None


def run(*args):
    """The graph's entry point: the driver, given the kernels' addresses (computed on the first call){mode_doc}."""
    global _addresses
    if _addresses is None:
        _addresses = np.array([_address(kernel, signature) for kernel, signature in _SLOTS], np.int64)
{call}
'''

_FLUSHED_CALL = """    saved = _set_float_mode({bits}, -1)
    try:
        return _run(*args, _addresses)
    finally:
        _set_float_mode(saved, 0)"""


def wrapper(flush_denormals: bool) -> str:
    """The text of the module's entry point ``run``; with ``flush_denormals``, the driver runs with denormals
    flushed to zero (float_mode.py)."""
    if not flush_denormals:
        return _WRAPPER.format(mode_doc="", call="    return _run(*args, _addresses)")
    return _WRAPPER.format(mode_doc=", denormals flushed to zero", call=_FLUSHED_CALL.format(bits=hex(FLUSH_DENORMALS)))


def array_type(dtype: str, rank: int) -> str:
    """A C-contiguous array type in numba's signature syntax."""
    if rank == 0:
        return f"Array({_NUMBA_DTYPES[dtype]}, 0, 'C')"
    return f"{_NUMBA_DTYPES[dtype]}[{', '.join([':'] * (rank - 1) + ['::1'])}]"


def numba_type(t: Union[TensorType, int]) -> str:
    """The numba type, in signature syntax, of a C-contiguous array of type ``t`` (every array the driver
    passes is one: inputs are made contiguous, buffers are fresh or arena slices, views are reshapes), or of
    an integer argument."""
    return "int64" if isinstance(t, int) else array_type(t.dtype, t.rank)

