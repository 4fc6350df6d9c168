"""The nncc training runtime: optimizers, data loading, the training loop, checkpoints and plots."""
from . import optim

__all__ = ["optim"]
