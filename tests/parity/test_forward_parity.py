"""Forward outputs equal PyTorch 2.13's for every test model, with fusion on and off; one compilation serves
every batch size."""
import sys

import numpy as np
import pytest
import torch

import nncc

from .nncc_models import MODELS
from .pairs import batch, make_pair


# fusion off on LeNet and the BatchNorm CNN, which between them hold every op kind of the models
@pytest.mark.parametrize("name,fuse", [(n, True) for n in MODELS] + [("lenet", False), ("bn_cnn", False)])
def test_forward_matches_torch(name, fuse):
    ours, theirs, shape, _ = make_pair(name)
    fwd = nncc.compile(ours, input_shape=(None, *shape), fuse=fuse)
    x, _ = batch(shape, 5)
    with torch.no_grad():
        expected = theirs.eval()(torch.tensor(x)).numpy()  # eval: BatchNorm running statistics, no dropout
    np.testing.assert_allclose(fwd(x), expected, rtol=1e-4, atol=1e-5)


def test_one_compilation_serves_batch_sizes_1_7_and_64():
    ours, theirs, shape, _ = make_pair("lenet")
    fwd = nncc.compile(ours, input_shape=(None, *shape))
    for n in (1, 7, 64):
        x, _ = batch(shape, n, seed=n)
        with torch.no_grad():
            np.testing.assert_allclose(fwd(x), theirs(torch.tensor(x)).numpy(), rtol=1e-4, atol=1e-5)
    generated = sys.modules[fwd.program("forward").fn.__module__]
    assert len(generated._run.signatures) == 1  # the driver, and each kernel for its slots' signatures only
    assert all(len(k.signatures) == sum(k is kk for kk, _ in generated._SLOTS) for k, _ in generated._SLOTS)
