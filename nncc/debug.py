"""Debug output controlled by ``NNCC_DEBUG`` (or ``nncc --debug N``), printed to stderr as programs compile.

Levels (each includes the ones below it):

- ``0`` (default): nothing.
- ``1``: per-stage compile timings of every program (each pass, codegen, ``load``: importing the generated
  module), and on its first call the time numba took to compile the kernels (for a CPU module not yet in
  numba's cache, in worker processes too, with the CPU seconds of each kernel) or load them from its cache;
  the CLI also prints the traceback behind an error.
- ``2``: the IR after every pass and the kernel plan.
- ``3``: the generated source.

Example: ``NNCC_DEBUG=1 python train.py`` or ``nncc --debug 2 dump examples/lenet.toml``.
"""
from __future__ import annotations

import os
import sys
import warnings

LEVELS = range(4)


def level() -> int:
    """The level in ``NNCC_DEBUG``; a value that is not 0-3 warns and counts as 0."""
    text = os.environ.get("NNCC_DEBUG", "0").strip() or "0"
    if text.isdigit() and int(text) in LEVELS:
        return int(text)
    warnings.warn(f"NNCC_DEBUG={text!r} is not one of 0, 1, 2, 3; debug output is off", stacklevel=2)
    return 0


def format_timings(timings: dict[str, float]) -> str:
    return ", ".join(f"{stage} {seconds * 1e3:.1f} ms" for stage, seconds in timings.items())


def report_program(name: str, program) -> None:
    """Called once a program is built (passes and codegen done); prints what the current level asks for."""
    lvl = level()
    if lvl >= 1:
        print(f"nncc: {name}: compiled ({format_timings(program.timings)})", file=sys.stderr)
    if lvl >= 2:
        for stage, text in program.dumps.items():
            print(f"--- nncc: {name}: IR after {stage} ---\n{text}", file=sys.stderr)
    if lvl >= 3:
        print(f"--- nncc: {name}: generated source ---\n{program.emitted.source}", file=sys.stderr)


def report_first_call(name: str, program) -> None:
    """Called after a program's first run, which compiled its kernels or loaded them from numba's cache."""
    if level() >= 1:
        print(f"nncc: {name}: first call, numba compile or cache load {program.timings['jit'] * 1e3:.1f} ms",
              file=sys.stderr)
        if program.compile_seconds:
            items = ", ".join(f"{item} {seconds:.2f}" for item, seconds in program.compile_seconds.items())
            print(f"nncc: {name}: CPU seconds each kernel (or the driver) took to compile: {items} (total "
                  f"{sum(program.compile_seconds.values()):.2f})", file=sys.stderr)
