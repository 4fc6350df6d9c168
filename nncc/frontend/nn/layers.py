"""Layers with PyTorch's constructors, parameter names and layouts."""
from __future__ import annotations

import numpy as np

from ...errors import ShapeError
from . import functional as F
from .init import bias_uniform, kaiming_uniform
from .module import Module, Parameter


def _pair(v):
    return tuple(v) if isinstance(v, (list, tuple)) else (int(v), int(v))


def _check_input(layer: Module, x, rank: int, axis: int, size: int, what: str) -> None:
    shape = tuple(x.shape)
    if len(shape) != rank or shape[axis] != size:
        expected = ["*"] * rank
        expected[axis] = str(size)
        raise ShapeError(f"layer '{layer._path or type(layer).__name__}' ({type(layer).__name__}) expects input "
                         f"[{', '.join(expected)}] ({what}), got {list(shape)}")


class Linear(Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(kaiming_uniform((out_features, in_features), in_features))
        self.bias = Parameter(bias_uniform((out_features,), in_features)) if bias else None

    def forward(self, x):
        shape = tuple(x.shape)
        if not shape or shape[-1] != self.in_features:
            raise ShapeError(f"layer '{self._path or 'Linear'}' (Linear) expects input [..., {self.in_features}], "
                             f"got {list(shape)}")
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Conv2d(Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ShapeError(f"Conv2d: channels {in_channels}->{out_channels} are not divisible by groups={groups}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = _pair(kernel_size), _pair(stride), _pair(padding)
        self.dilation, self.groups = _pair(dilation), groups
        fan_in = in_channels // groups * self.kernel_size[0] * self.kernel_size[1]
        self.weight = Parameter(kaiming_uniform((out_channels, in_channels // groups) + self.kernel_size, fan_in))
        self.bias = Parameter(bias_uniform((out_channels,), fan_in)) if bias else None

    def forward(self, x):
        _check_input(self, x, 4, 1, self.in_channels, "N, C, H, W")
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}")


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride if stride is not None else kernel_size
        self.padding, self.dilation, self.ceil_mode = padding, dilation, ceil_mode

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class AvgPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False, count_include_pad: bool = True):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride if stride is not None else kernel_size
        self.padding, self.ceil_mode, self.count_include_pad = padding, ceil_mode, count_include_pad

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad)


def _activation(name: str, fn):
    cls = type(name, (Module,), {"forward": lambda self, x: fn(x), "__doc__": f"Module form of ``F.{fn.__name__}``."})
    return cls


ReLU = _activation("ReLU", F.relu)
Sigmoid = _activation("Sigmoid", F.sigmoid)
Tanh = _activation("Tanh", F.tanh)


class ReLU6(Module):  # noqa: D101 - clamp to [0, 6]
    def forward(self, x):
        return F.minimum(F.relu(x), 6.0)


class LeakyReLU(Module):
    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)


class Softmax(Module):
    def __init__(self, dim: int = -1):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return F.softmax(x, self.dim)


class LogSoftmax(Softmax):
    def forward(self, x):
        return F.log_softmax(x, self.dim)


class Flatten(Module):
    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return F.flatten(x, self.start_dim, self.end_dim)


class Dropout(Module):
    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ShapeError(f"Dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)


class _BatchNorm(Module):
    ranks: tuple = (4,)

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = Parameter(np.ones(num_features, np.float32)) if affine else None
        self.bias = Parameter(np.zeros(num_features, np.float32)) if affine else None
        self.register_buffer("running_mean", np.zeros(num_features, np.float32))
        self.register_buffer("running_var", np.ones(num_features, np.float32))
        self.register_buffer("num_batches_tracked", np.array(0, np.int64))

    def forward(self, x):
        if len(x.shape) not in self.ranks or x.shape[1] != self.num_features:
            raise ShapeError(f"layer '{self._path or type(self).__name__}' ({type(self).__name__}) expects input "
                             f"[N, {self.num_features}, ...] of rank {' or '.join(map(str, self.ranks))}, "
                             f"got {list(x.shape)}")
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False,
                                self.momentum, self.eps)
        from ..tracing import active_trace
        y, new_mean, new_var = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, True,
                                            self.momentum, self.eps)
        trace = active_trace()
        if trace is not None:
            trace.buffer_updates[id(self.running_mean)] = new_mean.value
            trace.buffer_updates[id(self.running_var)] = new_var.value
            trace.buffer_updates[id(self.num_batches_tracked)] = F.add(self.num_batches_tracked, np.int64(1)).value
        return y


class BatchNorm2d(_BatchNorm):
    ranks = (4,)


class BatchNorm1d(_BatchNorm):
    ranks = (2, 3)
