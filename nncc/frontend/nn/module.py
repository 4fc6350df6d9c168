"""``Module``, ``Parameter`` and ``Sequential``: PyTorch's module protocol over numpy arrays."""
from __future__ import annotations

from collections import OrderedDict
from typing import Iterator, Mapping

import numpy as np

from ...errors import ShapeError
from ..tracing import label


class Parameter(np.ndarray):
    """A trainable numpy array (``np.ndarray`` subclass) registered on a Module."""

    def __new__(cls, data):
        return np.array(data, dtype=np.asarray(data).dtype, copy=True).view(cls)


class Module:
    """Base class of layers and models, with PyTorch's names: ``forward``, ``state_dict``, ``train``...

    Example::

        class MLP(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 2)
            def forward(self, x):
                return self.fc(x)
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_path", "")

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() before "
                                 f"assigning {name!r}")
        for registry in (self._parameters, self._buffers, self._modules):
            registry.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def register_buffer(self, name: str, value) -> None:
        arr = np.array(value, copy=True)
        self._buffers[name] = arr
        object.__setattr__(self, name, arr)

    def __call__(self, *args, **kwargs):
        with label(self._path or type(self).__name__):
            return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    # ---- traversal -------------------------------------------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def children(self) -> Iterator["Module"]:
        yield from self._modules.values()

    def modules(self) -> Iterator["Module"]:
        for _, m in self.named_modules():
            yield m

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        for path, m in self.named_modules():
            for name, p in m._parameters.items():
                yield (f"{path}.{name}" if path else name), p

    def parameters(self) -> Iterator[Parameter]:
        for _, p in self.named_parameters():
            yield p

    def named_buffers(self) -> Iterator[tuple[str, np.ndarray]]:
        for path, m in self.named_modules():
            for name, b in m._buffers.items():
                yield (f"{path}.{name}" if path else name), b

    def assign_paths(self) -> None:
        """Record each submodule's dotted path, used to label IR nodes."""
        for path, m in self.named_modules():
            object.__setattr__(m, "_path", path)

    # ---- state ----------------------------------------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Parameters and buffers under PyTorch's names, as plain numpy arrays (copies)."""
        out = OrderedDict((n, np.array(p)) for n, p in self.named_parameters())
        out.update((n, np.array(b)) for n, b in self.named_buffers())
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray], strict: bool = True) -> None:
        """Copy ``state`` into the parameters and buffers; missing, extra or mis-shaped tensors raise ShapeError."""
        own = dict(self.named_parameters())
        own.update(self.named_buffers())
        state = {k: _to_numpy(v) for k, v in state.items()}
        missing = [k for k in own if k not in state]
        extra = [k for k in state if k not in own]
        if strict and (missing or extra):
            raise ShapeError(f"state_dict does not match {type(self).__name__}: missing {missing}, unexpected {extra}")
        for name, value in state.items():
            if name not in own:
                continue
            target = own[name]
            if tuple(value.shape) != target.shape:
                raise ShapeError(f"state_dict tensor {name!r} has shape {tuple(value.shape)}, "
                                 f"the model expects {target.shape}")
            target[...] = value.astype(target.dtype, copy=False)

    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._modules.items():
            lines.append(f"  ({name}): " + repr(child).replace("\n", "\n  "))
        return lines[0] + (")" if len(lines) == 1 else "\n" + "\n".join(lines[1:]) + "\n)")


def _to_numpy(value) -> np.ndarray:
    """Accept numpy arrays and anything with ``.detach().cpu().numpy()`` (torch tensors) without importing torch."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


class Sequential(Module):
    """Layers applied in order; children are named "0", "1", ... as in PyTorch (or by the keys of a dict)."""

    def __init__(self, *layers):
        super().__init__()
        items = layers[0].items() if len(layers) == 1 and isinstance(layers[0], Mapping) else \
            ((str(i), m) for i, m in enumerate(layers))
        for name, layer in items:
            setattr(self, name, layer)

    def forward(self, x):
        for layer in self._modules.values():
            x = layer(x)
        return x

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def __len__(self) -> int:
        return len(self._modules)
