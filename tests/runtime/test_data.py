"""MNIST IDX reading and the DataLoader."""
import gzip

import numpy as np
import pytest

from runtime import data


def test_mnist_small_loads_with_the_documented_counts(mnist_dir):
    train, test = data.mnist(mnist_dir)
    assert train.images.shape == (8000, 1, 28, 28) and test.images.shape == (2000, 1, 28, 28)
    assert train.images.dtype == np.float32 and train.labels.dtype == np.int64
    assert np.bincount(test.labels).tolist() == [207, 230, 198, 207, 194, 169, 202, 215, 187, 191]
    assert abs(float(train.images.mean())) < 0.2  # normalised with MNIST's mean and std


def test_directory_without_mnist_names_the_directory_and_files(tmp_path):
    with pytest.raises(data.DataError, match=rf"{tmp_path} holds no MNIST files .*train-images-idx3-ubyte"):
        data.mnist(tmp_path)


def test_download_offline_fails_clearly(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise data.urllib.error.URLError("network unreachable")

    monkeypatch.setattr(data.urllib.request, "urlopen", offline)
    with pytest.raises(data.DataError, match="could not download train-images-idx3-ubyte.gz .*offline"):
        data.mnist(tmp_path, download=True)


def _write_idx(path, array, magic_type=0x08, truncate=0):
    header = bytes([0, 0, magic_type, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(payload[:len(payload) - truncate])


def test_truncated_and_corrupt_idx_files_are_named(tmp_path):
    _write_idx(tmp_path / "a-idx3-ubyte", np.zeros((3, 2, 2)), truncate=5)
    with pytest.raises(data.DataError, match=r"a-idx3-ubyte: IDX header says \[3, 2, 2\]"):
        data.read_idx(tmp_path / "a-idx3-ubyte")
    (tmp_path / "b.gz").write_bytes(b"not gzip at all")
    with pytest.raises(data.DataError, match="b.gz: cannot read"):
        data.read_idx(tmp_path / "b.gz")
    (tmp_path / "c").write_bytes(b"\x12\x34\x08\x01")
    with pytest.raises(data.DataError, match="c: not an IDX file"):
        data.read_idx(tmp_path / "c")


def test_image_label_count_mismatch(tmp_path):
    for name, arr in [("train-images-idx3-ubyte", np.zeros((3, 28, 28))), ("train-labels-idx1-ubyte", np.zeros(2)),
                      ("t10k-images-idx3-ubyte", np.zeros((1, 28, 28))), ("t10k-labels-idx1-ubyte", np.zeros(1))]:
        _write_idx(tmp_path / name, arr)
    with gzip.open(tmp_path / "unused.gz", "wb") as f:
        f.write(b"")
    with pytest.raises(data.DataError, match="has 3 images but .*train-labels-idx1-ubyte has 2 labels"):
        data.mnist(tmp_path)


def test_dataloader_batches_shuffle_and_drop_last():
    ds = data.Dataset(np.arange(10, dtype=np.float32)[:, None], np.arange(10, dtype=np.int64))
    plain = list(data.DataLoader(ds, batch_size=4))
    assert [len(y) for _, y in plain] == [4, 4, 2]
    assert len(data.DataLoader(ds, batch_size=4, drop_last=True)) == 2
    loader = data.DataLoader(ds, batch_size=4, shuffle=True, seed=3)
    first = np.concatenate([y for _, y in loader])
    second = np.concatenate([y for _, y in loader])
    assert sorted(first) == list(range(10)) and not np.array_equal(first, second)
    again = data.DataLoader(ds, batch_size=4, shuffle=True, seed=3)
    np.testing.assert_array_equal(np.concatenate([y for _, y in again]), first)
    resumed = np.concatenate([y for _, y in again.batches(0, start=1)])
    np.testing.assert_array_equal(resumed, first[4:])
