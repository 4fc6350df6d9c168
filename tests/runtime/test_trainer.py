"""The Trainer: real training on mnist-small, bit-identical resume after a kill, NaN stop, label checks."""
import math

import numpy as np
import pytest

import nncc
from nncc import nn
from runtime import CheckpointError, Trainer, TrainingDiverged, data, optim


def quiet(step, train, **kwargs):
    return Trainer(step, train, progress=False, log=lambda s: None, **kwargs)


def test_one_epoch_on_2000_images_reaches_80_percent(mnist_small, make_step):
    # 125 steps of a 16-unit MLP: about 84% (torch gets 79-83% for the same setup and seeds), chance is 10%
    train, test = mnist_small
    lines = []
    trainer = Trainer(make_step(lr=0.005), data.Dataset(train.images[:2000], train.labels[:2000]), test,
                      batch_size=16, log=lines.append)  # progress=True: the tqdm path runs (no bar without a tty)
    history = trainer.fit()
    assert len(history) == 1 and history[0]["epoch"] == 1
    assert history[0]["test_accuracy"] >= 0.80, history
    assert history[0]["train_loss"] < math.log(10) and 0.5 < history[0]["train_accuracy"] <= 1
    assert history[0]["test_loss"] < history[0]["train_loss"] + 0.2
    assert len(lines) == 1 and lines[0].startswith("epoch 1: train loss ") and "test accuracy" in lines[0]


@pytest.mark.parametrize("dropout", [False, True], ids=["mlp", "mlp-dropout"])
def test_killed_mid_epoch_and_resumed_ends_bit_identical(few, make_step, tmp_path, dropout):
    def run(step, **kwargs):
        return quiet(step, few, batch_size=32, epochs=2, schedule=optim.StepLR(step, step_size=1, gamma=0.5),
                     **kwargs).fit()

    full = make_step(dropout=dropout)
    full_history = run(full, seed=5)

    ckpt = tmp_path / "ckpt.npz"
    killed = make_step(dropout=dropout)
    run(killed, seed=5, checkpoint=ckpt, checkpoint_every=3, max_steps=14)  # last checkpoint: epoch 2, batch 2
    assert killed.steps == 14
    resumed = make_step(seed=99, dropout=dropout)  # other initial weights: everything must come from the checkpoint
    log = []
    history = Trainer(resumed, few, batch_size=32, epochs=2, seed=0, checkpoint=ckpt, resume=ckpt, progress=False,
                      log=log.append, schedule=optim.StepLR(resumed, step_size=1, gamma=0.5)).fit()
    assert log[0] == f"resumed from {ckpt}: epoch 2, batch 2 (step 12)"
    assert resumed.steps == full.steps == 20 and resumed.lr == full.lr == 0.05 * 0.25
    for name, value in full.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[name], value, err_msg=name)
    for name, value in full.optimizer_state_dict().items():
        np.testing.assert_array_equal(resumed.optimizer_state_dict()[name], value, err_msg=name)
    assert history == full_history


def test_checkpoint_at_the_end_of_an_epoch_resumes_the_next_epoch(few, make_step, tmp_path):
    ckpt = tmp_path / "ckpt.npz"
    first = quiet(make_step(), few, batch_size=32, epochs=1, checkpoint=ckpt).fit()
    history = quiet(make_step(), few, batch_size=32, epochs=2, resume=ckpt).fit()
    assert history[0] == first[0] and [r["epoch"] for r in history] == [1, 2]
    assert quiet(make_step(), few, batch_size=32, epochs=1, resume=ckpt).fit() == first  # nothing left to do


def test_resume_with_another_batch_size_is_refused_and_changes_nothing(few, make_step, tmp_path):
    ckpt = tmp_path / "ckpt.npz"
    quiet(make_step(), few, batch_size=32, checkpoint=ckpt, checkpoint_every=2, max_steps=3).fit()
    step = make_step(seed=1)
    before = step.state_dict()
    with pytest.raises(CheckpointError, match="ckpt.npz: the checkpoint's run had batch_size=32, this one has "
                                              "batch_size=16"):
        quiet(step, few, batch_size=16, resume=ckpt).fit()
    assert step.steps == 0
    for name, value in before.items():
        np.testing.assert_array_equal(step.state_dict()[name], value)


def test_nan_loss_stops_with_the_epoch_and_batch(few, make_step):
    with pytest.raises(TrainingDiverged, match=r"loss became (nan|inf) at epoch 1, batch \d+ \(step \d+\); "
                                               r"try a lower learning rate"):
        quiet(make_step(lr=1e9), few, batch_size=32).fit()


def test_bad_labels_are_refused_before_any_step(few, make_step):
    step = make_step()
    as_float = data.Dataset(few.images, few.labels.astype(np.float32))
    with pytest.raises(data.DataError, match="train labels: class indices must be int64, got float32"):
        quiet(step, as_float).fit()
    labels = few.labels.copy()
    labels[7] = 10
    with pytest.raises(data.DataError, match=r"test labels: label 10 at index 7 is out of range \[0, 10\)"):
        quiet(step, few, test=data.Dataset(few.images, labels)).fit()
    labels[7] = -1
    with pytest.raises(data.DataError, match=r"train labels: label -1 at index 7 is out of range"):
        quiet(step, data.Dataset(few.images, labels)).fit()
    assert step.steps == 0


def test_bad_arguments_are_refused(few, make_step):
    step = make_step()
    with pytest.raises(data.DataError, match="the training set is empty"):
        quiet(step, data.Dataset(few.images[:0], few.labels[:0]))
    with pytest.raises(ValueError, match="checkpoint_every=5 needs checkpoint=<path>"):
        quiet(step, few, checkpoint_every=5)


def test_a_loss_without_class_labels_reports_losses_only(few):
    nncc.manual_seed(0)
    step = nncc.compile(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), input_shape=(None, 1, 28, 28),
                        loss=nn.MSELoss(), optimizer=optim.SGD(lr=0.01))
    one_hot = np.eye(10, dtype=np.float32)[few.labels]
    lines = []
    history = Trainer(step, data.Dataset(few.images, one_hot), data.Dataset(few.images[:64], one_hot[:64]),
                      batch_size=32, epochs=2, progress=False, log=lines.append).fit()
    assert [sorted(r) for r in history] == [["epoch", "lr", "test_loss", "train_loss"]] * 2
    assert history[1]["train_loss"] < history[0]["train_loss"]
    assert lines[1].startswith("epoch 2: train loss ") and "accuracy" not in lines[1]


def test_prefetch_changes_neither_batches_nor_results(few, make_step):
    def run(prefetch):
        step = make_step()
        history = quiet(step, few, batch_size=32, epochs=2, seed=3, prefetch=prefetch).fit()
        return history, step.state_dict()

    (h0, s0), (h2, s2) = run(0), run(2)
    assert h0 == h2
    for name, value in s0.items():
        np.testing.assert_array_equal(s2[name], value, err_msg=name)
