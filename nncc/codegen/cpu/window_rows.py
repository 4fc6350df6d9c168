"""Max pooling over windows that tile the input (stride = kernel, no dilation), a row of windows at a time in
vector registers, for the generated CPU kernels of ops/pool.py.

``_max_row(x, at, pitch, out, out_at, count, kh, kw, width)`` writes out[out_at + q] = the maximum of window q
< ``count``, whose kh x kw taps are x[at + r * pitch + q * kw + s]; ``_max_row_bwd(x, at, pitch, g, g_at, d,
count, kh, kw, relu_mask, width)`` writes the gradient of the same windows into d, laid out like x: g[g_at + q]
at the window's first maximum (in row-major tap order), zero at its other taps; with ``relu_mask`` only where
that maximum is positive (simplify.py's fold of a ReLU's gradient).

Each step takes V windows (``width`` bytes of lanes): per kernel row, kw vector loads of the row's adjacent
taps, split into one vector per tap column by shuffles; maxima and the index of the first, with compares and
selects across lanes; for the gradient, the selects' results interleaved back and kw stores per kernel row.
The last step's lanes past ``count`` are masked off (llvm.masked.load / store), so no read or write leaves the
row. Written in LLVM IR because numba's loops cannot say it: a row of windows (14 in LeNet's first pool) is
shorter than a vector, so LLVM's loop vectoriser, which wants several vectors' worth of iterations, left the
windows scalar, about 4 ns each (LeNet's first pool's gradient: 5-7.5 us a sample; BENCHMARKS.md).

``WINDOW_ROWS`` is the text pasted into every generated CPU module, after fma_tile.py's ``FMA_TILE`` (it uses
``_splat``).
"""

WINDOW_ROWS = '''
# ---- max pooling a row of tiling windows at a time (see nncc/codegen/cpu/window_rows.py) ---------------------
@intrinsic
def _max_row(typingctx, x, at, pitch, out, out_at, count, kh, kw, width):
    """out[out_at + q] = max over r < kh, s < kw of x[at + r * pitch + q * kw + s] for q < count."""
    _window_row_types("_max_row", (kh, kw, width), (x, out))

    def codegen(context, builder, sig, args):
        rows = _WindowRows(context, builder, sig.args[0], *args[:3], args[5], *_literals(kh, kw, width))
        outs = context.make_array(sig.args[3])(context, builder, args[3])
        with rows.steps() as (q0, valid):
            maximum, _ = rows.first_maximum(q0, valid)
            rows.store(maximum, builder.gep(outs.data, [builder.add(args[4], q0)]), valid)
        return context.get_dummy_value()

    return types.none(x, at, pitch, out, out_at, count, kh, kw, width), codegen


@intrinsic
def _max_row_bwd(typingctx, x, at, pitch, g, g_at, d, count, kh, kw, relu_mask, width):
    """d[at + r * pitch + q * kw + s] = g[g_at + q] at the first maximum of window q < count (with relu_mask
    only where it is positive), else 0."""
    _window_row_types("_max_row_bwd", (kh, kw, relu_mask, width), (x, g, d))

    def codegen(context, builder, sig, args):
        n_kh, n_kw, masked, width_bytes = _literals(kh, kw, relu_mask, width)
        rows = _WindowRows(context, builder, sig.args[0], *args[:3], args[6], n_kh, n_kw, width_bytes)
        gs, ds = (context.make_array(sig.args[i])(context, builder, args[i]) for i in (3, 5))
        zero = _ir.Constant(rows.vector, None)
        with rows.steps() as (q0, valid):
            maximum, first = rows.first_maximum(q0, valid)
            grad = rows.load(builder.gep(gs.data, [builder.add(args[4], q0)]), valid)
            if masked:
                grad = builder.select(builder.fcmp_ordered(">", maximum, zero), grad, zero)
            for r in range(n_kh):
                taps = [builder.select(builder.icmp_signed("==", first, rows.index_vector(r * n_kw + s)), grad, zero)
                        for s in range(n_kw)]
                rows.store_taps(taps, rows.tap_row(ds.data, r, q0), valid)
        return context.get_dummy_value()

    return types.none(x, at, pitch, g, g_at, d, count, kh, kw, relu_mask, width), codegen


def _literals(*values):
    return [v.literal_value for v in values]


def _window_row_types(name, sizes, arrays):
    if not all(isinstance(n, types.IntegerLiteral) for n in sizes):
        raise errors.TypingError(f"{name} takes literal window sizes and vector width, got {sizes}")
    if not all(isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" for a in arrays) or \\
            len({a.dtype for a in arrays}) != 1 or arrays[0].dtype not in (types.float32, types.float64):
        raise errors.TypingError(f"{name} takes C-contiguous 1-D arrays of one float dtype, got {arrays}")


class _WindowRows:
    """The LLVM IR of a row of tiling windows: kh rows of x from ``at``, ``pitch`` apart, V windows a step."""

    def __init__(self, context, builder, x_type, x, at, pitch, count, kh, kw, width_bytes):
        self.builder, self.at, self.pitch, self.count, self.kh, self.kw = builder, at, pitch, count, kh, kw
        self.data = context.make_array(x_type)(context, builder, x).data
        self.real = context.get_data_type(x_type.dtype)
        self.size = context.get_abi_sizeof(self.real)
        self.vector = _ir.VectorType(self.real, width_bytes // self.size)
        self.lanes = self.vector.count

    def index_vector(self, value):
        return _ir.Constant(_ir.VectorType(_ir.IntType(64), self.lanes), [value] * self.lanes)

    def steps(self):
        """A loop over the steps: yields (the step's first window q0, the windows left from q0 on; lanes past
        them are masked)."""
        builder, index = self.builder, _ir.IntType(64)
        steps = builder.sdiv(builder.add(self.count, index(self.lanes - 1)), index(self.lanes))
        return _Steps(builder, steps, self.count, self.lanes)

    def mask(self, valid, part=0):
        """Lanes of vector ``part`` of a run of ``valid`` windows' entries: those before ``valid``."""
        lanes = _ir.Constant(_ir.VectorType(_ir.IntType(64), self.lanes),
                             [part * self.lanes + i for i in range(self.lanes)])
        return self.builder.icmp_signed("<", lanes, _splat(self.builder, valid, lanes.type))

    def load(self, pointer, valid, part=0):
        fn = _masked_access(self.builder.module, "load", self.vector)
        return self.builder.call(fn, [self._vector_pointer(pointer, part), _ir.IntType(32)(self.size),
                                      self.mask(valid, part), _ir.Constant(self.vector, None)])

    def store(self, value, pointer, valid, part=0):
        fn = _masked_access(self.builder.module, "store", self.vector)
        self.builder.call(fn, [value, self._vector_pointer(pointer, part), _ir.IntType(32)(self.size),
                               self.mask(valid, part)])

    def tap_row(self, data, r, q0):
        """A pointer to the first tap in kernel row r of window q0, in x's layout."""
        builder = self.builder
        offset = builder.add(builder.add(self.at, builder.mul(_ir.IntType(64)(r), self.pitch)),
                             builder.mul(q0, _ir.IntType(64)(self.kw)))
        return builder.gep(data, [offset])

    def first_maximum(self, q0, valid):
        """(maxima, index r * kw + s of the first tap holding each) of V windows from q0."""
        builder, maximum, first = self.builder, None, self.index_vector(0)
        for r in range(self.kh):
            for s, taps in enumerate(self.load_taps(self.tap_row(self.data, r, q0), valid)):
                if maximum is None:
                    maximum = taps
                    continue
                better = builder.fcmp_ordered(">", taps, maximum)
                maximum = builder.select(better, taps, maximum)
                first = builder.select(better, self.index_vector(r * self.kw + s), first)
        return maximum, first

    def load_taps(self, pointer, valid):
        """kw vectors: tap column s of V windows whose kw adjacent taps start at ``pointer``."""
        entries = self.builder.mul(valid, _ir.IntType(64)(self.kw))
        run = _concat(self.builder, [self.load(pointer, entries, u) for u in range(self.kw)])
        return [_shuffle(self.builder, run, [s + self.kw * i for i in range(self.lanes)]) for s in range(self.kw)]

    def store_taps(self, taps, pointer, valid):
        """The inverse of load_taps: kw vectors of tap columns interleaved back into adjacent taps."""
        run = _concat(self.builder, taps)
        entries = self.builder.mul(valid, _ir.IntType(64)(self.kw))
        for u in range(self.kw):
            part = [(e % self.kw) * self.lanes + e // self.kw for e in range(u * self.lanes, (u + 1) * self.lanes)]
            self.store(_shuffle(self.builder, run, part), pointer, entries, u)

    def _vector_pointer(self, pointer, part):
        return self.builder.bitcast(self.builder.gep(pointer, [_ir.IntType(64)(part * self.lanes)]),
                                    self.vector.as_pointer())


class _Steps:
    """``with _Steps(...) as (q0, valid)``: a loop over ``steps`` steps of ``lanes`` windows of ``count``."""

    def __init__(self, builder, steps, count, lanes):
        self.builder, self.steps, self.count, self.lanes = builder, steps, count, lanes

    def __enter__(self):
        self.loop = cgutils.for_range(self.builder, self.steps)
        index = self.loop.__enter__().index
        q0 = self.builder.mul(index, _ir.IntType(64)(self.lanes))
        return q0, self.builder.sub(self.count, q0)

    def __exit__(self, *exc):
        return self.loop.__exit__(*exc)


def _concat(builder, vectors):
    """One vector of the lanes of ``vectors`` (each of one length) in order."""
    run = vectors[0]
    for vector in vectors[1:]:
        n, m = run.type.count, vector.type.count
        if m < n:  # shufflevector takes operands of one type: pad the shorter
            vector = _shuffle(builder, vector, list(range(m)) + [0] * (n - m))
        run = builder.shuffle_vector(run, vector, _ir.Constant(_ir.VectorType(_ir.IntType(32), n + m),
                                                               list(range(n)) + [n + i for i in range(m)]))
    return run


def _shuffle(builder, vector, lanes):
    """The lanes ``lanes`` of ``vector``."""
    return builder.shuffle_vector(vector, _ir.Constant(vector.type, _ir.Undefined),
                                  _ir.Constant(_ir.VectorType(_ir.IntType(32), len(lanes)), lanes))


def _masked_access(module, op, vector):
    """llvm.masked.load or llvm.masked.store of ``vector``: only the lanes whose mask bit is set."""
    name = f"llvm.masked.{op}.v{vector.count}{'f32' if isinstance(vector.element, _ir.FloatType) else 'f64'}.p0"
    mask = _ir.VectorType(_ir.IntType(1), vector.count)
    pointer, align = vector.as_pointer(), _ir.IntType(32)
    fnty = _ir.FunctionType(vector, [pointer, align, mask, vector]) if op == "load" else \\
        _ir.FunctionType(_ir.VoidType(), [vector, pointer, align, mask])
    return module.globals.get(name) or _ir.Function(module, fnty, name)
'''
