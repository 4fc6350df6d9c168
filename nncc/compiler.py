"""``nncc.compile``: model (Module, spec file or ONNX file) -> passes -> generated kernels -> CompiledModule."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from . import debug
from .errors import NNCCError, ShapeError, UnsupportedError
from .frontend.nn.module import Module
from .frontend.tracer import TracedModel, trace_module
from .ir.graph import Graph
from .ir.types import TensorType
from .codegen import get_target
from .codegen.cpu.blas_threads import one_blas_thread_for_kernels
from .codegen.targets import on_device as is_cuda_array
from .passes.autodiff import differentiate
from .passes.fusion import format_plan, plan_kernels
from .passes.manager import PassManager
from .passes.memory import plan_memory
from .passes.optimizer import apply_optimizer, state_input_name
from .passes.schedule import schedule
from .passes.shape_inference import infer_shapes
from .passes.simplify import (eliminate_common_subexpressions, eliminate_dead_code, fold_constants,
                              simplify_algebra)

SIMPLIFY = [
    ("shape-inference", infer_shapes),
    ("fold-constants", fold_constants),
    ("simplify", simplify_algebra),
    ("cse", eliminate_common_subexpressions),
    ("dce", eliminate_dead_code),
    ("schedule", schedule),
]


class Program:
    """One graph through the passes and the codegen: a callable driver plus its IR dumps and source."""

    def __init__(self, graph: Graph, target: str = "cpu", fuse: bool = True, pre_stages: Optional[dict] = None,
                 parallel: bool = False, flush_denormals: bool = True):
        start = time.perf_counter()
        pm = PassManager(SIMPLIFY)
        self.graph = pm.run(graph)
        self.dumps: dict[str, str] = dict(pre_stages or {})
        self.dumps.update(pm.dumps)
        self.timings = dict(pm.timings)
        self.target = get_target(target)
        self.kernels = plan_kernels(self.graph, fuse, self.target.epilogues)
        self.dumps["fused"] = format_plan(self.graph, self.kernels)
        self.memory = plan_memory(self.graph, self.kernels) if fuse else None
        self.timings["passes"] = time.perf_counter() - start
        start = time.perf_counter()
        self.emitted = self.target.emit(self.graph, self.kernels, parallel, self.memory, flush_denormals)
        self.timings["codegen"] = time.perf_counter() - start
        if self.emitted.threaded:  # BLAS's threads and numba's would compete for the cores (blas_threads.py)
            one_blas_thread_for_kernels()
        self.input_names = [v.name for v in self.graph.inputs]
        start = time.perf_counter()  # imports the module
        self.fn = self.emitted.load()
        self.timings["load"] = time.perf_counter() - start
        self.constants = [self.target.to_device(c) for c in self.emitted.constants]
        debug.report_program(self.graph.name, self)
        self._arenas: dict[int, np.ndarray] = {}  # batch size -> preallocated arena
        self.compile_seconds: dict[str, float] = {}  # of each work item its first call compiled (cold, CPU)

    def __call__(self, feeds: dict[str, np.ndarray]) -> tuple:
        args = [feeds[n] for n in self.input_names] + list(self.constants)
        if self.emitted.memory is not None:
            args.append(self._arena(args))
        if "jit" in self.timings:
            return self.fn(*args)
        # the first call compiles (or loads from numba's cache) the kernels: a program never called costs nothing
        start = time.perf_counter()
        if self.emitted.before_first_call is not None:
            self.compile_seconds = self.emitted.before_first_call(sys.modules[self.fn.__module__])
        outs = self.fn(*args)
        self.timings["jit"] = time.perf_counter() - start
        debug.report_first_call(self.graph.name, self)
        return outs

    def _arena(self, args: list[np.ndarray]) -> np.ndarray:
        source = self.emitted.batch_source
        batch = args[source[0]].shape[source[1]] if source else 0
        if batch not in self._arenas:
            memory = self.emitted.memory
            self._arenas[batch] = self.target.empty(memory.arena_elements(batch), memory.dtype_np)
        return self._arenas[batch]


class CompiledModule:
    """A compiled model: call it on numpy arrays; with a loss and optimizer, ``train_step`` and ``grad``.

    Example::

        fwd = nncc.compile(LeNet(), input_shape=(None, 1, 28, 28))
        logits = fwd(images)               # any batch size, one compilation
        print(fwd.ir("fused"), fwd.source())
    """

    def __init__(self, model: Module, input_types: list[TensorType], loss: Optional[Module] = None,
                 optimizer: Any = None, target: str = "cpu", fuse: bool = True, name: Optional[str] = None,
                 parallel: bool = False, flush_denormals: bool = True):
        self.model = model
        self.input_types = input_types
        self.loss = loss
        self.optimizer = optimizer
        self.target = target
        self.fuse = fuse
        self.parallel = parallel
        self.flush_denormals = flush_denormals
        self.device = get_target(target)  # fails here, clearly, when the target cannot run
        self.name = name or type(model).__name__.lower()
        self.params = {n: self.device.to_device(np.array(p)) for n, p in model.named_parameters()}
        self.buffers = {n: self.device.to_device(np.array(b)) for n, b in model.named_buffers()}
        self.opt_state: dict[str, np.ndarray] = {}
        self.steps = 0  # optimizer steps taken
        self.lr = float(getattr(optimizer, "lr", 0.0))
        self.seed = 0  # base seed of dropout masks
        self._programs: dict[str, Program] = {}
        self._traced: dict[str, TracedModel] = {}
        if optimizer is not None:
            self.opt_state = {state_input_name(n, s): self.device.to_device(np.zeros(p.shape, p.dtype))
                              for n, p in self.params.items() for s in optimizer.state_slots}
        if loss is None and optimizer is not None:
            raise NNCCError("an optimizer needs a loss: nncc.compile(model, loss=nn.CrossEntropyLoss(), ...)")
        self.program("forward")  # compile eagerly so errors surface at compile time

    # ---- programs ----------------------------------------------------------------------------------------------
    def program(self, kind: str) -> Program:
        """The compiled program ``forward``, ``evaluate`` (eval loss), ``grad`` or ``train``, built on first use."""
        if kind not in self._programs:
            self._programs[kind] = self._build(kind)
        return self._programs[kind]

    def _target_type(self) -> TensorType:
        batch = self.input_types[0].shape[0]
        if getattr(self.loss, "target_dtype", "f32") == "i64":
            return TensorType("i64", (batch,))
        out = self._traced_forward().graph.outputs[0].type
        return out

    def _traced_forward(self) -> TracedModel:
        if "forward" not in self._traced:
            self._traced["forward"] = trace_module(self.model, self.input_types, training=False, name=self.name)
        return self._traced["forward"]

    def _build(self, kind: str) -> Program:
        if kind == "forward":
            traced = self._traced_forward()
            return Program(traced.graph.copy(), self.target, self.fuse, parallel=self.parallel,
                           flush_denormals=self.flush_denormals)
        if self.loss is None:
            raise NNCCError(f"'{kind}' needs a loss: nncc.compile(model, loss=nn.CrossEntropyLoss(), ...)")
        training = kind != "evaluate"
        traced = trace_module(self.model, self.input_types, training=training, loss=self.loss,
                              target_type=self._target_type(), name=self.name)
        self._traced[kind] = traced
        graph, stages = traced.graph, {}
        if kind in ("grad", "train"):
            graph = differentiate(graph, traced.params)
            stages["autodiff"] = str(graph)
        if kind == "train":
            if self.optimizer is None:
                raise NNCCError("train_step needs an optimizer: nncc.compile(..., optimizer=optim.SGD(lr=0.01))")
            graph = apply_optimizer(graph, traced.params, len(graph.outputs) - len(traced.params), self.optimizer)
            stages["optimizer"] = str(graph)
        return Program(graph, self.target, self.fuse, stages, self.parallel, self.flush_denormals)

    # ---- running ------------------------------------------------------------------------------------------------
    def _feeds(self, xs: Sequence, target=None) -> dict[str, np.ndarray]:
        types = list(self.input_types)
        names = ["x"] if len(types) == 1 else [f"x{i}" for i in range(len(types))]
        if len(xs) != len(types):
            raise ShapeError(f"{self.name} takes {len(types)} input(s), got {len(xs)}")
        arrays = list(xs)
        if target is not None:
            types.append(self._target_type())
            names.append("target")
            arrays.append(target)
        feeds = dict(check_inputs(arrays, types, names))
        if target is not None and types[-1].dtype == "i64" and isinstance(feeds["target"], np.ndarray):
            self._check_labels(feeds["target"])
        feeds = {k: self.device.to_device(v) for k, v in feeds.items()}
        feeds.update(self.params)
        feeds.update(self.buffers)
        return feeds

    def _check_labels(self, target: np.ndarray) -> None:
        classes = self._traced_forward().graph.outputs[0].type.shape[-1]
        if target.size and (target.min() < 0 or target.max() >= classes):
            bad = target[(target < 0) | (target >= classes)][0]
            raise ShapeError(f"input 'target': class label {bad} is out of range [0, {classes}) for "
                             f"{type(self.loss).__name__}")

    def __call__(self, *xs: np.ndarray, **named: np.ndarray):
        """Run the forward program. Models with ``input_names`` (imported ONNX models) also take inputs by name."""
        if named:
            xs = xs + self._named_inputs(len(xs), named)
        outs = self.program("forward")(self._feeds(xs))
        n = self._traced_forward().n_outputs
        host = [self.device.to_host(o) for o in outs[:n]]
        return host[0] if n == 1 else tuple(host)

    def _named_inputs(self, given: int, named: dict) -> tuple:
        names = list(getattr(self.model, "input_names", []))
        unknown = sorted(set(named) - set(names[given:]))
        missing = [n for n in names[given:] if n not in named]
        if unknown or missing:
            raise ShapeError(f"{self.name}: inputs by name must complete {names} after {given} positional ones; "
                             f"unknown {unknown}, missing {missing}")
        return tuple(named[n] for n in names[given:])

    def evaluate(self, x: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
        """Loss and outputs in eval mode (no dropout, BatchNorm running statistics), no update."""
        outs = self.program("evaluate")(self._feeds([x], target))
        return float(self.device.to_host(outs[0])), self.device.to_host(outs[1])

    def _training_feeds(self, x, target, kind: str) -> dict[str, np.ndarray]:
        feeds = self._feeds([x], target)
        if self._traced.get(kind) is None:
            self.program(kind)
        if self._traced[kind].has_seed:
            feeds["dropout_seed"] = self.device.to_device(np.array(self.seed * 1_000_003 + self.steps, np.int64))
        return feeds

    def _store_buffers(self, kind: str, outs: tuple) -> None:
        traced = self._traced[kind]
        for name, value in zip(traced.buffer_updates, outs[2:2 + len(traced.buffer_updates)]):
            self.buffers[name] = value

    def grad(self, x: np.ndarray, target: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        """Loss and the gradient of every parameter (``{name: array}``), without updating parameters."""
        program = self.program("grad")
        outs = program(self._training_feeds(x, target, "grad"))
        self._store_buffers("grad", outs)
        traced = self._traced["grad"]
        grads = [self.device.to_host(g) for g in outs[len(outs) - len(traced.params):]]
        return float(self.device.to_host(outs[0])), dict(zip(traced.params, grads))

    def train_step(self, x: np.ndarray, target: np.ndarray) -> float:
        """One compiled step: forward, loss, backward and optimizer update. Returns the loss."""
        program = self.program("train")
        feeds = self._training_feeds(x, target, "train")
        feeds["lr"] = self.device.to_device(np.array(self.lr, np.float64))
        feeds["step"] = self.device.to_device(np.array(self.steps + 1, np.float64))
        feeds.update(self.opt_state)
        outs = program(feeds)
        self.steps += 1
        self._store_buffers("train", outs)
        self._last_output = outs[1]
        traced = self._traced["train"]
        slots = self.optimizer.state_slots
        at = 2 + len(traced.buffer_updates)
        for name in traced.params:
            self.params[name] = outs[at]
            for i, slot in enumerate(slots):
                self.opt_state[state_input_name(name, slot)] = outs[at + 1 + i]
            at += 1 + len(slots)
        return float(self.device.to_host(outs[0]))

    @property
    def last_output(self) -> np.ndarray:
        """The model's output for the batch of the last ``train_step`` (e.g. logits, for training accuracy)."""
        return self.device.to_host(self._last_output)

    # ---- state and introspection ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters and buffers under PyTorch's names (copies)."""
        return {n: np.array(self.device.to_host(v)) for n, v in {**self.params, **self.buffers}.items()}

    def load_state_dict(self, state: dict[str, np.ndarray], strict: bool = True) -> None:
        """Load parameters and buffers; missing, extra or mis-shaped tensors raise ShapeError naming them."""
        self.model.load_state_dict(state, strict=strict)
        for n, p in self.model.named_parameters():
            self.params[n] = self.device.to_device(np.array(p))
        for n, b in self.model.named_buffers():
            self.buffers[n] = self.device.to_device(np.array(b))

    def optimizer_state_dict(self) -> dict[str, np.ndarray]:
        return {**{k: np.array(self.device.to_host(v)) for k, v in self.opt_state.items()},
                "step": np.array(self.steps)}

    def load_optimizer_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for k, v in self.opt_state.items():
            if k not in state:
                raise ShapeError(f"optimizer state is missing {k!r}")
            if state[k].shape != v.shape:
                raise ShapeError(f"optimizer state {k!r} has shape {state[k].shape}, expected {v.shape}")
            self.opt_state[k] = self.device.to_device(np.array(state[k], dtype=v.dtype))
        self.steps = int(state["step"])

    def stages(self, kind: str = "forward") -> list[str]:
        return list(self.program(kind).dumps)

    def ir(self, stage: str = "final", kind: Optional[str] = None) -> str:
        """The IR text after ``stage`` (see ``stages()``); "final" is the graph the codegen saw.

        ``kind`` picks the program; by default the training step when a stage needs it ("autodiff").
        """
        if kind is None:
            kind = "train" if stage in ("autodiff", "optimizer") and self.optimizer else \
                "grad" if stage == "autodiff" else "forward"
        program = self.program(kind)
        if stage == "final":
            return str(program.graph)
        if stage not in program.dumps:
            raise KeyError(f"no IR stage {stage!r}; stages are {list(program.dumps)} and 'final'")
        return program.dumps[stage]

    def source(self, kind: str = "forward") -> str:
        """The generated numba source of a program."""
        return self.program(kind).emitted.source


def check_inputs(arrays: Sequence, types: Sequence[TensorType], names: Sequence[str]):
    """Validate inputs against the graph's types; yield (name, C-contiguous array). Errors show expected vs got."""
    sizes: dict[str, tuple[int, str]] = {}
    for arr, t, name in zip(arrays, types, names):
        on_device = is_cuda_array(arr)  # CUDA arrays are checked without a copy
        arr = arr if on_device else np.asarray(arr)
        if arr.dtype != t.np_dtype:
            raise ShapeError(f"input {name!r}: expected dtype {t.np_dtype} ({t}), got {arr.dtype}")
        if arr.ndim != t.rank:
            raise ShapeError(f"input {name!r}: expected rank {t.rank} ({t}), got shape {list(arr.shape)}")
        for axis, (d, got) in enumerate(zip(t.shape, arr.shape)):
            if isinstance(d, str):
                if d in sizes and sizes[d][0] != got:
                    raise ShapeError(f"input {name!r}: dimension {d} is {got} but input {sizes[d][1]!r} "
                                     f"has {d}={sizes[d][0]}")
                sizes.setdefault(d, (got, name))
            elif d != got:
                raise ShapeError(f"input {name!r}: expected shape {t}, got {list(arr.shape)} (axis {axis})")
        yield name, arr if on_device else np.asarray(arr, order="C")  # keeps 0-d arrays 0-d


ModelLike = Union[Module, str, Path]


def compile(model: ModelLike, input_shape=None, loss: Optional[Module] = None, optimizer: Any = None,
            target: str = "cpu", fuse: bool = True, dtype: str = "f32", parallel: bool = False,
            flush_denormals: bool = True) -> CompiledModule:  # noqa: A001
    """Compile a model into a CompiledModule.

    ``model`` is an ``nncc.nn.Module``, a spec file (``.toml``) or an ONNX file (``.onnx``).
    ``input_shape`` is a tuple (or list of tuples) whose ``None`` dims are the symbolic batch size ``N``;
    spec and ONNX files carry their own, and so do Modules with ``input_shape`` and ``input_dtypes``
    attributes (an imported ONNX model). ``fuse=False`` turns fusion off (one kernel per op);
    CPU convolutions and max-pools (windows inside the input) split the batch across numba's threads
    (``ops/cpu_chunks.py``), large matrix products their output rows, and the BLAS their chunks call, numpy's,
    is set to one thread for the process (``codegen/cpu/blas_threads.py``); ``parallel=True`` also runs the
    other CPU kernels' batch loops on numba's threads, at a second or so more cold compile per kernel. ``flush_denormals=True`` runs the CPU kernels with
    denormal floats flushed to zero, which keeps a training step whose values decay into them at full speed
    (``codegen/cpu/float_mode.py``); False keeps IEEE gradual underflow, as PyTorch does by default. Example::

        fwd = nncc.compile(model, input_shape=(None, 1, 28, 28))
        step = nncc.compile(model, input_shape=(None, 1, 28, 28), loss=nn.CrossEntropyLoss(),
                            optimizer=optim.SGD(lr=0.01, momentum=0.9))
    """
    if isinstance(model, (str, Path)):
        from .frontend.loader import load_model

        model, file_shape = load_model(model)
        input_shape = input_shape or file_shape
    if not isinstance(model, Module):
        raise UnsupportedError(f"cannot compile an object of type {type(model).__name__}: expected an nncc.nn.Module, "
                               f"a spec file or an ONNX file")
    types = compile_input_types(model, input_shape, dtype)
    return CompiledModule(model, types, loss, optimizer, target, fuse, parallel=parallel,
                          flush_denormals=flush_denormals)


def compile_input_types(model: Module, input_shape=None, dtype: str = "f32") -> list[TensorType]:
    """The input types of ``model``: ``input_shape`` (one shape, or a list of shapes; None for the batch) and
    ``dtype``, or the model's own ``input_shape`` and ``input_dtypes`` attributes (an imported ONNX model's)."""
    if input_shape is None:
        input_shape = getattr(model, "input_shape", None)
    if input_shape is None:
        raise ShapeError("input_shape is required for a Module, e.g. input_shape=(None, 1, 28, 28)")
    several = input_shape == [] or (len(input_shape) > 0 and isinstance(input_shape[0], (tuple, list)))
    shapes = list(input_shape) if several else [input_shape]  # () is one 0-d input, [] is none
    dtypes = getattr(model, "input_dtypes", None) or [dtype] * len(shapes)
    if len(dtypes) != len(shapes):
        raise ShapeError(f"{type(model).__name__} takes {len(dtypes)} inputs, got {len(shapes)} input shapes")
    return [TensorType(dt, tuple("N" if d is None else int(d) for d in s)) for s, dt in zip(shapes, dtypes)]
