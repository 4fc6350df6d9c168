"""Whole models against PyTorch 2.13 autograd: forward values, gradients, BatchNorm training, trajectories."""
import numpy as np
import pytest
import torch

import nncc
from bn_cnn import BNCNN
from cifar_lenet import CifarLeNet
from lenet import LeNet
from mlp import MLP
from nncc import nn
from nncc.ir import parse_graph, print_graph
from runtime import optim

from . import torch_models as T
from .nncc_models import OddConvPool

MODELS = {  # name: (nncc class, torch factory, input shape)
    "lenet": (LeNet, T.LeNet, (1, 28, 28)),
    "cifar_lenet": (CifarLeNet, lambda: T.LeNet(3, 0), (3, 32, 32)),
    "mlp": (MLP, T.MLP, (1, 28, 28)),
    "bn_cnn": (BNCNN, T.BNCNN, (1, 28, 28)),
    "odd_conv_avgpool": (OddConvPool, T.OddConvPool, (4, 13, 13)),
}


def _pair(name, seed=0):
    nncc.manual_seed(seed)
    ours_cls, theirs_cls, shape = MODELS[name]
    ours = ours_cls()
    if name == "bn_cnn":  # non-trivial running statistics and affine parameters
        rng = np.random.default_rng(seed)
        state = {k: (rng.uniform(0.5, 1.5, v.shape) if "running_var" in k or k.endswith(".weight") and "bn" in k
                     else rng.standard_normal(v.shape) * 0.1 if "bn" in k and v.dtype.kind == "f" else v)
                 for k, v in ours.state_dict().items()}
        ours.load_state_dict(state)
    theirs = theirs_cls()
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    return ours, theirs, shape


def _batch(shape, n, seed=0, classes=10):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *shape)).astype(np.float32), rng.integers(0, classes, n)


# fusion and memory planning off is exercised on LeNet and the BatchNorm CNN, which cover every op kind
@pytest.mark.parametrize("name,fuse", [(n, True) for n in MODELS] + [("lenet", False), ("bn_cnn", False)])
def test_forward_matches_torch(name, fuse):
    ours, theirs, shape = _pair(name)
    fwd = nncc.compile(ours, input_shape=(None, *shape), fuse=fuse)
    x, _ = _batch(shape, 5)
    with torch.no_grad():
        expected = theirs.eval()(torch.tensor(x)).numpy()
    np.testing.assert_allclose(fwd(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_gradients_match_torch(name):
    ours, theirs, shape = _pair(name)
    if name == "bn_cnn":  # training mode: batch statistics; dropout off so the masks cannot differ
        ours.drop.p = 0.0
        theirs.drop.p = 0.0
    classes = 5 if name == "odd_conv_avgpool" else 10
    step = nncc.compile(ours, input_shape=(None, *shape), loss=nn.CrossEntropyLoss())
    x, y = _batch(shape, 6, classes=classes)
    loss, grads = step.grad(x, y)
    theirs.train()
    tl = torch.nn.functional.cross_entropy(theirs(torch.tensor(x)), torch.tensor(y))
    tl.backward()
    assert loss == pytest.approx(tl.item(), rel=1e-5)
    for pname, p in theirs.named_parameters():
        np.testing.assert_allclose(grads[pname], p.grad.numpy(), rtol=1e-4, atol=1e-6, err_msg=pname)
    if name == "bn_cnn":  # running statistics updated as PyTorch updates them
        for bname, b in theirs.named_buffers():
            np.testing.assert_allclose(step.state_dict()[bname], b.numpy(), rtol=1e-5, atol=1e-6, err_msg=bname)


LOSSES = {
    "cross_entropy_sum": (nn.CrossEntropyLoss(reduction="sum"),
                          lambda o, t: torch.nn.functional.cross_entropy(o, t, reduction="sum"), "labels"),
    "cross_entropy_smooth": (nn.CrossEntropyLoss(label_smoothing=0.2),
                             lambda o, t: torch.nn.functional.cross_entropy(o, t, label_smoothing=0.2), "labels"),
    "nll": (nn.NLLLoss(), torch.nn.functional.nll_loss, "labels"),
    "mse": (nn.MSELoss(), torch.nn.functional.mse_loss, "values"),
    "l1": (nn.L1Loss(reduction="sum"), lambda o, t: torch.nn.functional.l1_loss(o, t, reduction="sum"), "values"),
    "bce_with_logits": (nn.BCEWithLogitsLoss(), torch.nn.functional.binary_cross_entropy_with_logits, "probs"),
}


@pytest.mark.parametrize("loss_name", list(LOSSES))
def test_each_loss_matches_torch(loss_name):
    ours_loss, torch_loss, target_kind = LOSSES[loss_name]
    ours, theirs, shape = _pair("mlp")
    step = nncc.compile(ours, input_shape=(None, *shape), loss=ours_loss)
    x, labels = _batch(shape, 6)
    rng = np.random.default_rng(1)
    target = {"labels": labels, "values": rng.standard_normal((6, 10)).astype(np.float32),
              "probs": rng.random((6, 10)).astype(np.float32)}[target_kind]
    loss, grads = step.grad(x, target)
    tl = torch_loss(theirs(torch.tensor(x)), torch.tensor(target))
    tl.backward()
    assert loss == pytest.approx(tl.item(), rel=1e-5)
    for pname, p in theirs.named_parameters():
        np.testing.assert_allclose(grads[pname], p.grad.numpy(), rtol=1e-4, atol=1e-6, err_msg=pname)


def test_one_compilation_serves_batch_sizes_1_7_and_64():
    ours, theirs, shape = _pair("lenet")
    fwd = nncc.compile(ours, input_shape=(None, *shape))
    for n in (1, 7, 64):
        x, _ = _batch(shape, n, seed=n)
        with torch.no_grad():
            np.testing.assert_allclose(fwd(x), theirs(torch.tensor(x)).numpy(), rtol=1e-4, atol=1e-5)
    assert len(fwd.program("forward").fn.signatures) == 1


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_fifty_steps_follow_torchs_trajectory(opt):
    ours, theirs, shape = _pair("lenet", seed=4)
    optimizer = optim.SGD(lr=0.01, momentum=0.9) if opt == "sgd" else optim.Adam(lr=1e-3)
    step = nncc.compile(ours, input_shape=(None, *shape), loss=nn.CrossEntropyLoss(), optimizer=optimizer)
    topt = torch.optim.SGD(theirs.parameters(), lr=0.01, momentum=0.9) if opt == "sgd" else \
        torch.optim.Adam(theirs.parameters(), lr=1e-3)
    for i in range(50):
        x, y = _batch(shape, 8, seed=100 + i)
        step.train_step(x, y)
        topt.zero_grad()
        torch.nn.functional.cross_entropy(theirs(torch.tensor(x)), torch.tensor(y)).backward()
        topt.step()
    for pname, p in theirs.named_parameters():
        expected = p.detach().numpy()
        got = step.state_dict()[pname]
        assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max(), pname


@pytest.mark.parametrize("name", list(MODELS))
def test_ir_text_round_trips_for_forward_grad_and_train_graphs(name):
    ours, _, shape = _pair(name)
    step = nncc.compile(ours, input_shape=(None, *shape), loss=nn.CrossEntropyLoss(), optimizer=optim.Adam())
    for kind in ("forward", "grad", "train"):
        program = step.program(kind)
        for stage, text in program.dumps.items():
            if stage == "fused":
                continue
            assert print_graph(parse_graph(text)) == text, f"{kind}/{stage}"
