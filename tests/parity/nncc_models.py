"""The nncc models of the parity and IR tests: the example models plus one with every odd conv/pool attribute."""
from bn_cnn import BNCNN
from cifar_lenet import CifarLeNet
from lenet import LeNet
from mlp import MLP
from nncc import nn
from nncc.nn import functional as F


class OddConvPool(nn.Module):
    """conv with stride 2, padding 1, dilation 2, groups 2, then AvgPool with ceil_mode."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2)
        self.pool = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x):
        return self.fc(F.flatten(self.pool(F.tanh(self.conv(x))), 1))


MODELS = {  # name: (class, input shape without the batch dim, classes)
    "lenet": (LeNet, (1, 28, 28), 10),
    "cifar_lenet": (CifarLeNet, (3, 32, 32), 10),
    "mlp": (MLP, (1, 28, 28), 10),
    "bn_cnn": (BNCNN, (1, 28, 28), 10),
    "odd_conv_avgpool": (OddConvPool, (4, 13, 13), 5),
}
