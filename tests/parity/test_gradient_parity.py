"""Loss and gradients from ``compiled.grad`` equal PyTorch 2.13 autograd's, for every test model (BatchNorm in
training mode, with its running statistics) and every loss."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import nncc
from nncc import nn

from .nncc_models import MODELS
from .pairs import batch, make_pair


def _assert_grads_match(grads, theirs):
    assert set(grads) == {name for name, _ in theirs.named_parameters()}
    for name, p in theirs.named_parameters():
        np.testing.assert_allclose(grads[name], p.grad.numpy(), rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("name,fuse", [(n, True) for n in MODELS] + [("lenet", False)])
def test_gradients_match_torch(name, fuse):
    ours, theirs, shape, classes = make_pair(name)
    if name == "bn_cnn":  # dropout off: nncc's masks and torch's cannot agree; BatchNorm uses batch statistics
        ours.drop.p = theirs.drop.p = 0.0
    step = nncc.compile(ours, input_shape=(None, *shape), loss=nn.CrossEntropyLoss(), fuse=fuse)
    x, y = batch(shape, 6, classes=classes)
    loss, grads = step.grad(x, y)
    expected = TF.cross_entropy(theirs.train()(torch.tensor(x)), torch.tensor(y))
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-5)
    _assert_grads_match(grads, theirs)
    for bname, b in theirs.named_buffers():  # BatchNorm's running statistics move as torch's do
        np.testing.assert_allclose(step.state_dict()[bname], b.numpy(), rtol=1e-5, atol=1e-6, err_msg=bname)


def _values(rng, n):
    return rng.standard_normal((n, 10)).astype(np.float32)


def _probabilities(rng, n):
    return rng.random((n, 10)).astype(np.float32)


LOSSES = {  # name: (nncc loss, torch loss, target maker (None: class labels))
    "cross_entropy_sum": (nn.CrossEntropyLoss(reduction="sum"), lambda o, t: TF.cross_entropy(o, t, reduction="sum"),
                          None),
    "cross_entropy_smoothed": (nn.CrossEntropyLoss(label_smoothing=0.2),
                               lambda o, t: TF.cross_entropy(o, t, label_smoothing=0.2), None),
    "nll": (nn.NLLLoss(), TF.nll_loss, None),
    "mse": (nn.MSELoss(), TF.mse_loss, _values),
    "l1_sum": (nn.L1Loss(reduction="sum"), lambda o, t: TF.l1_loss(o, t, reduction="sum"), _values),
    "bce_with_logits": (nn.BCEWithLogitsLoss(), TF.binary_cross_entropy_with_logits, _probabilities),
}


@pytest.mark.parametrize("loss_name", list(LOSSES))
def test_each_loss_matches_torch(loss_name):
    ours_loss, torch_loss, make_target = LOSSES[loss_name]
    ours, theirs, shape, _ = make_pair("mlp")
    step = nncc.compile(ours, input_shape=(None, *shape), loss=ours_loss)
    x, labels = batch(shape, 6)
    target = labels if make_target is None else make_target(np.random.default_rng(1), 6)
    loss, grads = step.grad(x, target)
    expected = torch_loss(theirs(torch.tensor(x)), torch.tensor(target))
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-5)
    _assert_grads_match(grads, theirs)
