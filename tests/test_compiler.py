"""nncc.compile and CompiledModule: input validation, state_dict handling, custom layers and losses."""
import numpy as np
import pytest
import torch

import nncc
from nncc import nn
from nncc.frontend.nn import functional as F
from runtime import optim


class TinyMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


@pytest.fixture(scope="module")
def tiny():
    nncc.manual_seed(0)
    return nncc.compile(TinyMLP(), input_shape=(None, 4), loss=nn.CrossEntropyLoss(), optimizer=optim.SGD(lr=0.1))


def test_wrong_dtype_names_expected_and_got(tiny):
    with pytest.raises(nncc.ShapeError, match=r"input 'x': expected dtype float32 .* got float64"):
        tiny(np.zeros((2, 4)))


def test_wrong_rank_and_shape(tiny):
    with pytest.raises(nncc.ShapeError, match=r"expected rank 2 .* got shape \[2, 4, 1\]"):
        tiny(np.zeros((2, 4, 1), np.float32))
    with pytest.raises(nncc.ShapeError, match=r"expected shape f32\[N,4\], got \[2, 5\]"):
        tiny(np.zeros((2, 5), np.float32))


def test_batch_mismatch_between_input_and_target(tiny):
    with pytest.raises(nncc.ShapeError, match="dimension N is 3 but input 'x' has N=2"):
        tiny.train_step(np.zeros((2, 4), np.float32), np.zeros(3, np.int64))


def test_labels_of_wrong_dtype(tiny):
    with pytest.raises(nncc.ShapeError, match="input 'target': expected dtype int64"):
        tiny.train_step(np.zeros((2, 4), np.float32), np.zeros(2, np.float32))


def test_out_of_range_label_raises_not_corrupts(tiny):
    before = tiny.state_dict()
    with pytest.raises(nncc.ShapeError, match=r"input 'target': class label 7 is out of range \[0, 3\)"):
        tiny.train_step(np.zeros((2, 4), np.float32), np.array([0, 7], np.int64))
    assert all(np.array_equal(before[k], v) for k, v in tiny.state_dict().items())


def test_state_dict_errors_name_the_tensor(tiny):
    state = tiny.state_dict()
    with pytest.raises(nncc.ShapeError, match=r"missing \['fc2.bias'\]"):
        tiny.load_state_dict({k: v for k, v in state.items() if k != "fc2.bias"})
    with pytest.raises(nncc.ShapeError, match=r"unexpected \['extra'\]"):
        tiny.load_state_dict({**state, "extra": np.zeros(1)})
    with pytest.raises(nncc.ShapeError, match=r"'fc1.weight' has shape \(4, 8\), the model expects \(8, 4\)"):
        tiny.load_state_dict({**state, "fc1.weight": np.zeros((4, 8), np.float32)})


def test_state_dict_round_trip_changes_outputs(tiny):
    x = np.random.default_rng(0).random((2, 4), np.float32)
    state = tiny.state_dict()
    zeroed = {k: np.zeros_like(v) for k, v in state.items()}
    tiny.load_state_dict(zeroed)
    np.testing.assert_array_equal(tiny(x), np.zeros((2, 3), np.float32))
    tiny.load_state_dict(state)
    assert np.abs(tiny(x)).sum() > 0


def test_train_step_without_optimizer_is_a_clear_error():
    fwd = nncc.compile(TinyMLP(), input_shape=(None, 4))
    with pytest.raises(nncc.NNCCError, match="needs a loss"):
        fwd.train_step(np.zeros((2, 4), np.float32), np.zeros(2, np.int64))


def test_layer_shape_error_names_the_layer():
    with pytest.raises(nncc.ShapeError, match=r"layer 'fc1' \(Linear\) expects input \[\.\.\., 4\], got \['N', 5\]"):
        nncc.compile(TinyMLP(), input_shape=(None, 5))


class Swish(nn.Module):
    """A custom layer built from nncc ops: it trains with no extra code."""

    def forward(self, x):
        return x * F.sigmoid(x)


class CustomNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.act = Swish()
        self.fc2 = nn.Linear(6, 2)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class SmoothL1(nn.Module):
    """A user-defined loss written from nncc ops (Huber with delta 1)."""

    def forward(self, pred, target):
        d = F.abs(pred - target)
        return F.mean(F.where(d < 1.0, 0.5 * d * d, d - 0.5))


def test_custom_layer_and_user_loss_match_torch_autograd():
    nncc.manual_seed(3)
    model = CustomNet()
    step = nncc.compile(model, input_shape=(None, 4), loss=SmoothL1())
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    y = (rng.standard_normal((5, 2)) * 3).astype(np.float32)
    loss, grads = step.grad(x, y)

    tm = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.SiLU(), torch.nn.Linear(6, 2))
    names = {"0.weight": "fc1.weight", "0.bias": "fc1.bias", "2.weight": "fc2.weight", "2.bias": "fc2.bias"}
    state = model.state_dict()
    tm.load_state_dict({t: torch.tensor(state[n]) for t, n in names.items()})
    tl = torch.nn.functional.smooth_l1_loss(tm(torch.tensor(x)), torch.tensor(y))
    tl.backward()
    assert loss == pytest.approx(tl.item(), rel=1e-5)
    for (t, n) in names.items():
        np.testing.assert_allclose(grads[n], dict(tm.named_parameters())[t].grad.numpy(), rtol=1e-4, atol=1e-6)
