"""Training follows PyTorch's trajectory: from the same weights and batches, 50 compiled steps of SGD with
momentum, or of Adam, end within 1e-4 (relative) of torch.optim's parameters."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import nncc
from nncc import nn
from runtime import optim

from .pairs import batch, make_pair

OPTIMIZERS = {  # name: (nncc optimizer, torch optimizer factory)
    "sgd_momentum": (lambda: optim.SGD(lr=0.01, momentum=0.9), lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9)),
    "adam": (lambda: optim.Adam(lr=1e-3), lambda ps: torch.optim.Adam(ps, lr=1e-3)),
}


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_fifty_steps_follow_torchs_trajectory(opt):
    ours_opt, torch_opt = OPTIMIZERS[opt]
    ours, theirs, shape, _ = make_pair("lenet", seed=4)
    step = nncc.compile(ours, input_shape=(None, *shape), loss=nn.CrossEntropyLoss(), optimizer=ours_opt())
    topt = torch_opt(theirs.parameters())
    for i in range(50):
        x, y = batch(shape, 8, seed=100 + i)
        loss = step.train_step(x, y)
        topt.zero_grad()
        expected = TF.cross_entropy(theirs(torch.tensor(x)), torch.tensor(y))
        expected.backward()
        topt.step()
        assert loss == pytest.approx(expected.item(), rel=1e-4), f"step {i}"
    assert step.steps == 50
    for name, p in theirs.named_parameters():
        expected = p.detach().numpy()
        got = step.state_dict()[name]
        assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max(), name
