"""``nncc compile MODEL -o DIR``: write a compiled forward program as a self-contained Python package.

DIR holds:

- ``kernels.py``: the generated numba source of the forward (inference) program, as ``nncc.compile`` made it;
- ``weights.npz``: the parameters and buffers, under their PyTorch names;
- ``constants.npz``: arrays the generated code takes as arguments (e.g. folded constants);
- ``manifest.json``: the inputs (names, shapes with ``null`` for the batch, dtypes), the memory arena's size
  and the driver's entry point;
- ``__init__.py``: a fixed driver, ``forward(x)`` and ``Model(weights)``, that checks inputs and calls the
  kernels; it needs only numpy and numba, never nncc;
- ``README.md``: how to call it.

Names from the model (layers, parameters, the graph) travel only as data: JSON in the manifest, array names
in the ``.npz`` files, and escaped comments in ``kernels.py``. The driver's code is the same for every model.
"""
from __future__ import annotations

import io
import json
import keyword
import zipfile
from pathlib import Path
from typing import Union

import numba
import numpy as np

from .codegen.cache import write_atomically
from .errors import NNCCError, UnsupportedError

_DRIVER = '''"""A model compiled by nncc (see README.md). Needs numpy and numba only.

    y = forward(x)                    # the weights it was compiled with
    model = Model("other.npz")        # or weights of the same shapes, e.g. from `nncc train --out`
    y = model(x)

The first call compiles the kernels (numba caches them in __pycache__ when the directory is writable).
"""
import json
import os

import numpy as np

from . import kernels

_HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(_HERE, "manifest.json")) as _f:
    MANIFEST = json.load(_f)
_DATA = [s for s in MANIFEST["inputs"] if s["kind"] == "data"]
_STATE = [s for s in MANIFEST["inputs"] if s["kind"] == "state"]
_RUN = getattr(kernels, MANIFEST["entry"])


class Model:
    """The compiled forward pass with its weights; call it on numpy arrays (the batch size may vary)."""

    def __init__(self, weights=os.path.join(_HERE, "weights.npz")):
        self.state = _load_state(weights)
        with np.load(os.path.join(_HERE, "constants.npz"), allow_pickle=False) as c:
            self.constants = [c["c%d" % i] for i in range(len(c.files))]
        self.arenas = {}  # batch size -> scratch memory of the intermediate values

    def __call__(self, *xs):
        if len(xs) != len(_DATA):
            raise ValueError("expected %d input(s), got %d" % (len(_DATA), len(xs)))
        given = {s["name"]: _check(x, s) for x, s in zip(xs, _DATA)}
        args = [given[s["name"]] if s["kind"] == "data" else self.state[s["name"]] for s in MANIFEST["inputs"]]
        args += self.constants
        arena = MANIFEST["arena"]
        if arena is not None:
            batch = 0 if arena["batch_input"] is None else args[arena["batch_input"]].shape[arena["batch_axis"]]
            if batch not in self.arenas:
                self.arenas[batch] = np.empty(arena["per_sample"] * batch + arena["static"], arena["dtype"])
            args.append(self.arenas[batch])
        outs = _RUN(*args)
        return outs[0] if len(outs) == 1 else outs


def _load_state(path):
    with np.load(path, allow_pickle=False) as w:
        missing = [s["name"] for s in _STATE if s["name"] not in w.files]
        extra = sorted(set(w.files) - {s["name"] for s in _STATE})
        if missing or extra:
            raise ValueError("%s: missing tensors %s, unexpected tensors %s" % (path, missing, extra))
        state = {}
        for s in _STATE:
            array = w[s["name"]]
            if list(array.shape) != s["shape"]:
                raise ValueError("%s: tensor %r has shape %s, expected %s"
                                 % (path, s["name"], list(array.shape), s["shape"]))
            state[s["name"]] = np.ascontiguousarray(array, dtype=s["dtype"])
        return state


def _check(x, spec):
    x = np.asarray(x)
    if x.dtype != np.dtype(spec["dtype"]) or x.ndim != len(spec["shape"]) or any(
            d is not None and d != g for d, g in zip(spec["shape"], x.shape)):
        raise ValueError("input %r: expected %s %s (None: any size), got %s %s"
                         % (spec["name"], spec["dtype"], spec["shape"], x.dtype, list(x.shape)))
    return np.ascontiguousarray(x)


_default = []


def forward(*xs):
    """Run the model with the weights it was compiled with."""
    if not _default:
        _default.append(Model())
    return _default[0](*xs)
'''


def export_package(compiled, directory: Union[str, Path]) -> Path:
    """Write ``compiled``'s forward program to ``directory`` as an importable package; returns the path.

    The directory's name is the package's, so it must be a Python identifier. Example::

        export_package(nncc.compile(LeNet(), input_shape=(None, 1, 28, 28)), "out/lenet_pkg")
        # elsewhere, with out/ on sys.path: import lenet_pkg; y = lenet_pkg.forward(x)
    """
    directory = Path(directory)
    if not directory.name.isidentifier() or keyword.iskeyword(directory.name):
        raise NNCCError(f"{directory}: the package directory's name must be a Python identifier (it is imported "
                        f"by that name), e.g. lenet_pkg")
    if compiled.target != "cpu":
        raise UnsupportedError(f"a package holds CPU kernels; compile with target='cpu', not {compiled.target!r}")
    program = compiled.program("forward")
    manifest = _manifest(compiled, program)
    state = compiled.state_dict()
    directory.mkdir(parents=True, exist_ok=True)
    write_atomically(directory / "kernels.py", program.emitted.source.encode())
    write_atomically(directory / "manifest.json", json.dumps(manifest, indent=1).encode())
    save_npz(directory / "weights.npz", {s["name"]: state[s["name"]] for s in manifest["inputs"]
                                          if s["kind"] == "state"})
    save_npz(directory / "constants.npz", {f"c{i}": c for i, c in enumerate(program.constants)})
    write_atomically(directory / "__init__.py", _DRIVER.encode())
    write_atomically(directory / "README.md", _readme(directory.name, manifest).encode())
    return directory


def _manifest(compiled, program) -> dict:
    # the data inputs are named as the tracer names them; every other graph input is a parameter or buffer
    data_names = ["x"] if len(compiled.input_types) == 1 else [f"x{i}" for i in range(len(compiled.input_types))]
    inputs = [{"name": v.name, "kind": "data" if v.name in data_names else "state",
               "shape": [None if isinstance(d, str) else d for d in v.type.shape], "dtype": str(v.type.np_dtype)}
              for v in program.graph.inputs]
    memory, source = program.emitted.memory, program.emitted.batch_source
    arena = None if memory is None else {
        "dtype": str(memory.dtype_np), "per_sample": memory.per_sample_size, "static": memory.static_size,
        "batch_input": None if source is None else source[0], "batch_axis": None if source is None else source[1]}
    # the kernels' driver uses numba's calling convention (codegen/cpu/native_calls.py): say which numba made them
    return {"graph": program.graph.name, "entry": program.emitted.entry, "inputs": inputs, "arena": arena,
            "numba": numba.__version__}


def _readme(package: str, manifest: dict) -> str:
    data = ", ".join(f"{s['name']}: {s['dtype']} {s['shape']}" for s in manifest["inputs"] if s["kind"] == "data")
    args = ", ".join(s["name"] for s in manifest["inputs"] if s["kind"] == "data")
    return (f"# {package}\n\nA model compiled by nncc: its forward (inference) pass only, no training. Needs only "
            f"numpy and numba; nncc is not imported. Generated with numba {manifest['numba']}: the kernels "
            f"call each other in numba's internal calling convention, so use that numba version.\n\n"
            f"```python\nimport {package}                  # with this directory's parent on sys.path\n"
            f"y = {package}.forward({args})          # {data} (None: any batch size)\n"
            f"m = {package}.Model(\"trained.npz\")  # other weights with the same names and shapes\n```\n\n"
            f"Files: `kernels.py` (the generated numba kernels and their driver `run`), `weights.npz` "
            f"(parameters and buffers), `constants.npz`, `manifest.json` (inputs, memory arena), "
            f"`__init__.py` (checks inputs, loads the weights, calls `kernels.run`). The first call compiles the "
            f"kernels; numba caches them in `__pycache__/` when this directory is writable. Convolutions and max-pools "
            f"split the batch across {numba.config.NUMBA_NUM_THREADS} numba threads (the exporting machine's count) "
            f"and call numpy's BLAS in each: keep that BLAS to one thread (`OPENBLAS_NUM_THREADS=1`, or "
            f"threadpoolctl), as nncc does, or its threads and numba's compete for the cores.\n")


def save_npz(path: Union[str, Path], arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` without its keyword arguments, so any tensor name works (even "file"), written atomically."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w") as f:
                np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)
    write_atomically(Path(path), buffer.getvalue())
