"""ONNX importer: an ONNX file becomes an ``OnnxModel``, an ``nn.Module`` that replays the graph when traced.

The model's float initializers are its parameters (BatchNormalization's running statistics are buffers), so
``nncc.compile(model)`` compiles the forward pass and ``nncc.compile(model, loss=..., optimizer=...)`` fine-tunes
it with no special casing. ``forward`` walks the ONNX nodes in order and calls ``onnx_ops.HANDLERS``, which build
IR through ``tracing.apply``.

Shape-computing subgraphs (Shape -> Gather -> Concat -> Reshape, as PyTorch exports them) fold to constants
while tracing: a node whose inputs are all known (constants, integer initializers, the results of Shape) is
evaluated with ONNX's own reference implementation. The symbolic batch size is evaluated twice, as two stand-in
sizes; a result that differs between the two is either the batch size itself (an ``N`` in a Reshape target) or
unsupported.

ONNX names are data: initializer names become parameter names only after sanitising, node names appear only as
IR labels (which every printer escapes), and nothing from the file is ever executed.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..errors import NNCCError, ShapeError, UnsupportedError
from ..ir.types import TensorType, broadcast_shapes
from .nn.module import Module, Parameter
from .tracing import Tensor, active_trace, apply, label, to_value

#: ONNX TensorProto element types nncc compiles, by their TensorProto number.
ONNX_DTYPES = {1: "f32", 11: "f64", 7: "i64", 6: "i32", 9: "bool"}
_FLOAT_TYPES = (1, 11)
#: Two stand-in batch sizes for evaluating shape arithmetic; a value equal to each in turn is the batch size.
BATCH_STANDINS = (97, 89)
#: Ops that must not be folded even when their inputs are known: their results are random.
_RANDOM = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Bernoulli", "Multinomial"}
_MAX_FILE = 2 << 30  # protobuf's own limit


class OnnxError(NNCCError):
    """An ONNX file nncc cannot read: not ONNX, truncated, malformed graph, or unsafe external data."""


# ---- reading ------------------------------------------------------------------------------------------------------
def read_model(source: Union[str, Path, Any]):
    """Parse an ONNX file (or take a ModelProto), load its external data safely and check the graph's structure."""
    import onnx

    if isinstance(source, onnx.ModelProto):
        proto, where, base = source, "<ModelProto>", None
    else:
        path = Path(source)
        where, base = str(path), path.resolve().parent
        try:
            if path.stat().st_size > _MAX_FILE:
                raise OnnxError(f"{where}: larger than 2 GiB; keep the weights in external data files")
            data = path.read_bytes()
        except OSError as e:
            raise OnnxError(f"{where}: cannot read the file ({e})") from None
        proto = onnx.ModelProto()
        try:
            proto.ParseFromString(data)
        except Exception as e:  # protobuf raises DecodeError, or RuntimeWarning-free ValueErrors, on garbage
            raise OnnxError(f"{where}: not an ONNX model, or a truncated one ({type(e).__name__}: {e})") from None
    if not proto.HasField("graph") or not proto.graph.output:
        raise OnnxError(f"{where}: not an ONNX model (no graph with outputs)")
    _load_external_data(proto, base, where)
    _check_structure(proto.graph, where)
    return proto


def _tensors(proto):
    """Every TensorProto of the main graph: initializers and node attributes."""
    yield from proto.graph.initializer
    for node in proto.graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors


def _load_external_data(proto, base: Optional[Path], where: str) -> None:
    """Read external tensor data, refusing any location outside the model's directory."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_tensor

    for tensor in _tensors(proto):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (base / location).resolve() if base is not None and location else None
        if target is None or Path(location).is_absolute() or base not in target.parents:
            raise OnnxError(f"{where}: tensor {tensor.name!r} keeps its data at {location!r}, which is not inside the "
                            f"model's directory: refused")
        try:
            load_external_data_for_tensor(tensor, str(base))
        except Exception as e:  # missing file, bad offset or length
            raise OnnxError(f"{where}: cannot load the external data of tensor {tensor.name!r} ({e})") from None
        tensor.data_location = onnx.TensorProto.DEFAULT
        del tensor.external_data[:]


def _check_structure(graph, where: str) -> None:
    """Every value defined once, before it is read: catches cycles, unsorted graphs and dangling inputs."""
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output if out}
    for i, node in enumerate(graph.node):
        for name in node.input:
            if name and name not in defined:
                if name in producer:
                    raise OnnxError(f"{where}: node {_describe(node, i)} reads {name!r} before node "
                                    f"{_describe(producer[name])} produces it: the graph has a cycle or is not "
                                    f"topologically sorted")
                raise OnnxError(f"{where}: node {_describe(node, i)} reads {name!r}, which no node, graph input or "
                                f"initializer defines")
        for out in node.output:
            if out in defined:
                raise OnnxError(f"{where}: value {out!r} is defined twice (again by node {_describe(node, i)})")
            if out:
                defined.add(out)
    for v in graph.output:
        if v.name not in defined:
            raise OnnxError(f"{where}: graph output {v.name!r} is never computed")


def _describe(node, index: Optional[int] = None) -> str:
    name = node.name or (f"#{index}" if index is not None else "(unnamed)")
    return f"{name!r} ({node.op_type})"


# ---- static values ----------------------------------------------------------------------------------------------
class Static:
    """A value known while tracing, as computed for each of the two stand-in batch sizes."""

    __slots__ = ("values",)

    def __init__(self, first: np.ndarray, second: Optional[np.ndarray] = None):
        self.values = (np.asarray(first), np.asarray(first if second is None else second))

    @property
    def depends_on_batch(self) -> bool:
        a, b = self.values
        return a.shape != b.shape or not np.array_equal(a, b)

    def data(self, what: str):
        """The value as data. A batch-dependent one is supported when it is one value filling a shape that holds
        the batch size (ConstantOfShape of a Shape, as ``torch.zeros(x.size(0), 3)`` exports): a traced
        broadcast of that value."""
        if not self.depends_on_batch:
            return self.values[0]
        first, second = self.values
        fill = first.reshape(-1)[:1]
        if not fill.size or not (first == fill).all() or not (second == fill).all():
            raise UnsupportedError(f"{what} depends on the batch size at run time")
        shape = Static(np.array(first.shape), np.array(second.shape)).dims(f"the shape of {what}")
        return apply("broadcast_to", [Tensor(to_value(fill.reshape(())))], {"shape": shape})

    def dims(self, what: str) -> list:
        """A 1-D int value as a shape: entries equal to the batch size become the symbol ``N``."""
        a, b = (v.reshape(-1).tolist() for v in self.values)
        if len(a) != len(b):
            raise UnsupportedError(f"{what} has a length that depends on the batch size")
        out = []
        for x, y in zip(a, b):
            if x == y:
                out.append(int(x))
            elif (x, y) == BATCH_STANDINS:
                out.append("N")
            else:
                raise UnsupportedError(f"{what} computes {x} and {y} for batch sizes {BATCH_STANDINS}: only the "
                                       f"batch size itself may vary")
        return out


def shape_of(value) -> tuple:
    """The shape of a traced tensor, array or static value (symbolic dims as in the IR)."""
    if isinstance(value, Static):
        return value.values[0].shape
    return tuple(value.shape)


def standin_shapes(shape) -> tuple[tuple, tuple]:
    """A shape with each stand-in batch size substituted for ``N``."""
    return tuple(tuple(BATCH_STANDINS[i] if isinstance(d, str) else d for d in shape) for i in range(2))


# ---- the model --------------------------------------------------------------------------------------------------
class OnnxNode:
    """One ONNX node, with its attributes decoded to Python and numpy values."""

    def __init__(self, proto, index: int, static: bool):
        self.proto = proto
        self.op = proto.op_type
        self.domain = proto.domain
        self.name = proto.name or f"{proto.op_type}_{index}"
        self.inputs = list(proto.input)
        self.outputs = list(proto.output)
        self.static = static
        self.attrs = {a.name: _attribute_value(a) for a in proto.attribute}


def _attribute_value(attr):
    from onnx import AttributeProto, helper, numpy_helper

    if attr.type == AttributeProto.TENSOR:
        return numpy_helper.to_array(attr.t)
    if attr.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
        return attr  # subgraphs: only ops nncc does not support take them
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode("utf-8", "replace") for v in value]
    return value


def _sanitize(name: str, taken: set) -> str:
    """A parameter name made of letters, digits, '_' and '.', unique among ``taken``."""
    base = "".join(c if c.isascii() and (c.isalnum() or c in "_.") else "_" for c in name) or "param"
    key, n = base, 1
    while key in taken:
        n += 1
        key = f"{base}_{n}"
    taken.add(key)
    return key


def _input_type(value_info, where: str) -> TensorType:
    tt = value_info.type.tensor_type
    if not value_info.type.HasField("tensor_type"):
        kind = value_info.type.WhichOneof("value") or "no type"
        raise UnsupportedError(f"{where}: graph input {value_info.name!r} is of {kind.replace('_type', '')} type, "
                               f"not a tensor")
    if tt.elem_type not in ONNX_DTYPES:
        raise UnsupportedError(f"{where}: graph input {value_info.name!r} has type "
                               f"{type_name(tt.elem_type)}; nncc supports {sorted(ONNX_DTYPES.values())} tensors")
    if not tt.HasField("shape"):
        raise UnsupportedError(f"{where}: graph input {value_info.name!r} has no shape")
    dims = []
    for axis, d in enumerate(tt.shape.dim):
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif axis == 0:
            dims.append("N")
        else:
            raise UnsupportedError(f"{where}: graph input {value_info.name!r} has a dynamic dimension on axis {axis}; "
                                   f"only the leading (batch) dimension may be dynamic")
    return TensorType(ONNX_DTYPES[tt.elem_type], tuple(dims))


def type_name(elem_type: int) -> str:
    from onnx import TensorProto

    try:
        return TensorProto.DataType.Name(elem_type)
    except ValueError:
        return f"element type {elem_type}"


class OnnxModel(Module):
    """An ONNX graph as an nncc Module. Build it with ``nncc.onnx.load(path)``.

    Example::

        model = nncc.onnx.load("lenet.onnx")
        fwd = nncc.compile(model)                   # input shapes and dtypes come from the file
        logits = fwd(images)
    """

    def __init__(self, proto, where: str = "<ModelProto>", constants: Optional[dict] = None):
        super().__init__()
        from .onnx_ops import HANDLERS

        graph = proto.graph
        self.where = where
        self.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
        if not self.opset:
            raise OnnxError(f"{where}: the model imports no version of the default ONNX operator set")
        _check_opset(self.opset, where)
        constants = dict(constants or {})
        unknown = sorted(set(constants) - {v.name for v in graph.input})
        if unknown:
            raise OnnxError(f"{where}: constants {unknown} are not graph inputs")
        fixed = {t.name for t in graph.initializer} | set(constants)
        inputs = [v for v in graph.input if v.name not in fixed]
        types = [_input_type(v, where) for v in inputs]
        self.input_names = [v.name for v in inputs]
        self.output_names = [v.name for v in graph.output]
        self.input_dtypes = [t.dtype for t in types]
        shapes = [tuple(None if isinstance(d, str) else d for d in t.shape) for t in types]
        self.input_shape = shapes[0] if len(shapes) == 1 else shapes
        self.onnx_names: dict[str, str] = {}  # parameter or buffer name -> ONNX initializer name
        self._keys: dict[str, str] = {}  # ONNX initializer name -> parameter or buffer name
        self._static_inits: dict[str, Static] = {name: Static(np.asarray(v)) for name, v in constants.items()}
        self.nodes: list[OnnxNode] = []
        # initializers go straight into the parameter and buffer dicts, after every attribute is set: a model's
        # names must never replace an attribute (setattr would)
        self._add_initializers(graph)
        self.nodes.extend(self._nodes(graph))
        unsupported: dict[str, list[str]] = OrderedDict()
        for node in self.nodes:
            if node.domain not in ("", "ai.onnx") or (not node.static and node.op not in HANDLERS):
                op = f"{node.domain}::{node.op}" if node.domain not in ("", "ai.onnx") else node.op
                unsupported.setdefault(op, []).append(node.name)
        if unsupported:
            listed = "; ".join(f"{op} (node{'s' if len(names) > 1 else ''} {', '.join(map(repr, names))})"
                               for op, names in unsupported.items())
            raise UnsupportedError(f"{where}: unsupported ONNX operator{'s' if len(unsupported) > 1 else ''}: {listed}")

    def _add_initializers(self, graph) -> None:
        from onnx import numpy_helper

        used = {name for node in graph.node for name in node.input} | set(self.output_names)
        bn_stats = {node.input[i] for node in graph.node if node.op_type == "BatchNormalization"
                    for i in (3, 4) if len(node.input) > i}
        taken: set = set()
        for t in graph.initializer:
            if t.name not in used or t.name in self._static_inits:
                continue
            try:
                array = numpy_helper.to_array(t)
            except Exception as e:
                raise OnnxError(f"{self.where}: initializer {t.name!r} cannot be decoded ({e})") from None
            if t.data_type not in _FLOAT_TYPES:
                self._static_inits[t.name] = Static(array)
                continue
            key = _sanitize(t.name, taken)
            self.onnx_names[key] = t.name
            self._keys[t.name] = key
            if t.name in bn_stats:
                self._buffers[key] = np.array(array)
            else:
                self._parameters[key] = Parameter(array)

    def _nodes(self, graph) -> list[OnnxNode]:
        """The nodes, each marked static when all of its inputs are known while tracing."""
        known = set(self._static_inits)
        nodes = []
        for i, proto in enumerate(graph.node):
            names = [n for n in proto.input if n]
            static = proto.op_type not in _RANDOM and (all(n in known for n in names) if names
                                                       else proto.op_type == "Constant")
            if static or proto.op_type in ("Shape", "Size"):
                known.update(n for n in proto.output if n)
            nodes.append(OnnxNode(proto, i, static))
        return nodes

    # ---- running -------------------------------------------------------------------------------------------------
    def forward(self, *inputs):
        if len(inputs) != len(self.input_names):
            raise ShapeError(f"{self.where}: the model takes {len(self.input_names)} input(s) "
                             f"{self.input_names}, got {len(inputs)}")
        env: dict[str, Any] = dict(self._static_inits)
        for name, key in self._keys.items():
            env[name] = self._parameters[key] if key in self._parameters else self._buffers[key]
        env.update(zip(self.input_names, inputs))
        for node in self.nodes:
            with label(node.name):
                outs = self._run(node, [env[n] if n else None for n in node.inputs])
            for name, value in zip(node.outputs, outs):
                if name:
                    env[name] = value
        results = [_result(env[name], name) for name in self.output_names]
        return results[0] if len(results) == 1 else tuple(results)

    def _run(self, node: OnnxNode, inputs: list) -> list:
        from .onnx_ops import HANDLERS, NodeContext

        if node.static:
            return _evaluate(node, inputs, self.opset)
        return HANDLERS[node.op](NodeContext(node, inputs, self))

    def extra_repr(self) -> str:
        return f"{self.where!r}, opset={self.opset}, inputs={self.input_names}, outputs={self.output_names}"


def _check_opset(opset: int, where: str) -> None:
    """Opsets newer than the installed onnx package's are refused: neither the handlers nor ONNX's reference
    implementation (which folds the constant subgraphs) know what their operators mean."""
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise UnsupportedError(f"{where}: the model uses ONNX opset {opset}; the installed onnx package "
                               f"({onnx.__version__}) knows opsets up to {newest}")


def _evaluate(node: OnnxNode, inputs: list, opset: int) -> list:
    """Run a node on known inputs with ONNX's reference implementation, for each stand-in batch size."""
    from onnx.reference import ReferenceEvaluator

    outputs = [name for name in node.outputs if name]
    try:
        evaluator = ReferenceEvaluator(_single_node_model(node, opset))
        runs = []
        for i in range(2 if any(v.depends_on_batch for v in inputs if v is not None) else 1):
            feeds = {name: v.values[i] for name, v in zip(node.inputs, inputs) if name}
            runs.append(dict(zip(outputs, evaluator.run(None, feeds))))
    except Exception as e:  # the reference raises many types on bad models
        raise OnnxError(f"node {node.name!r} ({node.op}): cannot evaluate its constant inputs "
                        f"({type(e).__name__}: {e})") from None
    return [Static(*(run[name] for run in runs)) if name else None for name in node.outputs]


def _single_node_model(node: OnnxNode, opset: int):
    """The node alone in a model of the importing model's opset: given a bare NodeProto, the reference evaluator
    would run the newest version of the operator (Unsqueeze-13 reads its axes from an input, Unsqueeze-11 from an
    attribute)."""
    from onnx import helper

    names = list(dict.fromkeys(name for name in node.inputs if name))  # a graph declares each input once
    graph = helper.make_graph([node.proto], "fold", [helper.make_empty_tensor_value_info(n) for n in names],
                              [helper.make_empty_tensor_value_info(n) for n in node.outputs if n])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _result(value, name: str):
    """A graph output as the tracer wants it: a traced tensor (or an array in eager mode)."""
    if isinstance(value, Static):
        value = value.data(f"graph output {name!r}")
    if active_trace() is not None and not isinstance(value, Tensor):
        try:
            return Tensor(to_value(value))
        except UnsupportedError as e:
            raise UnsupportedError(f"graph output {name!r}: {e}") from None
    return value


def load(source, constants: Optional[dict] = None) -> OnnxModel:
    """Load an ONNX file (or a ModelProto) as an ``OnnxModel``.

    ``constants`` binds graph inputs to fixed values, for inputs nncc needs to know when it compiles (a shape,
    axes, pads fed as inputs). Example::

        model = nncc.onnx.load("lenet.onnx")
        model = nncc.onnx.load("reshaper.onnx", constants={"shape": np.array([-1, 16])})
    """
    where = "<ModelProto>" if not isinstance(source, (str, Path)) else str(source)
    return OnnxModel(read_model(source), where, constants)


def load_onnx_model(path) -> tuple[OnnxModel, Union[tuple, list]]:
    """The loader's entry point: (model, input shape(s) with None for the batch)."""
    model = load(path)
    return model, model.input_shape


def broadcast_dims(*shapes) -> tuple:
    """numpy broadcasting of shapes with symbols; ShapeError when they do not broadcast."""
    out = broadcast_shapes(*(tuple(s) for s in shapes))
    if out is None:
        raise ShapeError(f"shapes {' and '.join(map(str, shapes))} do not broadcast")
    return out
