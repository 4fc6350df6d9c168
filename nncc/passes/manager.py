"""The pass manager: runs passes in order, verifies after each, and keeps the IR text after each stage."""
from __future__ import annotations

import time
from typing import Callable

from ..errors import NNCCError
from ..ir.graph import Graph
from ..ir.printer import print_graph
from ..ir.verifier import verify

Pass = Callable[[Graph], Graph]


class PassManager:
    """``PassManager([("simplify", simplify_algebra), ...]).run(graph)``; then ``dumps["simplify"]`` is the IR text."""

    def __init__(self, passes: list[tuple[str, Pass]], verify_each: bool = True):
        self.passes = passes
        self.verify_each = verify_each
        self.dumps: dict[str, str] = {}
        self.timings: dict[str, float] = {}

    def run(self, graph: Graph, first_stage: str = "input") -> Graph:
        self.dumps[first_stage] = print_graph(graph)
        for name, fn in self.passes:
            start = time.perf_counter()
            graph = fn(graph)
            if self.verify_each:
                try:
                    verify(graph)
                except NNCCError as e:
                    raise type(e)(f"after pass '{name}': {e}") from e
            self.timings[name] = time.perf_counter() - start
            self.dumps[name] = print_graph(graph)
        return graph
