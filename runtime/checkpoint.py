"""Checkpoints: one ``.npz`` file (no pickle), written atomically, enough to resume a run bit for bit.

Keys: ``model/<name>`` (parameters and buffers), ``optim/<name>`` (optimizer state, with ``optim/step``) and
``meta/<name>`` (epoch, next batch, learning rate, seeds, history as JSON, and the model's fingerprint: each
tensor's name and shape, so a checkpoint of another model is refused with the tensor that differs).
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and, when it applies, the tensor."""


def fingerprint(state: dict[str, np.ndarray]) -> str:
    return json.dumps({name: list(v.shape) for name, v in state.items()}, sort_keys=True)


def save_checkpoint(path, step, meta: dict[str, Any]) -> None:
    """Write ``step``'s state and ``meta`` to ``path`` atomically: a crash leaves the previous file intact."""
    path = Path(path)
    state = step.state_dict()
    arrays = {f"model/{k}": v for k, v in state.items()}
    arrays.update({f"optim/{k}": v for k, v in step.optimizer_state_dict().items()})
    arrays["meta/json"] = np.array(json.dumps(meta))
    arrays["meta/fingerprint"] = np.array(fingerprint(state))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path, step) -> dict[str, Any]:
    """Restore ``step`` from ``path`` and return the saved ``meta``. Nothing is changed when it fails."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise CheckpointError(f"{path}: not a readable nncc checkpoint ({e})") from None
    if "meta/json" not in arrays or "meta/fingerprint" not in arrays:
        raise CheckpointError(f"{path}: not an nncc checkpoint (no meta/json)")
    _check_fingerprint(path, json.loads(str(arrays["meta/fingerprint"])), step.state_dict())
    model = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    optim = {k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")}
    try:
        step.load_optimizer_state_dict(optim)
    except Exception as e:
        raise CheckpointError(f"{path}: {e}") from None
    step.load_state_dict(model)
    return json.loads(str(arrays["meta/json"]))


def _check_fingerprint(path: Path, saved: dict, state: dict[str, np.ndarray]) -> None:
    for name, v in state.items():
        if name not in saved:
            raise CheckpointError(f"{path}: checkpoint of another model: it has no tensor {name!r}")
        if list(v.shape) != saved[name]:
            raise CheckpointError(f"{path}: checkpoint of another model: tensor {name!r} has shape {saved[name]}, "
                                  f"this model's is {list(v.shape)}")
    extra = sorted(set(saved) - set(state))
    if extra:
        raise CheckpointError(f"{path}: checkpoint of another model: unexpected tensors {extra}")
