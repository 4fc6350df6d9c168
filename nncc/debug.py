"""Debug output controlled by ``NNCC_DEBUG`` (or ``nncc --debug N``), printed to stderr as programs compile.

Levels: 1 per-stage compile timings; 2 also the IR after every pass and the kernel plan; 3 also the generated
source.
"""
from __future__ import annotations

import os
import sys


def level() -> int:
    try:
        return int(os.environ.get("NNCC_DEBUG", "0"))
    except ValueError:
        return 0


def format_timings(timings: dict[str, float]) -> str:
    return ", ".join(f"{stage} {seconds * 1e3:.1f} ms" for stage, seconds in timings.items())


def report_program(name: str, program) -> None:
    """Called once a program is built; prints what the current level asks for."""
    lvl = level()
    if lvl >= 2:
        for stage, text in program.dumps.items():
            print(f"--- nncc: {name}: IR after {stage} ---\n{text}", file=sys.stderr)
    if lvl >= 3:
        print(f"--- nncc: {name}: generated source ---\n{program.emitted.source}", file=sys.stderr)


def report_first_call(name: str, program) -> None:
    if level() >= 1:
        print(f"nncc: {name}: {format_timings(program.timings)}", file=sys.stderr)
