"""Helpers for writing CUDA lowerings: one thread per unit of work, flat indices unravelled over a shape."""
from __future__ import annotations


def cuda_kernel(name: str, params: str, work: str, body: str) -> str:
    """A kernel ``name(params)`` whose thread ``i`` in ``[0, work)`` runs ``body`` (indented by 4)."""
    return (f"def {name}({params}):\n    # work: {work}\n    i = cuda.grid(1)\n    if i >= {work}:\n        return\n"
            + body)


def unravel(names: list[str], array: str, index: str = "i") -> str:
    """Lines that split the flat ``index`` into the coordinates ``names`` of ``array``'s shape (C order)."""
    lines = [f"    rest = {index}"]
    for axis in reversed(range(1, len(names))):
        lines.append(f"    {names[axis]} = rest % {array}.shape[{axis}]")
        lines.append(f"    rest //= {array}.shape[{axis}]")
    lines.append(f"    {names[0]} = rest")
    return "\n".join(lines) + "\n"
