"""Helpers for writing CUDA lowerings: one thread per unit of work, flat indices unravelled over a shape."""
from __future__ import annotations


def cuda_kernel(name: str, params: str, work: str, body: str, fill: str = "") -> str:
    """A kernel ``name(params)`` whose thread ``i`` in ``[0, work)`` runs ``body`` (indented by 4).

    ``fill`` ("out = 0.0") initialises an output before the launch, for kernels that accumulate with atomics.
    """
    fill_line = f"    # fill: {fill}\n" if fill else ""
    return (f"def {name}({params}):\n    # work: {work}\n{fill_line}    i = cuda.grid(1)\n    if i >= {work}:\n"
            "        return\n" + body)


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
