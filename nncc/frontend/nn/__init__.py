"""``nncc.nn``: write models the way the PyTorch tutorials teach; nncc traces them into IR."""
from . import functional
from .init import manual_seed
from .layers import (AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, LeakyReLU, Linear, LogSoftmax,
                     MaxPool2d, ReLU, ReLU6, Sigmoid, Softmax, Tanh)
from .losses import BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, MSELoss, NLLLoss
from .module import Module, Parameter, Sequential

__all__ = ["functional", "manual_seed", "Module", "Parameter", "Sequential", "Linear", "Conv2d", "MaxPool2d",
           "AvgPool2d", "ReLU", "ReLU6", "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "Flatten",
           "Dropout", "BatchNorm1d", "BatchNorm2d", "CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss",
           "BCEWithLogitsLoss"]
