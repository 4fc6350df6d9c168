"""``nncc compile MODEL -o DIR``: write a compiled forward program as a self-contained Python package.

DIR holds the generated kernels (``kernels.py``), the weights and constants (``weights.npz``,
``constants.npz``), a ``manifest.json`` describing the inputs, and a fixed driver (``__init__.py``) that
needs only numpy and numba (and SciPy for BLAS): nncc is not imported at run time. Model names travel as
JSON data in the manifest; the driver's code is the same for every model.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from .codegen.cache import write_atomically

_DRIVER = '''"""A model compiled by nncc. Needs numpy, numba and scipy only.

    import {package}
    y = {package}.forward(x)          # or: model = {package}.Model("other_weights.npz"); y = model(x)
"""
import json
import os

import numpy as np

from . import kernels

_HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(_HERE, "manifest.json")) as _f:
    MANIFEST = json.load(_f)


class Model:
    """The compiled forward pass with its weights; call it on numpy arrays (the batch size may vary)."""

    def __init__(self, weights=os.path.join(_HERE, "weights.npz")):
        with np.load(weights, allow_pickle=False) as w:
            self.state = {{s["name"]: np.ascontiguousarray(w[s["name"]]) for s in MANIFEST["inputs"]
                          if s["kind"] == "state"}}
        with np.load(os.path.join(_HERE, "constants.npz"), allow_pickle=False) as c:
            self.constants = [c["c%d" % i] for i in range(len(c.files))]
        self.arenas = {{}}

    def __call__(self, *xs):
        data = [s for s in MANIFEST["inputs"] if s["kind"] == "data"]
        if len(xs) != len(data):
            raise ValueError("expected %d input(s), got %d" % (len(data), len(xs)))
        given = dict(zip((s["name"] for s in data), xs))
        args = []
        for spec in MANIFEST["inputs"]:
            args.append(_check(given[spec["name"]], spec) if spec["kind"] == "data" else self.state[spec["name"]])
        args += self.constants
        arena = MANIFEST["arena"]
        if arena is not None:
            batch = args[arena["batch_input"]].shape[arena["batch_axis"]] if arena["batch_input"] is not None else 0
            if batch not in self.arenas:
                self.arenas[batch] = np.empty(arena["per_sample"] * batch + arena["static"], arena["dtype"])
            args.append(self.arenas[batch])
        outs = kernels.run(*args)
        return outs[0] if len(outs) == 1 else outs


def _check(x, spec):
    x = np.asarray(x)
    if x.dtype != np.dtype(spec["dtype"]) or x.ndim != len(spec["shape"]) or any(
            d is not None and d != g for d, g in zip(spec["shape"], x.shape)):
        raise ValueError("input %r: expected %s %s, got %s %s" % (spec["name"], spec["dtype"], spec["shape"],
                                                                 x.dtype, list(x.shape)))
    return np.asarray(x, order="C")


_default = []


def forward(*xs):
    """Run the model with the weights it was compiled with."""
    if not _default:
        _default.append(Model())
    return _default[0](*xs)
'''


def export_package(compiled, directory) -> Path:
    """Write ``compiled``'s forward program to ``directory`` as an importable package; returns the path.

    Example::

        export_package(nncc.compile(LeNet(), input_shape=(None, 1, 28, 28)), "lenet_pkg")
        # elsewhere: import lenet_pkg; lenet_pkg.forward(x)
    """
    directory = Path(directory)
    if not directory.name.isidentifier():
        raise ValueError(f"{directory}: the package directory name must be a Python identifier")
    program = compiled.program("forward")
    state = compiled.state_dict()
    data_names = ["x"] if len(compiled.input_types) == 1 else [f"x{i}" for i in range(len(compiled.input_types))]
    inputs = []
    for v in program.graph.inputs:
        kind = "data" if v.name in data_names else "state"
        shape = [None if isinstance(d, str) else d for d in v.type.shape]
        inputs.append({"name": v.name, "kind": kind, "shape": shape, "dtype": str(v.type.np_dtype)})
    memory = program.emitted.memory
    source = program.emitted.batch_source
    arena = None if memory is None else {
        "dtype": str(memory.dtype_np), "per_sample": memory.per_sample_size, "static": memory.static_size,
        "batch_input": None if source is None else source[0], "batch_axis": None if source is None else source[1]}
    directory.mkdir(parents=True, exist_ok=True)
    write_atomically(directory / "kernels.py", program.emitted.source.encode())
    write_atomically(directory / "manifest.json",
                     json.dumps({"inputs": inputs, "arena": arena, "graph": program.graph.name}, indent=1).encode())
    _save_npz(directory / "weights.npz", {i["name"]: state[i["name"]] for i in inputs if i["kind"] == "state"})
    _save_npz(directory / "constants.npz", {f"c{i}": c for i, c in enumerate(program.constants)})
    write_atomically(directory / "__init__.py", _DRIVER.format(package=directory.name).encode())
    write_atomically(directory / "README.md", (
        f"# {directory.name}\n\nCompiled by nncc; needs only numpy, numba and scipy.\n\n"
        f"```python\nimport {directory.name}\ny = {directory.name}.forward(x)   # x: "
        + ", ".join(f"{i['dtype']} {i['shape']}" for i in inputs if i["kind"] == "data")
        + " (None: any batch size)\n```\n").encode())
    return directory


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomically(path, buffer.getvalue())
