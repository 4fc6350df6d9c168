"""Arrays in generated CPU code made without numba's library code: ``_view``, ``_empty`` and ``_zeros``.

Each is an intrinsic lowered in place. numba's own ``np.empty``, ``np.zeros``, ``np.arange`` and ``reshape`` are
library functions (``@overload``s) that numba compiles once per process and argument types, 0.02-0.3 s each,
before the first function calling them, and then links into and optimises again with each caller. LeNet's
training step compiled about fifteen of them, some 2 CPU-seconds of its cold compile, paid again by every
process of a parallel compile (parallel_compile.py) for the kernels it takes.

- ``_view(base, start, shape)``: ``base.reshape(-1)[start:start + prod(shape)].reshape(shape)``, a C-contiguous
  array sharing a C-contiguous ``base``'s memory (the driver's arena, a buffer passed flat, a reshape). Not
  bounds-checked: the driver checks the arena's size once, at its start.
- ``_empty(shape, dtype)`` and ``_zeros(shape, dtype)``: ``np.empty`` and ``np.zeros`` for a C-contiguous
  array; ``shape`` an integer or a tuple of them, ``dtype`` an array's ``.dtype`` or a numpy scalar type. No
  check that the size overflows: generated code asks for scratch sized by the graph's shapes.

``ARRAYS`` is the text pasted into every generated CPU module, after native_calls.py's
``NATIVE_CALLS_IMPORTS`` and ``ARRAYS_IMPORTS`` (it uses their names).
"""

ARRAYS_IMPORTS = """from numba.core.imputils import impl_ret_borrowed
from numba.np.arrayobj import populate_array"""

ARRAYS = '''
# ---- arrays without numba's library code (see nncc/codegen/cpu/arrays.py) -------------------------------------
@intrinsic
def _view(typingctx, base, start, shape):
    """``base.reshape(-1)[start:start + prod(shape)].reshape(shape)``, sharing a C-contiguous base's memory;
    no bounds checks."""
    if not isinstance(base, types.Array) or base.layout != "C":
        raise errors.TypingError(f"_view needs a C-contiguous array, got {base}")
    result = types.Array(base.dtype, len(shape), "C", readonly=not base.mutable)

    def codegen(context, builder, sig, args):
        source = context.make_array(base)(context, builder, args[0])
        view = _c_array(context, builder, result, cgutils.unpack_tuple(builder, args[2], len(shape)),
                        builder.gep(source.data, [args[1]]), source.meminfo)
        return impl_ret_borrowed(context, builder, result, view._getvalue())

    return result(base, start, shape), codegen


@intrinsic
def _empty(typingctx, shape, dtype):
    """``np.empty(shape, dtype)``, C-contiguous."""
    return _allocation(shape, dtype, zeroed=False)


@intrinsic
def _zeros(typingctx, shape, dtype):
    """``np.zeros(shape, dtype)``, C-contiguous."""
    return _allocation(shape, dtype, zeroed=True)


def _allocation(shape, dtype, zeroed):
    """The typing and lowering of ``_empty`` and ``_zeros``: one NRT allocation, memset when ``zeroed``."""
    item = dtype.dtype if isinstance(dtype, types.DType) else \\
        dtype.instance_type if isinstance(dtype, types.NumberClass) else None
    dims = (shape,) if isinstance(shape, types.Integer) else \\
        tuple(shape) if isinstance(shape, types.BaseTuple) else None
    if item is None or dims is None or not all(isinstance(d, types.Integer) for d in dims):
        raise errors.TypingError("_empty and _zeros take an integer or a tuple of integers and a dtype, "
                                 f"got {shape} and {dtype}")
    result = types.Array(item, len(dims), "C")

    def codegen(context, builder, sig, args):
        given = [args[0]] if isinstance(shape, types.Integer) else cgutils.unpack_tuple(builder, args[0], len(dims))
        sizes = [context.cast(builder, d, t, types.intp) for d, t in zip(given, dims)]
        nbytes = context.get_constant(types.intp, context.get_abi_sizeof(context.get_data_type(item)))
        for size in sizes:
            nbytes = builder.mul(nbytes, size)
        align = context.get_constant(types.uint32, context.get_preferred_array_alignment(item))
        meminfo = context.nrt.meminfo_alloc_aligned(builder, nbytes, align)
        data = context.nrt.meminfo_data(builder, meminfo)
        if zeroed:
            cgutils.memset(builder, data, nbytes, 0)
        array = _c_array(context, builder, result, sizes, data, meminfo)
        return array._getvalue()  # a new reference: the caller owns the allocation

    return result(shape, dtype), codegen


def _c_array(context, builder, array_type, sizes, data, meminfo):
    """A C-contiguous array of ``array_type`` with dimensions ``sizes`` over ``data``, owned by ``meminfo``."""
    real = context.get_data_type(array_type.dtype)
    itemsize = context.get_constant(types.intp, context.get_abi_sizeof(real))
    strides, stride = [], itemsize
    for size in reversed(sizes):
        strides.insert(0, stride)
        stride = builder.mul(stride, size)
    array = context.make_array(array_type)(context, builder)
    populate_array(array, data=builder.bitcast(data, real.as_pointer()), shape=sizes, strides=strides,
                   itemsize=itemsize, meminfo=meminfo)
    return array
'''
