"""Optimizers and learning-rate schedules.

An optimizer here is a description: nncc compiles its update rule into the training step (the op named by
``update_op``, with ``op_attrs()``), so ``train_step`` runs forward, backward and update in one native call.
Schedules change the compiled step's ``lr`` between steps; no recompilation.

Example::

    step = nncc.compile(model, input_shape=(None, 1, 28, 28), loss=nn.CrossEntropyLoss(),
                        optimizer=optim.SGD(lr=0.01, momentum=0.9))
    sched = optim.CosineAnnealingLR(step, T_max=10)
"""
from __future__ import annotations

import math


class SGD:
    """PyTorch's SGD: momentum (with dampening), Nesterov momentum and L2 weight decay."""

    update_op = "sgd_update"
    state_slots = ("momentum_buffer",)

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD: lr, momentum and weight_decay must be >= 0, got {lr}, {momentum}, {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: Nesterov momentum requires a momentum and zero dampening")
        self.lr, self.momentum, self.dampening = lr, momentum, dampening
        self.weight_decay, self.nesterov = weight_decay, nesterov

    def op_attrs(self) -> dict:
        return {"momentum": float(self.momentum), "dampening": float(self.dampening),
                "weight_decay": float(self.weight_decay), "nesterov": bool(self.nesterov)}


class Adam:
    """PyTorch's Adam (L2 weight decay added to the gradient)."""

    update_op = "adam_update"
    state_slots = ("exp_avg", "exp_avg_sq")
    decoupled = False

    def __init__(self, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        if lr < 0 or eps < 0 or weight_decay < 0 or len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"{type(self).__name__}: invalid lr={lr}, betas={betas}, eps={eps} or "
                             f"weight_decay={weight_decay}")
        self.lr, self.betas, self.eps, self.weight_decay = lr, tuple(betas), eps, weight_decay

    def op_attrs(self) -> dict:
        return {"beta1": float(self.betas[0]), "beta2": float(self.betas[1]), "eps": float(self.eps),
                "weight_decay": float(self.weight_decay), "decoupled": self.decoupled}


class AdamW(Adam):
    """PyTorch's AdamW: decoupled weight decay (default 0.01)."""

    decoupled = True

    def __init__(self, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01):
        super().__init__(lr, betas, eps, weight_decay)


class _Schedule:
    """Sets ``step.lr`` from the epoch count; call ``step()`` once per epoch, as in PyTorch (the Trainer does)."""

    def __init__(self, compiled_step):
        self.target = compiled_step
        self.base_lr = compiled_step.lr
        self.epoch = 0

    def step(self) -> None:
        self.epoch += 1
        self.target.lr = self.lr_at(self.epoch)

    def lr_at(self, epoch: int) -> float:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "base_lr": self.base_lr}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.base_lr = int(state["epoch"]), float(state["base_lr"])
        self.target.lr = self.lr_at(self.epoch)


class StepLR(_Schedule):
    """lr = base_lr * gamma ** (epoch // step_size)."""

    def __init__(self, compiled_step, step_size: int, gamma: float = 0.1):
        if step_size < 1 or gamma < 0:
            raise ValueError(f"StepLR: step_size must be >= 1 and gamma >= 0, got {step_size} and {gamma}")
        super().__init__(compiled_step)
        self.step_size, self.gamma = step_size, gamma

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(_Schedule):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2."""

    def __init__(self, compiled_step, T_max: int, eta_min: float = 0.0):
        if T_max < 1 or eta_min < 0:
            raise ValueError(f"CosineAnnealingLR: T_max must be >= 1 and eta_min >= 0, got {T_max} and {eta_min}")
        super().__init__(compiled_step)
        self.T_max, self.eta_min = T_max, eta_min

    def lr_at(self, epoch: int) -> float:
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2
