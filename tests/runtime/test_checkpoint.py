"""Checkpoints: a full round trip, no pickle, atomic writes, and clear refusals that leave the step unchanged."""
import numpy as np
import pytest

import nncc
from nncc import nn
from runtime import CheckpointError, Trainer, load_checkpoint, optim, save_checkpoint

RNG = np.random.default_rng(0)
X = RNG.standard_normal((8, 1, 28, 28)).astype(np.float32)
Y = np.arange(8, dtype=np.int64) % 10


@pytest.fixture
def trained(make_step):
    """A step two updates in, with a non-default learning rate and dropout seed."""
    step = make_step(seed=0)
    step.train_step(X, Y)
    step.train_step(X, Y)
    step.lr, step.seed = 0.0123, 7
    return step


def _snapshot(step):
    return step.state_dict(), step.optimizer_state_dict(), step.lr, step.seed


def _assert_same(a, b):
    for got, want in zip(a[:2], b[:2]):
        assert got.keys() == want.keys()
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert a[2:] == b[2:]


def test_round_trip_restores_everything(trained, make_step, tmp_path):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, trained, {"epoch": 3, "history": [{"loss": 0.1}]})
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
    assert {"model/1.weight", "model/3.bias", "optim/step", "meta/lr", "meta/dropout_seed"} <= keys
    assert any(k.startswith("optim/") and "momentum" in k for k in keys)
    fresh = make_step(seed=1)
    assert load_checkpoint(path, fresh) == {"epoch": 3, "history": [{"loss": 0.1}]}
    _assert_same(_snapshot(fresh), _snapshot(trained))
    assert fresh.steps == 2
    np.testing.assert_array_equal(fresh.train_step(X, Y), trained.train_step(X, Y))  # continues identically


def test_checkpoint_of_another_model_names_the_tensor(trained, tmp_path):
    path = tmp_path / "other.npz"
    nncc.manual_seed(0)
    other = nncc.compile(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), input_shape=(None, 1, 28, 28),
                         loss=nn.CrossEntropyLoss(), optimizer=optim.SGD(lr=0.1))
    save_checkpoint(path, other, {})
    before = _snapshot(trained)
    with pytest.raises(CheckpointError, match=r"other.npz: checkpoint of another model: .*'1.weight' has shape "
                                              r"\[10, 784\], this model's is \[16, 784\]"):
        load_checkpoint(path, trained)
    _assert_same(_snapshot(trained), before)


def test_corrupt_missing_and_pickled_files_are_named(trained, tmp_path):
    good = tmp_path / "ckpt.npz"
    save_checkpoint(good, trained, {})
    before = _snapshot(trained)
    (tmp_path / "bad.npz").write_bytes(good.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="bad.npz: not a readable nncc checkpoint"):
        load_checkpoint(tmp_path / "bad.npz", trained)
    with pytest.raises(CheckpointError, match="nothing.npz: no such checkpoint file"):
        load_checkpoint(tmp_path / "nothing.npz", trained)
    np.savez(tmp_path / "pickled.npz", **{"meta/json": np.array([{"epoch": 1}], dtype=object)})
    with pytest.raises(CheckpointError, match="pickled.npz: not a readable nncc checkpoint .*allow_pickle"):
        load_checkpoint(tmp_path / "pickled.npz", trained)
    np.savez(tmp_path / "plain.npz", weights=np.zeros(3))
    with pytest.raises(CheckpointError, match="plain.npz: not an nncc checkpoint"):
        load_checkpoint(tmp_path / "plain.npz", trained)
    _assert_same(_snapshot(trained), before)


def test_a_failure_half_way_through_loading_rolls_back(trained, make_step, tmp_path):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, make_step(seed=3), {})
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "model/3.bias"}  # the optimizer state loads, the model fails
    np.savez(path, **arrays)
    before = _snapshot(trained)
    with pytest.raises(CheckpointError, match=r"ckpt.npz: .*missing \['3.bias'\]"):
        load_checkpoint(path, trained)
    _assert_same(_snapshot(trained), before)
    assert trained.steps == 2


def test_a_failed_write_keeps_the_good_checkpoint(trained, tmp_path, monkeypatch):
    good = tmp_path / "ckpt.npz"
    save_checkpoint(good, trained, {"epoch": 1})
    before = good.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(good, trained, {"epoch": 2})
    assert good.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.npz"]  # no temporary file left


def test_resuming_from_a_corrupt_file_never_overwrites_the_good_one(few, make_step, tmp_path):
    good, bad = tmp_path / "good.npz", tmp_path / "bad.npz"
    Trainer(make_step(), few, batch_size=32, checkpoint=good, progress=False, log=lambda s: None).fit()
    before = good.read_bytes()
    bad.write_bytes(before[: len(before) // 2])
    with pytest.raises(CheckpointError, match="bad.npz: not a readable nncc checkpoint"):
        Trainer(make_step(), few, batch_size=32, checkpoint=good, resume=bad, progress=False,
                log=lambda s: None).fit()
    assert good.read_bytes() == before
