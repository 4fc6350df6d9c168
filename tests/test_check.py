"""The divergence finder names the first IR node whose compiled output differs from the reference."""
import numpy as np
import pytest

import nncc
from nncc import nn
from nncc.check import find_divergence
from nncc.frontend.nn import functional as F
from nncc.ops import get_op
from runtime import optim


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(F.tanh(self.fc1(x)))


@pytest.fixture()
def step():
    nncc.manual_seed(0)
    return nncc.compile(Net(), input_shape=(None, 4), loss=nn.CrossEntropyLoss(), optimizer=optim.SGD(lr=0.1))


def test_agreeing_programs_report_nothing(step):
    x = np.random.default_rng(0).random((3, 4), np.float32)
    y = np.array([0, 2, 1], np.int64)
    assert find_divergence(step, x) is None
    assert find_divergence(step, x, y, kind="train") is None


def test_a_broken_lowering_is_named(step, monkeypatch):
    x = np.random.default_rng(0).random((3, 4), np.float32)
    y = np.array([0, 2, 1], np.int64)
    op = get_op("tanh_backward")
    monkeypatch.setattr(op, "scalar", lambda a, k, c: f"{a[1]} * ({c(1.0)} - {a[0]})")  # drops a factor y
    found = find_divergence(step, x, y, kind="grad")
    assert found is not None
    assert "tanh_backward" in found.node_text and "grad of Net" in found.node_text
    assert "tanh_backward" in found.kernel_text
    assert found.max_abs_error > 1e-3


class PoolNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 3 * 3, 3)

    def forward(self, x):
        return self.fc(F.flatten(F.max_pool2d(F.relu(self.conv(x)), 2), 1))


def test_a_broken_prologue_is_named_through_the_programs_own_results(monkeypatch):
    """The per-sample prologue (the max-pool gradient inside the conv weight gradient's kernel) is not a kernel of
    the node-by-node program, so its fault shows in the checked program's results."""
    op = get_op("max_pool2d_backward")
    make = op.sample_prologue
    monkeypatch.setattr(op, "sample_prologue",
                        lambda node, name: make(node, name).replace("g_n = gy_or_out[n]", "g_n = 2 * gy_or_out[n]"))
    nncc.manual_seed(0)
    step = nncc.compile(PoolNet(), input_shape=(None, 1, 8, 8), loss=nn.CrossEntropyLoss())
    assert "per-sample prologue" in step.ir("fused", kind="grad")
    x = np.random.default_rng(0).random((3, 1, 8, 8), np.float32)
    found = find_divergence(step, x, np.array([0, 2, 1], np.int64), kind="grad")
    assert found is not None and "conv2d_backward_weight" in found.node_text
    assert "per-sample prologue" in found.kernel_text


class ViewNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        return self.fc(x.reshape(x.shape[0], -1))  # PyTorch's x.view(x.size(0), -1)


def test_a_model_flattening_to_its_batch_size_and_minus_one_checks():
    nncc.manual_seed(0)
    fwd = nncc.compile(ViewNet(), input_shape=(None, 3, 4))
    assert find_divergence(fwd, np.random.default_rng(0).random((2, 3, 4), np.float32)) is None
