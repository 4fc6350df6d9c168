"""ONNX exporter: a model's forward IR (traced in eval mode) becomes an ONNX ModelProto.

Parameters and buffers become initializers under their names (an imported model's under its original ONNX
names), the symbolic batch dimension becomes the dynamic dimension ``N``, and every IR op of a forward graph
maps to one or a few standard ONNX operators (opset 18). Backward and optimizer ops have no ONNX form: export
the forward model, not a training step.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np

from ..errors import UnsupportedError
from ..ir.graph import Graph, Node, Value
from ..ir.types import TensorType
from ..passes.shape_inference import infer_shapes
from ..passes.simplify import eliminate_common_subexpressions, eliminate_dead_code, fold_constants, simplify_algebra
from .nn.module import Module
from .tracer import trace_module

OPSET = 18
_ONNX_TYPES = {"f32": 1, "f64": 11, "i64": 7, "i32": 6, "bool": 9}
_INT64_MIN = -(2 ** 63)  # a Slice end below every index: "through index 0" for a negative step


def export(model, input_shape=None, name: Optional[str] = None):
    """The forward graph of ``model`` (an ``nn.Module`` or a ``CompiledModule``) as a checked ONNX ModelProto.

    A CompiledModule exports with its current (possibly trained) weights. Example::

        proto = nncc.onnx.export(LeNet(), input_shape=(None, 1, 28, 28))
    """
    import onnx

    module, types, state = _resolve(model, input_shape)
    traced = trace_module(module, types, training=False, name=name or type(module).__name__.lower())
    graph = _simplify(traced.graph)
    n_data = len(traced.data_inputs)
    input_names = list(getattr(module, "input_names", [])) or (["input"] if n_data == 1 else
                                                                 [f"input_{i}" for i in range(n_data)])
    output_names = list(getattr(module, "output_names", []))
    if len(output_names) != len(graph.outputs):
        output_names = ["output"] if len(graph.outputs) == 1 else [f"output_{i}" for i in range(len(graph.outputs))]
    onnx_names = getattr(module, "onnx_names", {})
    writer = _Writer(_gemm_biases(graph))
    inputs = []
    for value, vname in zip(graph.inputs[:n_data], input_names):
        writer.bind(value, vname)
        inputs.append(_value_info(vname, value.type))
    for value in graph.inputs[n_data:]:
        writer.initializer(value, onnx_names.get(value.name, value.name), state[value.name])
    for node in graph.nodes:
        writer.convert(node)
    outputs = []
    for value, oname in zip(graph.outputs, output_names):
        outputs.append(_value_info(writer.output(value, oname), value.type))
    used = {name for node in writer.nodes for name in node.input}  # unused buffers (a step counter) are left out
    initializers = [t for t in writer.initializers if t.name in used]
    onnx_graph = onnx.helper.make_graph(writer.nodes, graph.name, inputs, outputs, initializers)
    proto = onnx.helper.make_model(onnx_graph, producer_name="nncc",
                                   opset_imports=[onnx.helper.make_opsetid("", OPSET)])
    proto.ir_version = min(proto.ir_version, 9)  # what ONNX Runtime releases of the last years read
    onnx.checker.check_model(proto, full_check=True)
    return proto


def save(model, path: Union[str, Path], input_shape=None) -> None:
    """Write ``model``'s forward graph to an ONNX file. Example::

        nncc.onnx.save(compiled, "lenet.onnx")
    """
    import onnx

    onnx.save_model(export(model, input_shape), str(path))


def _resolve(model, input_shape) -> tuple[Module, list[TensorType], dict[str, np.ndarray]]:
    """(module, input types, parameter and buffer values) of a Module or a CompiledModule."""
    from ..compiler import CompiledModule, compile_input_types

    if isinstance(model, CompiledModule):
        return model.model, list(model.input_types), model.state_dict()
    if not isinstance(model, Module):
        raise UnsupportedError(f"cannot export an object of type {type(model).__name__}: expected an nncc.nn.Module "
                               f"or a CompiledModule")
    return model, compile_input_types(model, input_shape), model.state_dict()


def _simplify(graph: Graph) -> Graph:
    for step in (infer_shapes, fold_constants, simplify_algebra, eliminate_common_subexpressions, eliminate_dead_code):
        graph = step(graph)
    return graph


def _gemm_biases(graph: Graph) -> dict[Node, tuple[Node, Value]]:
    """matmul -> (the add of a bias that alone reads it, the bias): Gemm takes the bias as its input C."""
    users = graph.users()
    position = {node: i for i, node in enumerate(graph.nodes)}
    fused = {}
    for node in graph.nodes:
        out = node.outputs[0]
        readers = users.get(out, [])
        if node.op != "matmul" or out in graph.outputs or len(readers) != 1 or readers[0].op != "add":
            continue
        add = readers[0]
        bias = add.inputs[1] if add.inputs[0] is out else add.inputs[0]
        ready = bias.producer is None or position[bias.producer] < position[node]
        if bias is not out and ready and bias.type.rank <= 2 and add.outputs[0].type == out.type:
            fused[node] = (add, bias)
    return fused


def _value_info(name: str, t: TensorType):
    import onnx

    return onnx.helper.make_tensor_value_info(name, _ONNX_TYPES[t.dtype], [d if isinstance(d, int) else "N"
                                                                          for d in t.shape])


# ---- the writer ----------------------------------------------------------------------------------------------------
class _Writer:
    """Collects ONNX nodes and initializers; names values uniquely (model names are kept where given)."""

    def __init__(self, gemm_biases: dict):
        self.gemm_biases = gemm_biases
        self.absorbed = {add for add, _ in gemm_biases.values()}
        self.nodes: list = []
        self.initializers: list = []
        self.names: dict[Value, str] = {}
        self.taken: set[str] = set()
        self.produced: set[str] = set()  # names of node outputs not yet renamed to a graph output
        self.counter = 0

    def fresh(self, hint: str) -> str:
        name = hint
        while name in self.taken:
            self.counter += 1
            name = f"{hint}_{self.counter}"
        self.taken.add(name)
        return name

    def bind(self, value: Value, name: str) -> str:
        self.names[value] = self.fresh(name)
        return self.names[value]

    def initializer(self, value: Value, name: str, array: np.ndarray) -> None:
        from onnx import numpy_helper

        tensor = numpy_helper.from_array(np.asarray(array, value.type.np_dtype), self.bind(value, name))
        self.initializers.append(tensor)

    def const(self, array) -> str:
        """A constant tensor (a Constant node)."""
        from onnx import helper, numpy_helper

        name = self.fresh("const")
        self.nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(array))))
        self.produced.add(name)
        return name

    def add(self, op: str, inputs: list[str], n_outputs: int = 1, **attrs) -> list[str]:
        from onnx import helper

        outs = [self.fresh(op.lower()) for _ in range(n_outputs)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self.fresh(f"{op}_node"), **attrs))
        self.produced.update(outs)
        return outs

    def add1(self, op: str, inputs: list[str], **attrs) -> str:
        return self.add(op, inputs, **attrs)[0]

    def convert(self, node: Node) -> None:
        if node in self.absorbed:  # a bias add that a Gemm took in
            return
        rule = RULES.get(node.op)
        if rule is None:
            raise UnsupportedError(f"{node.describe()}: op '{node.op}' has no ONNX form (export the forward model)")
        outs = rule(self, node, [self.names[v] for v in node.inputs])
        for value, out in zip(node.outputs, outs if isinstance(outs, list) else [outs]):
            self.names[value] = out

    def output(self, value: Value, name: str) -> str:
        """Name a graph output: its node's output is renamed; an input, or a value output twice, gets an Identity."""
        from onnx import helper

        src, out = self.names[value], self.fresh(name)
        if src in self.produced:
            self.produced.discard(src)
            for node in self.nodes:
                for field in (node.input, node.output):
                    field[:] = [out if n == src else n for n in field]
            self.names = {v: out if n == src else n for v, n in self.names.items()}
        else:
            self.nodes.append(helper.make_node("Identity", [src], [out]))
        return out


def _ints(values) -> np.ndarray:
    return np.asarray([int(v) for v in values], np.int64)


Rule = Callable[[_Writer, Node, list], Any]
RULES: dict[str, Rule] = {}


def _simple(onnx_op: str, **fixed) -> Rule:
    return lambda w, node, ins: w.add1(onnx_op, ins, **fixed)


for _ir, _onnx in [("add", "Add"), ("sub", "Sub"), ("mul", "Mul"), ("div", "Div"), ("pow", "Pow"),
                   ("maximum", "Max"), ("minimum", "Min"), ("neg", "Neg"), ("abs", "Abs"), ("sign", "Sign"),
                   ("exp", "Exp"), ("log", "Log"), ("sqrt", "Sqrt"), ("floor", "Floor"), ("ceil", "Ceil"),
                   ("erf", "Erf"), ("relu", "Relu"), ("sigmoid", "Sigmoid"), ("tanh", "Tanh"),
                   ("greater", "Greater"), ("greater_equal", "GreaterOrEqual"), ("less", "Less"),
                   ("less_equal", "LessOrEqual"), ("equal", "Equal"), ("where", "Where"), ("logical_not", "Not"),
                   ("logical_and", "And"), ("logical_or", "Or"), ("logical_xor", "Xor")]:
    RULES[_ir] = _simple(_onnx)

RULES["rsqrt"] = lambda w, node, ins: w.add1("Reciprocal", [w.add1("Sqrt", ins)])
RULES["leaky_relu"] = lambda w, node, ins: w.add1("LeakyRelu", ins, alpha=float(node.attrs["alpha"]))
RULES["cast"] = lambda w, node, ins: w.add1("Cast", ins, to=_ONNX_TYPES[node.attrs["dtype"]])
RULES["constant"] = lambda w, node, ins: w.const(node.attrs["value"])
RULES["transpose"] = lambda w, node, ins: w.add1("Transpose", ins, perm=[int(p) for p in node.attrs["perm"]])
RULES["concat"] = lambda w, node, ins: w.add1("Concat", ins, axis=int(node.attrs["axis"]))
RULES["softmax"] = lambda w, node, ins: w.add1("Softmax", ins, axis=int(node.attrs["axis"]))
RULES["log_softmax"] = lambda w, node, ins: w.add1("LogSoftmax", ins, axis=int(node.attrs["axis"]))
RULES["gather"] = lambda w, node, ins: w.add1("Gather", ins, axis=int(node.attrs["axis"]))
RULES["broadcast_like"] = lambda w, node, ins: w.add1("Expand", [ins[0], w.add1("Shape", [ins[1]])])


def _reshape(w, node, ins):
    # the batch symbol becomes -1: every other dim is known, so the runtime infers it
    return w.add1("Reshape", [ins[0], w.const(_ints(-1 if isinstance(d, str) else d for d in node.attrs["shape"]))])


def _broadcast_to(w, node, ins):
    # a 1 where the target has the batch symbol: Expand broadcasts both ways, and that symbol comes from the input
    return w.add1("Expand", [ins[0], w.const(_ints(1 if isinstance(d, str) else d for d in node.attrs["shape"]))])


def _slice(w, node, ins):
    a = node.attrs
    return w.add1("Slice", [ins[0], w.const(_ints([a["start"]])), w.const(_ints([a["stop"]])),
                            w.const(_ints([a["axis"]]))])


def _strided_slice(w, node, ins):
    a = node.attrs
    stops = [_INT64_MIN if stop < 0 else stop for stop in a["stops"]]
    return w.add1("Slice", [ins[0], w.const(_ints(a["starts"])), w.const(_ints(stops)), w.const(_ints(a["axes"])),
                            w.const(_ints(a["steps"]))])


def _reduce(onnx_op: str) -> Rule:
    return lambda w, node, ins: w.add1(onnx_op, [ins[0], w.const(_ints(node.attrs["axes"]))],
                                       keepdims=int(bool(node.attrs.get("keepdims", False))))


for _ir, _onnx in [("sum", "ReduceSum"), ("mean", "ReduceMean"), ("max", "ReduceMax"), ("prod", "ReduceProd")]:
    RULES[_ir] = _reduce(_onnx)


def _arg(onnx_op: str) -> Rule:
    return lambda w, node, ins: w.add1(onnx_op, ins, axis=int(node.attrs["axis"]),
                                       keepdims=int(bool(node.attrs.get("keepdims", True))),
                                       select_last_index=int(bool(node.attrs.get("select_last_index", False))))


RULES["argmax"], RULES["argmin"] = _arg("ArgMax"), _arg("ArgMin")


def _matmul(w, node, ins):
    add, bias = w.gemm_biases.get(node, (None, None))
    out = w.add1("Gemm", ins + ([w.names[bias]] if bias is not None else []),
                 transA=int(bool(node.attrs.get("transpose_a"))), transB=int(bool(node.attrs.get("transpose_b"))))
    if add is not None:
        w.names[add.outputs[0]] = out
    return out


def _batch_matmul(w, node, ins):
    rank = node.inputs[0].type.rank
    swap = list(range(rank - 2)) + [rank - 1, rank - 2]
    a = w.add1("Transpose", [ins[0]], perm=swap) if node.attrs.get("transpose_a") else ins[0]
    b = w.add1("Transpose", [ins[1]], perm=swap) if node.attrs.get("transpose_b") else ins[1]
    return w.add1("MatMul", [a, b])


def _pair(v) -> list[int]:
    return [int(x) for x in v] if isinstance(v, (list, tuple)) else [int(v), int(v)]


def _conv(w, node, ins):
    a = node.attrs
    pads = _pair(a.get("padding", 0))
    return w.add1("Conv", ins, strides=_pair(a.get("stride", 1)), pads=pads + pads,
                  dilations=_pair(a.get("dilation", 1)), group=int(a.get("groups", 1)),
                  kernel_shape=list(node.inputs[1].type.shape[2:]))


def _conv_transpose(w, node, ins):
    a = node.attrs
    pads = _pair(a.get("padding", 0))
    return w.add1("ConvTranspose", ins, strides=_pair(a.get("stride", 1)), pads=pads + pads,
                  dilations=_pair(a.get("dilation", 1)), group=int(a.get("groups", 1)),
                  output_padding=_pair(a.get("output_padding", 0)), kernel_shape=list(node.inputs[1].type.shape[2:]))


def _pool(onnx_op: str) -> Rule:
    def rule(w, node, ins):
        a = node.attrs
        kernel = _pair(a["kernel"])
        pads = _pair(a.get("padding", 0))
        attrs = dict(kernel_shape=kernel, strides=_pair(a.get("stride") or kernel), pads=pads + pads,
                     ceil_mode=int(bool(a.get("ceil_mode", False))))
        dilation = _pair(a.get("dilation", 1))
        if onnx_op == "AveragePool":
            if dilation != [1, 1]:
                raise UnsupportedError(f"{node.describe()}: a dilated average pool needs ONNX opset 19")
            attrs["count_include_pad"] = int(bool(a.get("count_include_pad", True)))
        else:
            attrs["dilations"] = dilation
        return w.add1(onnx_op, ins, **attrs)

    return rule


def _pad(w, node, ins):
    mode = node.attrs.get("mode", "constant")
    if mode == "wrap":
        raise UnsupportedError(f"{node.describe()}: wrap padding needs ONNX opset 19")
    value = np.asarray(node.attrs.get("value", 0.0), node.inputs[0].type.np_dtype)
    return w.add1("Pad", [ins[0], w.const(_ints(node.attrs["pads"])), w.const(value)], mode=mode)


RULES.update({"reshape": _reshape, "broadcast_to": _broadcast_to, "slice": _slice, "strided_slice": _strided_slice,
              "matmul": _matmul, "batch_matmul": _batch_matmul, "conv2d": _conv, "conv_transpose2d": _conv_transpose,
              "max_pool2d": _pool("MaxPool"), "avg_pool2d": _pool("AveragePool"), "pad": _pad})
