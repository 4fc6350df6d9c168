"""Shared runtime test setup: the tiny MLP of the issue, compiled (the kernel cache makes every compile after the
first one in a process cheap), and slices of mnist-small."""
import pytest

import nncc
from nncc import nn
from runtime import data, optim


def compile_mlp(seed: int = 0, lr: float = 0.05, dropout: bool = False):
    """The tiny MLP compiled with cross-entropy and SGD with momentum; ``seed`` picks the initial weights."""
    nncc.manual_seed(seed)
    layers = [nn.Flatten(), nn.Linear(784, 16), nn.ReLU()] + ([nn.Dropout(0.25)] if dropout else [])
    model = nn.Sequential(*layers, nn.Linear(16, 10))
    return nncc.compile(model, input_shape=(None, 1, 28, 28), loss=nn.CrossEntropyLoss(),
                        optimizer=optim.SGD(lr=lr, momentum=0.9))


@pytest.fixture(scope="session")
def make_step():
    return compile_mlp


@pytest.fixture(scope="session")
def mnist_small(mnist_dir):
    return data.mnist(mnist_dir)


@pytest.fixture(scope="session")
def few(mnist_small):
    """320 training images: ten batches of 32."""
    train, _ = mnist_small
    return data.Dataset(train.images[:320], train.labels[:320])
