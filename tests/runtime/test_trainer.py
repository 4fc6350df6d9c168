"""The Trainer: real training on mnist-small, bit-identical resume, NaN stop, checkpoint safety, plots."""
import numpy as np
import pytest

import nncc
from nncc import nn
from runtime import CheckpointError, Trainer, TrainingDiverged, data, load_checkpoint, optim, save_checkpoint
from runtime.plot import plot_history


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))


def compiled_mlp(seed=0, lr=0.05):
    nncc.manual_seed(seed)
    return nncc.compile(mlp(), input_shape=(None, 1, 28, 28), loss=nn.CrossEntropyLoss(),
                        optimizer=optim.SGD(lr=lr, momentum=0.9))


@pytest.fixture(scope="module")
def small(mnist_dir):
    train, test = data.mnist(mnist_dir)
    return data.Dataset(train.images[:2000], train.labels[:2000]), data.Dataset(test.images[:500], test.labels[:500])


def test_one_epoch_learns(small):
    train, test = small
    history = Trainer(compiled_mlp(), train, test, batch_size=32, epochs=1, progress=False, log=lambda s: None).fit()
    assert history[0]["test_accuracy"] >= 0.70  # chance is 0.10; the LeNet end-to-end test checks the real bar
    assert history[0]["train_loss"] < 1.5  # from ln(10) = 2.3 at the start


def test_killed_and_resumed_run_ends_bit_identical(small, tmp_path):
    train, _ = small
    train = data.Dataset(train.images[:320], train.labels[:320])
    full = compiled_mlp()
    Trainer(full, train, batch_size=32, epochs=2, seed=5, progress=False, log=lambda s: None).fit()

    ckpt = tmp_path / "ckpt.npz"
    first = compiled_mlp()
    Trainer(first, train, batch_size=32, epochs=2, seed=5, checkpoint=ckpt, checkpoint_every=3, progress=False,
            log=lambda s: None, max_steps=14).fit()  # "killed" mid-epoch 2, last checkpoint after step 12
    resumed = compiled_mlp(seed=99)  # different initial weights: everything must come from the checkpoint
    Trainer(resumed, train, batch_size=32, epochs=2, seed=0, checkpoint=ckpt, resume=ckpt, progress=False,
            log=lambda s: None).fit()
    for name, value in full.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[name], value, err_msg=name)


def test_nan_loss_stops_with_a_clear_message(small):
    train, _ = small
    with pytest.raises(TrainingDiverged, match=r"loss became (nan|inf) at epoch 1, batch \d+"):
        Trainer(compiled_mlp(lr=1e9), train, batch_size=32, epochs=1, progress=False, log=lambda s: None).fit()


def test_checkpoint_of_another_model_is_refused(tmp_path):
    path = tmp_path / "other.npz"
    nncc.manual_seed(0)
    other = nncc.compile(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), input_shape=(None, 1, 28, 28),
                         loss=nn.CrossEntropyLoss(), optimizer=optim.SGD(lr=0.1))
    save_checkpoint(path, other, {"epoch": 0})
    with pytest.raises(CheckpointError, match=r"other.npz: checkpoint of another model: .*'1.weight'"):
        load_checkpoint(path, compiled_mlp())


def test_corrupt_checkpoint_is_named_and_a_failed_write_keeps_the_good_one(tmp_path, monkeypatch):
    step = compiled_mlp()
    good = tmp_path / "ckpt.npz"
    save_checkpoint(good, step, {"epoch": 1})
    before = good.read_bytes()
    (tmp_path / "bad.npz").write_bytes(before[: len(before) // 2])
    with pytest.raises(CheckpointError, match="bad.npz: not a readable nncc checkpoint"):
        load_checkpoint(tmp_path / "bad.npz", step)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(good, step, {"epoch": 2})
    assert good.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_plot_writes_a_png(tmp_path):
    history = [{"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5, "test_loss": 0.9, "test_accuracy": 0.6},
               {"epoch": 2, "train_loss": 0.5, "train_accuracy": 0.8, "test_loss": 0.6, "test_accuracy": 0.7}]
    path = plot_history(history, tmp_path / "curve.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_schedules_set_the_compiled_learning_rate():
    step = compiled_mlp(lr=0.1)
    sched = optim.StepLR(step, step_size=2, gamma=0.5)
    for _ in range(4):
        sched.step()
    assert step.lr == pytest.approx(0.025)
    cosine = optim.CosineAnnealingLR(compiled_mlp(lr=0.1), T_max=4)
    for _ in range(4):
        cosine.step()
    assert cosine.target.lr == pytest.approx(0.0)
