"""The training loop: a progress bar, per-epoch train and test metrics, NaN stop, checkpoints and resume."""
from __future__ import annotations

import math
from contextlib import closing
from typing import Any, Callable, Iterator, Optional

import numpy as np

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data import DataError, DataLoader, Dataset

# what a checkpoint's run must share with the resuming Trainer for "the same batches, in the same order" to hold
_RESUME_INVARIANTS = ("batch_size", "train_size", "shuffle")
_META_KEYS = ("epoch", "next_batch", "seed", "history", "epoch_sums", "schedule")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message says where."""


class Trainer:
    """Train a compiled step (``nncc.compile(model, loss=..., optimizer=...)``) on a Dataset.

    Example::

        history = Trainer(step, train, test, batch_size=64, epochs=5, checkpoint="ckpt.npz").fit()
        # [{"epoch": 1, "train_loss": ..., "train_accuracy": ..., "test_loss": ..., "test_accuracy": ...,
        #   "lr": ...}, ...]

    ``checkpoint`` is written at the end of every epoch (and every ``checkpoint_every`` steps); ``resume``
    continues from a checkpoint exactly where it stopped, mid-epoch included: the model, optimizer, learning
    rate, schedule, shuffle seed and dropout seed all come from the checkpoint. ``schedule`` (e.g.
    ``optim.StepLR(step, 2)``) is stepped after every epoch. ``max_steps`` stops ``fit`` after that many steps
    (a planned interruption, as if the process were killed: no checkpoint is written at that point).
    ``prefetch`` batches are prepared ahead on a background thread while a step runs (gathered and, for a CUDA
    step, copied to the device); 0 turns it off. It changes neither the batches nor their order.
    """

    def __init__(self, step, train: Dataset, test: Optional[Dataset] = None, batch_size: int = 64, epochs: int = 1,
                 shuffle: bool = True, seed: int = 0, checkpoint=None, checkpoint_every: Optional[int] = None,
                 resume=None, schedule=None, progress: bool = True, log: Callable[[str], None] = print,
                 max_steps: Optional[int] = None, prefetch: int = 1):
        if len(train) == 0:
            raise DataError("the training set is empty")
        if test is not None and len(test) == 0:
            raise DataError("the test set is empty")
        if checkpoint_every is not None and (checkpoint is None or checkpoint_every < 1):
            raise ValueError(f"checkpoint_every={checkpoint_every} needs checkpoint=<path> and a positive count")
        self.step, self.train, self.test = step, train, test
        self.batch_size, self.prefetch = batch_size, prefetch
        self.loader = self._loader(train, shuffle=shuffle, seed=seed)
        self.epochs, self.seed, self.shuffle = epochs, seed, shuffle
        self.checkpoint, self.checkpoint_every, self.resume = checkpoint, checkpoint_every, resume
        self.schedule, self.progress, self.log, self.max_steps = schedule, progress, log, max_steps
        self.history: list[dict[str, Any]] = []
        self.epoch, self.next_batch = 0, 0  # the position in the run: the next batch to train on
        self._sums = (0.0, 0, 0)  # loss * n, correct, n of the current epoch so far
        self._classes = _class_count(step)
        step.seed = seed

    def _loader(self, dataset: Dataset, **kwargs) -> DataLoader:
        """A loader of (x, y) staged on the step's device, with the host labels for the accuracy: (x, y, labels)."""
        device = self.step.device

        def stage(batch):
            return device.to_device(batch[0]), device.to_device(batch[1]), batch[1]

        return DataLoader(dataset, self.batch_size, prefetch=self.prefetch, stage=stage, **kwargs)

    # ---- state -----------------------------------------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "next_batch": self.next_batch, "batches_done": self.step.steps,
                "seed": self.seed, "batch_size": self.batch_size, "train_size": len(self.train),
                "shuffle": self.shuffle, "history": self.history, "epoch_sums": list(self._sums),
                "schedule": self.schedule.state_dict() if self.schedule else None}

    def save(self, path) -> None:
        """Write a checkpoint of the run as it stands (see ``runtime.checkpoint``)."""
        save_checkpoint(path, self.step, self._meta())

    def _restore(self, path) -> None:
        meta = load_checkpoint(path, self.step, check=lambda meta: self._check_meta(meta, path))
        self.epoch, self.next_batch, self.seed = int(meta["epoch"]), int(meta["next_batch"]), int(meta["seed"])
        self.history, self._sums = list(meta["history"]), tuple(meta["epoch_sums"])
        self.loader.seed = self.seed
        if self.schedule and meta["schedule"]:
            lr = self.step.lr  # the checkpoint's, which wins over the schedule's formula (it may have been set by hand)
            self.schedule.load_state_dict(meta["schedule"])
            self.step.lr = lr
        self.log(f"resumed from {path}: epoch {self.epoch + 1}, batch {self.next_batch} (step {self.step.steps})")

    def _check_meta(self, meta: dict[str, Any], path) -> None:
        missing = [k for k in (*_RESUME_INVARIANTS, *_META_KEYS) if k not in meta]
        if missing:
            raise CheckpointError(f"{path}: no trainer state {missing} in meta/json (written by save_checkpoint "
                                  f"outside a Trainer?)")
        ours = self._meta()
        for key in _RESUME_INVARIANTS:
            if meta[key] != ours[key]:
                raise CheckpointError(f"{path}: the checkpoint's run had {key}={meta[key]}, this one has "
                                      f"{key}={ours[key]}; resume with the same {key} (or start afresh)")

    # ---- loop -------------------------------------------------------------------------------------------------
    def fit(self) -> list[dict[str, Any]]:
        """Train to ``epochs`` and return the history: one dict of metrics per epoch."""
        _check_labels(self.train, "train labels", self._classes)
        if self.test is not None:
            _check_labels(self.test, "test labels", self._classes)
        if self.resume:
            self._restore(self.resume)
        steps_done = 0
        while self.epoch < self.epochs:
            with closing(self._epoch_batches()) as batches:  # closes the progress bar on every way out
                for x, y, labels in batches:
                    self._train_batch(x, y, labels)
                    steps_done += 1
                    self.next_batch += 1
                    if self.checkpoint_every and self.step.steps % self.checkpoint_every == 0:
                        self.save(self.checkpoint)
                    if self.max_steps is not None and steps_done >= self.max_steps:
                        return self.history
            self._end_epoch()
        return self.history

    def _epoch_batches(self) -> Iterator[tuple[Any, Any, np.ndarray]]:
        with closing(self.loader.batches(self.epoch, self.next_batch)) as batches:  # stops the prefetch thread
            if not self.progress:
                yield from batches
                return
            from tqdm import tqdm

            # disable=None: no bar when output is not a terminal; leave=False: the epoch's summary replaces it
            with tqdm(batches, total=len(self.loader), initial=self.next_batch, leave=False, disable=None,
                      desc=f"epoch {self.epoch + 1}/{self.epochs}", unit="batch") as self._bar:
                yield from self._bar

    def _train_batch(self, x: Any, y: Any, labels: np.ndarray) -> None:
        loss = self.step.train_step(x, y)
        if not math.isfinite(loss):
            raise TrainingDiverged(f"loss became {loss} at epoch {self.epoch + 1}, batch {self.next_batch} "
                                   f"(step {self.step.steps}); try a lower learning rate (lr={self.step.lr})")
        total, correct, n = self._sums
        if self._classes is not None:
            correct += int((np.asarray(self.step.last_output).argmax(axis=1) == labels).sum())
        self._sums = (total + loss * len(labels), correct, n + len(labels))
        if self.progress:
            self._bar.set_postfix(loss=f"{self._sums[0] / self._sums[2]:.4f}", refresh=False)

    def _end_epoch(self) -> None:
        total, correct, n = self._sums
        record = {"epoch": self.epoch + 1, "train_loss": total / n, "lr": self.step.lr}
        if self._classes is not None:
            record["train_accuracy"] = correct / n
        if self.test is not None:
            record.update(zip(("test_loss", "test_accuracy"), self.evaluate(self.test)))
        self.history.append(record)
        self.log(_format(record))
        self.epoch, self.next_batch, self._sums = self.epoch + 1, 0, (0.0, 0, 0)
        if self.schedule:
            self.schedule.step()
        if self.checkpoint:
            self.save(self.checkpoint)

    def evaluate(self, dataset: Dataset) -> tuple:
        """Mean loss and (for class labels) accuracy in eval mode, in batches of ``batch_size``."""
        total, correct = 0.0, 0
        for x, y, labels in self._loader(dataset).batches(0):
            loss, logits = self.step.evaluate(x, y)
            total += loss * len(labels)
            if self._classes is not None:
                correct += int((np.asarray(logits).argmax(axis=1) == labels).sum())
        mean = total / len(dataset)
        return (mean, correct / len(dataset)) if self._classes is not None else (mean,)


def _class_count(step) -> Optional[int]:
    """The number of classes when the step's loss takes class indices (cross-entropy, NLL), else None."""
    if getattr(step.loss, "target_dtype", None) != "i64":
        return None
    return int(step.program("forward").graph.outputs[0].type.shape[-1])


def _check_labels(dataset: Dataset, name: str, classes: Optional[int]) -> None:
    """Refuse bad class labels once, before any step, naming the tensor and the first bad sample."""
    if classes is None:
        return
    labels = np.asarray(dataset.labels)
    if labels.dtype != np.int64:
        raise DataError(f"{name}: class indices must be int64, got {labels.dtype} (use labels.astype(np.int64)"
                        f"{' after checking they are whole numbers' if labels.dtype.kind == 'f' else ''})")
    bad = np.flatnonzero((labels < 0) | (labels >= classes))
    if bad.size:
        raise DataError(f"{name}: label {labels[bad[0]]} at index {bad[0]} is out of range [0, {classes}) "
                        f"for a model with {classes} outputs ({bad.size} bad label(s))")


def _format(record: dict[str, Any]) -> str:
    text = f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}"
    if "train_accuracy" in record:
        text += f", train accuracy {100 * record['train_accuracy']:.2f}%"
    if "test_loss" in record:
        text += f", test loss {record['test_loss']:.4f}"
    if "test_accuracy" in record:
        text += f", test accuracy {100 * record['test_accuracy']:.2f}%"
    return text
