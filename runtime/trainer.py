"""The training loop: a progress bar, per-epoch train and test metrics, NaN stop, checkpoints and resume."""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import numpy as np

from .checkpoint import load_checkpoint, save_checkpoint
from .data import DataLoader, Dataset


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message says where."""


class Trainer:
    """Train a compiled step (``nncc.compile(model, loss=..., optimizer=...)``) on a Dataset.

    Example::

        history = Trainer(step, train, test, batch_size=64, epochs=5, checkpoint="ckpt.npz").fit()

    ``checkpoint`` is written at the end of every epoch (and every ``checkpoint_every`` steps); ``resume``
    continues from a checkpoint exactly where it stopped, mid-epoch included. ``max_steps`` stops after that
    many steps in total (a planned interruption).
    """

    def __init__(self, step, train: Dataset, test: Optional[Dataset] = None, batch_size: int = 64, epochs: int = 1,
                 shuffle: bool = True, seed: int = 0, checkpoint=None, checkpoint_every: Optional[int] = None,
                 resume=None, schedule=None, progress: bool = True, log: Callable[[str], None] = print,
                 max_steps: Optional[int] = None):
        self.step, self.train, self.test = step, train, test
        self.loader = DataLoader(train, batch_size, shuffle=shuffle, seed=seed)
        self.batch_size, self.epochs, self.seed = batch_size, epochs, seed
        self.checkpoint, self.checkpoint_every, self.resume = checkpoint, checkpoint_every, resume
        self.schedule, self.progress, self.log, self.max_steps = schedule, progress, log, max_steps
        self.history: list[dict[str, Any]] = []
        self.epoch, self.next_batch = 0, 0
        self._sums = (0.0, 0, 0)  # loss * n, correct, n of the current epoch so far
        step.seed = seed

    # ---- state -----------------------------------------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "next_batch": self.next_batch, "lr": self.step.lr, "seed": self.seed,
                "history": self.history, "epoch_sums": list(self._sums),
                "schedule": self.schedule.state_dict() if self.schedule else None}

    def save(self, path) -> None:
        save_checkpoint(path, self.step, self._meta())

    def _restore(self, path) -> None:
        meta = load_checkpoint(path, self.step)
        self.epoch, self.next_batch = meta["epoch"], meta["next_batch"]
        self.step.lr, self.seed = meta["lr"], meta["seed"]
        self.step.seed = self.loader.seed = self.seed
        self.history = meta["history"]
        self._sums = tuple(meta["epoch_sums"])
        if self.schedule and meta["schedule"]:
            self.schedule.load_state_dict(meta["schedule"])
        self.log(f"resumed from {path}: epoch {self.epoch + 1}, batch {self.next_batch}")

    # ---- loop -------------------------------------------------------------------------------------------------
    def fit(self) -> list[dict[str, Any]]:
        if self.resume:
            self._restore(self.resume)
        steps_done = 0
        while self.epoch < self.epochs:
            for x, y in self._epoch_batches():
                self._train_batch(x, y)
                steps_done += 1
                self.next_batch += 1
                if self.checkpoint and self.checkpoint_every and steps_done % self.checkpoint_every == 0:
                    self.save(self.checkpoint)
                if self.max_steps is not None and steps_done >= self.max_steps:
                    return self.history
            self._end_epoch()
        return self.history

    def _epoch_batches(self):
        batches = self.loader.batches(self.epoch, self.next_batch)
        if not self.progress:
            return batches
        from tqdm import tqdm

        self._bar = tqdm(batches, total=len(self.loader), initial=self.next_batch, leave=False, disable=None,
                         desc=f"epoch {self.epoch + 1}/{self.epochs}", unit="batch")  # disable=None: off without a tty
        return self._bar

    def _train_batch(self, x: np.ndarray, y: np.ndarray) -> None:
        loss = self.step.train_step(x, y)
        if not math.isfinite(loss):
            raise TrainingDiverged(f"loss became {loss} at epoch {self.epoch + 1}, batch {self.next_batch} "
                                   f"(step {self.step.steps}); try a lower learning rate (lr={self.step.lr})")
        total, correct, n = self._sums
        predicted = np.asarray(self.step.last_output).argmax(axis=1)
        self._sums = (total + loss * len(y), correct + int((predicted == y).sum()), n + len(y))
        if self.progress:
            self._bar.set_postfix(loss=f"{self._sums[0] / self._sums[2]:.4f}", refresh=False)

    def _end_epoch(self) -> None:
        total, correct, n = self._sums
        record = {"epoch": self.epoch + 1, "train_loss": total / max(n, 1), "train_accuracy": correct / max(n, 1),
                  "lr": self.step.lr}
        if self.test is not None:
            record["test_loss"], record["test_accuracy"] = self.evaluate(self.test)
        self.history.append(record)
        self.log(_format(record))
        self.epoch, self.next_batch, self._sums = self.epoch + 1, 0, (0.0, 0, 0)
        if self.schedule:
            self.schedule.step()
        if self.checkpoint:
            self.save(self.checkpoint)

    def evaluate(self, dataset: Dataset) -> tuple[float, float]:
        """Mean loss and accuracy in eval mode, in batches of ``batch_size``."""
        total, correct = 0.0, 0
        for x, y in DataLoader(dataset, self.batch_size).batches(0):
            loss, logits = self.step.evaluate(x, y)
            total += loss * len(y)
            correct += int((np.asarray(logits).argmax(axis=1) == y).sum())
        return total / len(dataset), correct / len(dataset)


def _format(record: dict[str, Any]) -> str:
    text = (f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}, "
            f"train accuracy {100 * record['train_accuracy']:.2f}%")
    if "test_loss" in record:
        text += f", test loss {record['test_loss']:.4f}, test accuracy {100 * record['test_accuracy']:.2f}%"
    return text
