"""IR text parser: the inverse of ``printer.print_graph``. Errors name the line and column."""
from __future__ import annotations

import json
import re

import numpy as np

from ..errors import IRError
from .graph import Graph, Node, Value
from .types import DTYPES, TensorType

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<value>%(?:[A-Za-z0-9_.]+|"(?:[^"\\]|\\.)*"))
      | (?P<number>-?(?:\d+\.\d*(?:e[-+]?\d+)?|\d+e[-+]?\d+|\d+|inf\b)|nan\b)
      | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<arrow>->)
      | (?P<punct>[()\[\]{}<>,:=])
    )""",
    re.VERBOSE,
)


class _Tokens:
    def __init__(self, text: str):
        self.text = text
        self.items: list[tuple[str, str, int]] = []
        pos = 0
        while True:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos >= len(text):
                break
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                self.fail(pos, f"unexpected character {text[pos]!r}")
            self.items.append((m.lastgroup, m.group(m.lastgroup), m.start(m.lastgroup)))
            pos = m.end()
        self.i = 0

    def fail(self, pos: int, msg: str):
        line = self.text.count("\n", 0, pos) + 1
        col = pos - (self.text.rfind("\n", 0, pos) + 1) + 1
        raise IRError(f"IR parse error at line {line}, column {col}: {msg}")

    def peek(self) -> tuple[str, str, int]:
        return self.items[self.i] if self.i < len(self.items) else ("eof", "", len(self.text))

    def next(self) -> tuple[str, str, int]:
        tok = self.peek()
        self.i += 1
        return tok

    def expect(self, text: str) -> None:
        kind, got, pos = self.next()
        if got != text:
            self.fail(pos, f"expected {text!r}, got {got or 'end of input'!r}")

    def accept(self, text: str) -> bool:
        if self.peek()[1] == text:
            self.i += 1
            return True
        return False

    def take(self, kind: str) -> str:
        k, got, pos = self.next()
        if k != kind:
            self.fail(pos, f"expected a {kind}, got {got or 'end of input'!r}")
        return got


def _value_name(token: str) -> str:
    body = token[1:]
    return json.loads(body) if body.startswith('"') else body


def parse_graph(text: str) -> Graph:
    """Parse the printer's text format back into a Graph (types are taken as written, then verified)."""
    from .verifier import verify

    t = _Tokens(text)
    if t.take("word") != "graph":
        t.fail(0, "expected 'graph'")
    kind, name, pos = t.next()
    if kind == "string":  # names that are not plain words are printed JSON-quoted
        name = json.loads(name)
    elif kind != "word":
        t.fail(pos, f"expected the graph's name, got {name or 'end of input'!r}")
    env: dict[str, Value] = {}
    inputs = []
    t.expect("(")
    while not t.accept(")"):
        vname = _value_name(t.take("value"))
        t.expect(":")
        v = Value(_parse_type(t), vname)
        env[vname] = v
        inputs.append(v)
        t.accept(",")
    t.expect("->")
    t.expect("(")
    result_pos = t.peek()[2]
    declared = []
    while not t.accept(")"):
        declared.append(_parse_type(t))
        t.accept(",")
    t.expect("{")
    nodes: list[Node] = []
    while True:
        kind, word, pos = t.peek()
        if word == "return":
            t.next()
            outputs = [_lookup(t, env)]
            while t.accept(","):
                outputs.append(_lookup(t, env))
            t.expect("}")
            break
        nodes.append(_parse_node(t, env))
    if declared != [v.type for v in outputs]:
        t.fail(result_pos, f"declared results ({', '.join(map(str, declared))}) differ from the returned values' "
                           f"types ({', '.join(str(v.type) for v in outputs)})")
    graph = Graph(name, inputs, nodes, outputs)
    verify(graph)
    return graph


def _lookup(t: _Tokens, env: dict[str, Value]) -> Value:
    _, tok, pos = t.peek()
    name = _value_name(t.take("value"))
    if name not in env:
        t.fail(pos, f"use of undefined value {tok}")
    return env[name]


def _parse_node(t: _Tokens, env: dict[str, Value]) -> Node:
    start = t.peek()[2]
    lhs = [_value_name(t.take("value"))]
    while t.accept(","):
        lhs.append(_value_name(t.take("value")))
    t.expect("=")
    op = t.take("word")
    t.expect("(")
    args = []
    while not t.accept(")"):
        args.append(_lookup(t, env))
        t.accept(",")
    attrs = {}
    if t.accept("{"):
        while not t.accept("}"):
            key = t.take("word")
            t.expect("=")
            attrs[key] = _parse_attr(t)
            t.accept(",")
    t.expect(":")
    types = [_parse_type(t)]
    while t.accept(","):
        types.append(_parse_type(t))
    label = ""
    if t.peek()[1] == "loc":
        t.next()
        t.expect("(")
        label = json.loads(t.take("string"))
        t.expect(")")
    if len(types) != len(lhs):
        t.fail(start, f"{op}: {len(lhs)} results but {len(types)} types")
    node = Node(op, args, attrs, [], label)
    for vname, ty in zip(lhs, types):
        out = Value(ty, None, node)
        node.outputs.append(out)
        env[vname] = out
    return node


def _parse_type(t: _Tokens) -> TensorType:
    _, dtype, pos = t.peek()
    t.take("word")
    if dtype not in DTYPES:
        t.fail(pos, f"unknown dtype {dtype!r}")
    t.expect("[")
    dims: list = []
    while not t.accept("]"):
        kind, tok, _ = t.next()
        dims.append(int(tok) if kind == "number" else tok)
        t.accept(",")
    return TensorType(dtype, tuple(dims))


def _parse_attr(t: _Tokens):
    kind, tok, pos = t.next()
    if kind == "number":
        return float(tok) if any(c in tok for c in ".ein") else int(tok)
    if kind == "string":
        return json.loads(tok)
    if tok in ("true", "false"):
        return tok == "true"
    if tok == "[":
        items = []
        while not t.accept("]"):
            items.append(_parse_attr(t))
            t.accept(",")
        return items
    if tok == "dense":
        t.expect("<")
        ty = _parse_type(t)
        t.expect(">")
        flat = _parse_attr(t)
        return np.array(flat, dtype=ty.np_dtype).reshape(ty.shape)
    t.fail(pos, f"unexpected attribute value {tok!r}")
