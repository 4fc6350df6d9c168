"""Optimizer descriptions and learning-rate schedules (against PyTorch's), alone and driven by the Trainer."""
from types import SimpleNamespace

import pytest
import torch

from runtime import Trainer, optim


def _torch_lrs(make_scheduler, epochs, lr=0.1):
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=lr)
    scheduler = make_scheduler(opt)
    lrs = []
    for _ in range(epochs):
        opt.step()
        scheduler.step()
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


def _our_lrs(make_schedule, epochs, lr=0.1):
    step = SimpleNamespace(lr=lr)  # a schedule only reads and writes the compiled step's lr
    schedule = make_schedule(step)
    lrs = []
    for _ in range(epochs):
        schedule.step()
        lrs.append(step.lr)
    return lrs


@pytest.mark.parametrize("ours, theirs", [
    (lambda s: optim.StepLR(s, step_size=3, gamma=0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5)),
    (lambda s: optim.CosineAnnealingLR(s, T_max=4),
     lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=4)),
    (lambda s: optim.CosineAnnealingLR(s, T_max=5, eta_min=0.01),
     lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=5, eta_min=0.01)),
], ids=["step", "cosine", "cosine-eta-min"])
def test_schedules_follow_pytorch(ours, theirs):
    assert _our_lrs(ours, 12) == pytest.approx(_torch_lrs(theirs, 12), rel=1e-9, abs=1e-12)


def test_schedule_state_round_trips():
    step = SimpleNamespace(lr=0.1)
    schedule = optim.StepLR(step, step_size=2, gamma=0.1)
    for _ in range(3):
        schedule.step()
    other = SimpleNamespace(lr=0.5)
    restored = optim.StepLR(other, step_size=2, gamma=0.1)
    restored.load_state_dict(schedule.state_dict())
    assert other.lr == pytest.approx(0.01) and restored.epoch == 3
    restored.step()
    schedule.step()
    assert other.lr == step.lr == pytest.approx(0.001)


def test_trainer_steps_the_schedule_once_per_epoch(few, make_step):
    step = make_step(lr=0.1)
    history = Trainer(step, few, batch_size=64, epochs=3, schedule=optim.StepLR(step, step_size=1, gamma=0.5),
                      progress=False, log=lambda s: None).fit()
    assert [r["lr"] for r in history] == pytest.approx([0.1, 0.05, 0.025])
    assert step.lr == pytest.approx(0.0125)


def test_optimizer_descriptions():
    sgd = optim.SGD(lr=0.1, momentum=0.9, nesterov=True)
    assert sgd.update_op == "sgd_update" and sgd.state_slots == ("momentum_buffer",)
    assert sgd.op_attrs() == {"momentum": 0.9, "dampening": 0.0, "weight_decay": 0.0, "nesterov": True}
    adamw = optim.AdamW(lr=1e-3)
    assert adamw.update_op == "adam_update" and adamw.state_slots == ("exp_avg", "exp_avg_sq")
    assert adamw.op_attrs()["decoupled"] is True and adamw.op_attrs()["weight_decay"] == 0.01
    assert optim.Adam().op_attrs()["decoupled"] is False


@pytest.mark.parametrize("make, message", [
    (lambda: optim.SGD(lr=-1), "SGD: lr, momentum and weight_decay must be >= 0"),
    (lambda: optim.SGD(lr=0.1, nesterov=True), "SGD: Nesterov momentum requires a momentum"),
    (lambda: optim.Adam(betas=(0.9, 1.0)), r"Adam: invalid lr=0.001, betas=\(0.9, 1.0\)"),
    (lambda: optim.AdamW(weight_decay=-0.1), "AdamW: invalid .*weight_decay=-0.1"),
    (lambda: optim.StepLR(SimpleNamespace(lr=0.1), step_size=0), "StepLR: step_size must be >= 1"),
    (lambda: optim.CosineAnnealingLR(SimpleNamespace(lr=0.1), T_max=0), "CosineAnnealingLR: T_max must be >= 1"),
])
def test_invalid_settings_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()
