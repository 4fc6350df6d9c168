"""PyTorch twins of the nncc models in nncc_models.py, with the same parameter names and layouts."""
import torch
from torch import nn
from torch.nn import functional as F


class LeNet(nn.Module):
    def __init__(self, in_channels=1, pad=2):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=pad)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                                    nn.Linear(64, 10))

    def forward(self, x):
        return self.layers(x)


class BNCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)  # BatchNorm follows: a bias would be redundant
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.pool = nn.MaxPool2d(2)
        self.drop = nn.Dropout(0.25)
        self.fc1 = nn.Linear(16 * 7 * 7, 32, bias=False)
        self.bn3 = nn.BatchNorm1d(32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = self.pool(F.relu(self.bn2(self.conv2(x))))
        x = self.drop(torch.flatten(x, 1))
        return self.fc2(F.relu(self.bn3(self.fc1(x))))


class OddConvPool(nn.Module):
    """conv with stride 2, padding 1, dilation 2, groups 2, then AvgPool."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2)
        self.pool = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.tanh(self.conv(x))), 1))


TWINS = {"lenet": LeNet, "cifar_lenet": lambda: LeNet(3, 0), "mlp": MLP, "bn_cnn": BNCNN,
         "odd_conv_avgpool": OddConvPool}
