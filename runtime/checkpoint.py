"""Checkpoints: one ``.npz`` file (no pickle), written atomically, enough to resume a run bit for bit.

Keys: ``model/<name>`` (parameters and buffers), ``optim/<name>`` (optimizer state, with ``optim/step``, the
step count that also drives the dropout masks), ``meta/lr`` and ``meta/dropout_seed`` (the compiled step's
learning rate and dropout seed), ``meta/json`` (the caller's state: the Trainer's epoch, next batch, shuffle
seed, schedule and history) and ``meta/fingerprint`` (each tensor's name and shape, so that a checkpoint of
another model is refused with the tensor that differs).

Example::

    save_checkpoint("ckpt.npz", step, {"epoch": 3})
    meta = load_checkpoint("ckpt.npz", step)   # -> {"epoch": 3}
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

_META_KEYS = ("meta/json", "meta/fingerprint", "meta/lr", "meta/dropout_seed", "optim/step")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and, when it applies, the tensor."""


def fingerprint(state: dict[str, np.ndarray]) -> dict[str, list[int]]:
    """Each tensor's name and shape: what must match for a checkpoint to belong to a model."""
    return {name: list(v.shape) for name, v in state.items()}


def save_checkpoint(path, step, meta: dict[str, Any]) -> None:
    """Write ``step``'s state and ``meta`` (JSON-serialisable) to ``path`` atomically: the file is written
    next to ``path``, flushed to disk and renamed over it, so a crash leaves the previous checkpoint intact."""
    path = Path(path)
    state = step.state_dict()
    arrays = {f"model/{k}": v for k, v in state.items()}
    arrays.update({f"optim/{k}": v for k, v in step.optimizer_state_dict().items()})
    arrays["meta/json"] = np.array(json.dumps(meta))
    arrays["meta/fingerprint"] = np.array(json.dumps(fingerprint(state), sort_keys=True))
    arrays["meta/lr"] = np.array(step.lr, np.float64)
    arrays["meta/dropout_seed"] = np.array(step.seed, np.int64)
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
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); directories cannot be opened for fsync on Windows."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path, step, check: Optional[Callable[[dict[str, Any]], None]] = None) -> dict[str, Any]:
    """Restore ``step`` from ``path`` and return the saved ``meta``. When it fails, ``step`` is unchanged.

    ``check(meta)``, when given, runs before anything is changed and may refuse the checkpoint by raising.
    """
    path = Path(path)
    arrays = _read(path)
    meta = _parse_json(path, arrays, "meta/json")
    _check_fingerprint(path, _parse_json(path, arrays, "meta/fingerprint"), step.state_dict())
    if check is not None:
        check(meta)
    model = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    optim = {k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")}
    before = (step.state_dict(), step.optimizer_state_dict(), step.lr, step.seed)
    try:
        step.load_optimizer_state_dict(optim)
        step.load_state_dict(model)
        step.lr, step.seed = float(arrays["meta/lr"]), int(arrays["meta/dropout_seed"])
    except Exception as e:
        step.load_state_dict(before[0])
        step.load_optimizer_state_dict(before[1])
        step.lr, step.seed = before[2], before[3]
        raise CheckpointError(f"{path}: {e}") from None
    return meta


def _read(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise CheckpointError(f"{path}: not a readable nncc checkpoint ({e})") from None
    missing = [k for k in _META_KEYS if k not in arrays]
    if missing:
        raise CheckpointError(f"{path}: not an nncc checkpoint (no {', '.join(missing)})")
    return arrays


def _parse_json(path: Path, arrays: dict[str, np.ndarray], key: str) -> Any:
    try:
        return json.loads(str(arrays[key]))
    except ValueError as e:
        raise CheckpointError(f"{path}: corrupt {key} ({e})") from None


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
