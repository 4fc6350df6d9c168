"""Helpers for writing CUDA lowerings: a grid-stride loop over the units of work, flat indices unravelled."""
from __future__ import annotations


def cuda_kernel(name: str, params: str, work: str, body: str, fill: str = "") -> str:
    """A kernel ``name(params)`` that runs ``body`` (written indented by 4) for every ``i`` in ``[0, work)``.

    Each thread strides over the work by the grid's size, so the launcher may cap the grid: on a GPU at a few
    waves of blocks, on numba's simulator (one Python thread per CUDA thread) at a handful of threads.

    ``fill`` ("out = 0.0") initialises an output before the launch, for kernels that accumulate with atomics.
    """
    fill_line = f"    # fill: {fill}\n" if fill else ""
    loop = f"    for i in range(cuda.grid(1), {work}, cuda.gridsize(1)):\n"
    return f"def {name}({params}):\n    # work: {work}\n{fill_line}{loop}" + _indent(body)


def _indent(body: str) -> str:
    return "\n".join("    " + line if line.strip() else line for line in body.split("\n"))


#: elements each thread of a split reduction sums before one atomic add
CHUNK = 256


def unravel(names: list[str], array: str, index: str = "i") -> str:
    """Lines that split the flat ``index`` into the coordinates ``names`` of ``array``'s shape (C order)."""
    lines = [f"    rest = {index}"]
    for axis in reversed(range(1, len(names))):
        lines.append(f"    {names[axis]} = rest % {array}.shape[{axis}]")
        lines.append(f"    rest //= {array}.shape[{axis}]")
    lines.append(f"    {names[0]} = rest")
    return "\n".join(lines) + "\n"
