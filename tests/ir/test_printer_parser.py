"""IR text: print -> parse -> print is a fixed point, odd names survive, parse errors say where."""
import numpy as np
import pytest

import nncc
from nncc import nn
from nncc.errors import IRError
from nncc.ir import GraphBuilder, TensorType, parse_graph, print_graph
from nncc.reference import run_reference
from parity.nncc_models import MODELS
from runtime import optim

TEXT = """graph g(%x: f32[N,3], %"w \\"odd\\" name": f32[3]) -> (f32[N,3], f32[]) {
  %0 = add(%x, %"w \\"odd\\" name") : f32[N,3] loc("layer \\"1\\"")
  %1 = constant() {value=dense<f32[2]>[1.5, -inf]} : f32[2]
  %2 = sum(%0) {axes=[0, 1], keepdims=false} : f32[]
  return %0, %2
}
"""


def test_print_parse_print_is_a_fixed_point_with_odd_names_and_constants():
    graph = parse_graph(TEXT)
    assert graph.inputs[1].name == 'w "odd" name'
    assert graph.nodes[0].label == 'layer "1"'
    np.testing.assert_array_equal(graph.nodes[1].attrs["value"], np.array([1.5, -np.inf], np.float32))
    assert print_graph(graph) == TEXT


ODD_NAMES = ['w "quoted"', "back\\slash", "new\nline", "trailing newline\n", "tab\there", "%percent", "",
             "0starts_with_digit", "ünïcødé", "a) -> (b", "}", "conv1.weight"]


@pytest.mark.parametrize("name", ODD_NAMES + ["plain_word"])
def test_odd_graph_value_and_label_names_round_trip(name):
    b = GraphBuilder(name)
    x = b.input(name, TensorType("f32", ("N", 2)))
    y = b.input(name + "'", TensorType("f32", (2,)))
    b.label = name
    out = b.add1("mul", [x, y])
    graph = b.finish([out])
    text = print_graph(graph)
    parsed = parse_graph(text)
    assert (parsed.name, [v.name for v in parsed.inputs], parsed.nodes[0].label) == (name, [name, name + "'"], name)
    assert print_graph(parsed) == text


def test_constants_of_every_dtype_round_trip_exactly():
    b = GraphBuilder("consts")
    values = [np.array([0.1, -3.4e38, np.nan, np.inf], np.float32), np.array([[1 / 3]], np.float64),
              np.array([-(2 ** 62), 7], np.int64), np.array([True, False]), np.array(2.5, np.float32)]
    outs = [b.constant(v) for v in values]
    parsed = parse_graph(print_graph(b.finish(outs)))
    for want, node in zip(values, parsed.nodes):
        got = node.attrs["value"]
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def _programs(name):
    """Every program of a model: forward, evaluate, grad, and train with SGD and with Adam (not run, so cheap)."""
    cls, shape, _ = MODELS[name]
    nncc.manual_seed(0)
    model = cls()
    for optimizer in (optim.SGD(lr=0.1, momentum=0.9), optim.Adam()):
        step = nncc.compile(model, input_shape=(None, *shape), loss=nn.CrossEntropyLoss(), optimizer=optimizer)
        kinds = ["forward", "evaluate", "grad", "train"] if isinstance(optimizer, optim.SGD) else ["train"]
        for kind in kinds:
            yield kind, step.program(kind)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_stage_of_every_program_of_each_model_round_trips(name):
    for kind, program in _programs(name):
        for stage, text in program.dumps.items():
            if stage == "fused":  # the kernel plan, a listing rather than a graph
                continue
            assert print_graph(parse_graph(text)) == text, f"{name} {kind} after {stage}"


def test_a_parsed_graph_computes_what_the_original_does():
    cls, shape, _ = MODELS["lenet"]
    nncc.manual_seed(0)
    fwd = nncc.compile(cls(), input_shape=(None, *shape))
    graph = fwd.program("forward").graph
    parsed = parse_graph(print_graph(graph))
    x = np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32)
    feeds = [x if v.name == "x" else fwd.params[v.name] for v in graph.inputs]
    np.testing.assert_array_equal(run_reference(parsed, feeds)[0], run_reference(graph, feeds)[0])


def _graph(body: str, result: str = "f32[2]") -> str:
    return f"graph g(%x: f32[2]) -> ({result}) {{\n{body}}}"


@pytest.mark.parametrize("text,message", [
    (_graph("  %0 = relu(%y) : f32[2]\n  return %0\n"), r"line 2, column 13: use of undefined value %y"),
    (_graph("  %0 = relu(%x) : q8[2]\n  return %0\n"), r"line 2, column 19: unknown dtype 'q8'"),
    (_graph("  %0 = relu(%x) : f32[2] $\n"), r"line 2, column 26: unexpected character"),
    (_graph("  %0 = relu(%x) : f32[2]\n  return %0\n", "f32[3]"), r"line 1, column 25: declared results"),
    (_graph("  %0 = relu(%x) {alpha=?} : f32[2]\n  return %0\n"), r"line 2, column 24: unexpected character '\?'"),
    (_graph("  %0 = relu(%x) : f32[2]\n")[:-1], r"line 3, column 1: expected a value"),
    ("graph 42(%x: f32[2]) -> (f32[2]) {\n  return %x\n}", r"line 1, column 7: expected the graph's name, got '42'"),
    (_graph("  %0, %1 = relu(%x) : f32[2]\n  return %0\n"), r"line 2, column 3: relu: 2 results but 1 types"),
    (_graph("  %0 = relu(%x) : f32[3]\n  return %0\n", "f32[3]"),
     r"node #0 \(relu\): recorded types f32\[3\] differ from the shape rule's f32\[2\]"),
    (_graph("  %0 = frobnicate(%x) : f32[2]\n  return %0\n"), "unknown op 'frobnicate'"),
])
def test_parse_errors_say_where(text, message):
    with pytest.raises(IRError, match=message):
        parse_graph(text)
