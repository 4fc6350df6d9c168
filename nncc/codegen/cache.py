"""The on-disk kernel cache: generated modules are stored under a content hash and imported from there.

numba's ``cache=True`` needs functions defined in a real file, so each module is written to
``$NNCC_CACHE_DIR`` (default ``~/.cache/nncc``) as ``<hash>/nncc_<hash>.py``; numba keeps its compiled
objects in the ``__pycache__`` beside it, so a second process loads them instead of compiling.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import numba


def cache_root() -> Path:
    return Path(os.environ.get("NNCC_CACHE_DIR") or Path.home() / ".cache" / "nncc")


def source_key(source: str) -> str:
    return hashlib.sha256(f"numba {numba.__version__}\n{source}".encode()).hexdigest()[:24]


def write_atomically(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same directory and rename, so readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_generated(source: str) -> ModuleType:
    """Import the module whose text is ``source``, writing it to the cache first if it is new."""
    key = source_key(source)
    name = f"nncc_{key}"
    if name in sys.modules:
        return sys.modules[name]
    path = cache_root() / key / f"{name}.py"
    new = not path.exists() or path.read_text() != source
    if new:
        write_atomically(path, source.encode())
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
