"""A multilayer perceptron for MNIST: 784 -> 128 -> 64 -> 10."""
from nncc import nn


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                                    nn.Linear(64, 10))

    def forward(self, x):
        return self.layers(x)
