"""An nncc model and its PyTorch twin holding the same weights, and seeded batches."""
import numpy as np
import torch

import nncc

from .nncc_models import MODELS
from .torch_models import TWINS


def make_pair(name: str, seed: int = 0):
    """(nncc model, torch model, input shape, classes) with identical weights; BatchNorm layers get non-trivial
    affine parameters and running statistics, so eval mode tests them."""
    cls, shape, classes = MODELS[name]
    nncc.manual_seed(seed)
    ours = cls()
    rng = np.random.default_rng(seed)
    state = {}
    for key, value in ours.state_dict().items():
        if key.startswith("bn") and key.endswith(("weight", "running_var")):
            value = rng.uniform(0.5, 1.5, value.shape)
        elif key.startswith("bn") and key.endswith(("bias", "running_mean")):
            value = rng.standard_normal(value.shape) * 0.1
        state[key] = value
    ours.load_state_dict(state)
    theirs = TWINS[name]()
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    return ours, theirs, shape, classes


def batch(shape, n: int, seed: int = 0, classes: int = 10):
    """n float32 images of ``shape`` and int64 labels below ``classes``."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *shape)).astype(np.float32), rng.integers(0, classes, n)
