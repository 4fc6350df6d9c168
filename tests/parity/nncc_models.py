"""nncc models for the parity tests that are not in examples/."""
from nncc import nn
from nncc.nn import functional as F


class OddConvPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2)
        self.pool = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x):
        return self.fc(F.flatten(self.pool(F.tanh(self.conv(x))), 1))
