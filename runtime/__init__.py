"""The nncc training runtime: optimizers, data loading, the training loop, checkpoints and plots.

Example::

    from runtime import optim, data, Trainer
    train, test = data.mnist("../shared/data/mnist-small")
    Trainer(step, train, test, batch_size=64, epochs=5).fit()
"""
from . import data, optim
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .plot import plot_history
from .trainer import Trainer, TrainingDiverged

__all__ = ["data", "optim", "Trainer", "TrainingDiverged", "save_checkpoint", "load_checkpoint", "CheckpointError",
           "plot_history"]
