"""Load a model from a path: a spec file (``.toml``), an ONNX file (``.onnx``) or ``file.py:ClassName``."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Optional, Union

from ..errors import NNCCError, UnsupportedError
from .nn.module import Module


def load_model(path: Union[str, Path]) -> tuple[Module, Optional[tuple]]:
    """Return (model, input shape or None). The input shape comes from spec and ONNX files."""
    text = str(path)
    if ":" in text and text.split(":", 1)[0].endswith(".py"):
        return load_python_class(text), None
    p = Path(text)
    if not p.exists():
        raise NNCCError(f"model file {text!r} does not exist")
    suffix = p.suffix.lower()
    if suffix == ".toml":
        from .spec import load_spec

        return load_spec(p)
    if suffix == ".onnx":
        from .onnx_import import load_onnx_model

        return load_onnx_model(p)
    raise UnsupportedError(f"{text!r}: unknown model file type {suffix!r} (expected .toml, .onnx or file.py:Class)")


def load_python_class(ref: str) -> Module:
    """``examples/lenet.py:LeNet`` -> a new LeNet()."""
    file, cls_name = ref.rsplit(":", 1)
    p = Path(file)
    if not p.exists():
        raise NNCCError(f"model file {file!r} does not exist")
    name = f"nncc_user_model_{abs(hash(str(p.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, p)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the user's file: report it in one line (NNCC_DEBUG=1 shows the traceback)
        del sys.modules[name]
        raise NNCCError(f"{file}: importing it failed: {type(e).__name__}: {e}") from e
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise NNCCError(f"{file!r} defines no {cls_name!r}")
    try:
        model = cls()
    except Exception as e:
        raise NNCCError(f"{ref}: {cls_name}() failed: {type(e).__name__}: {e}") from e
    if not isinstance(model, Module):
        raise NNCCError(f"{ref}: {cls_name} is not an nncc.nn.Module")
    return model
