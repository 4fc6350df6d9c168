"""MNIST IDX reading (plain, gzip, download, corrupt files) and the DataLoader."""
import gzip
import io

import numpy as np
import pytest

from runtime import data


def _idx_bytes(array, magic_type=0x08):
    header = bytes([0, 0, magic_type, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(data._IDX_DTYPES[magic_type]).tobytes()


def _write_idx(path, array, magic_type=0x08, truncate=0):
    payload = _idx_bytes(array, magic_type)
    path.write_bytes(payload[:len(payload) - truncate])


def _synthetic_mnist(directory, n_train=3, n_test=2, gz=False):
    """Tiny IDX files under the standard names; image i is filled with the value 40 * i, label i is i."""
    directory.mkdir(exist_ok=True)
    arrays = {"train-images-idx3-ubyte": np.arange(n_train)[:, None, None] * 40 + np.zeros((1, 28, 28), int),
              "train-labels-idx1-ubyte": np.arange(n_train),
              "t10k-images-idx3-ubyte": np.arange(n_test)[:, None, None] * 40 + np.zeros((1, 28, 28), int),
              "t10k-labels-idx1-ubyte": np.arange(n_test)}
    for name, array in arrays.items():
        payload = _idx_bytes(array)
        (directory / (name + ".gz" if gz else name)).write_bytes(gzip.compress(payload) if gz else payload)
    return directory


def test_mnist_small_loads_with_the_documented_counts(mnist_small):
    train, test = mnist_small
    assert train.images.shape == (8000, 1, 28, 28) and test.images.shape == (2000, 1, 28, 28)
    assert train.images.dtype == np.float32 and train.labels.dtype == np.int64
    assert np.bincount(train.labels).tolist() == [773, 905, 834, 803, 788, 723, 756, 813, 787, 818]
    assert np.bincount(test.labels).tolist() == [207, 230, 198, 207, 194, 169, 202, 215, 187, 191]
    assert abs(float(train.images.mean())) < 0.1 and abs(float(train.images.std()) - 1) < 0.1


@pytest.mark.parametrize("gz", [False, True])
def test_plain_and_gzip_files_read_the_same_normalised_values(tmp_path, gz):
    train, test = data.mnist(_synthetic_mnist(tmp_path / "d", gz=gz))
    assert train.images.shape == (3, 1, 28, 28) and test.images.shape == (2, 1, 28, 28)
    np.testing.assert_array_equal(train.labels, [0, 1, 2])
    expected = (np.array([0, 40, 80], np.float32) / 255 - 0.1307) / 0.3081
    np.testing.assert_allclose(train.images[:, 0, 5, 7], expected, rtol=1e-6)
    raw, _ = data.mnist(tmp_path / "d", normalize=False)
    np.testing.assert_allclose(raw.images[:, 0, 0, 0], [0, 40 / 255, 80 / 255], rtol=1e-6)


def test_directory_without_mnist_names_the_directory_and_files(tmp_path):
    with pytest.raises(data.DataError, match=rf"{tmp_path} holds no MNIST files .*train-images-idx3-ubyte.*"
                                             r"t10k-labels-idx1-ubyte.*download=True"):
        data.mnist(tmp_path)


def test_download_offline_names_the_directory_and_every_missing_file(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise data.urllib.error.URLError("network unreachable")

    monkeypatch.setattr(data.urllib.request, "urlopen", offline)
    target = tmp_path / "mnist"
    with pytest.raises(data.DataError) as e:
        data.mnist(target, download=True)
    message = str(e.value)
    assert f"into {target} (offline?)" in message and "network unreachable" in message
    assert all(stem + ".gz" in message for stem in data.MNIST_FILES.values())
    assert list(target.iterdir()) == []  # no partial downloads left behind


def test_download_fetches_the_missing_files_from_a_mirror(tmp_path, monkeypatch):
    source = _synthetic_mnist(tmp_path / "source", gz=True)
    requested = []

    def fake_urlopen(url, timeout):
        requested.append(url)
        if url.startswith(data.MNIST_MIRRORS[0]):
            raise data.urllib.error.URLError("first mirror down")
        return io.BytesIO((source / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(data.urllib.request, "urlopen", fake_urlopen)
    target = _synthetic_mnist(tmp_path / "target", gz=True)
    (target / "t10k-labels-idx1-ubyte.gz").unlink()
    train, test = data.mnist(target, download=True)
    assert requested == [m + "t10k-labels-idx1-ubyte.gz" for m in data.MNIST_MIRRORS]
    assert len(train) == 3 and test.labels.tolist() == [0, 1]


def test_truncated_and_corrupt_idx_files_are_named(tmp_path):
    _write_idx(tmp_path / "a-idx3-ubyte", np.zeros((3, 2, 2)), truncate=5)
    with pytest.raises(data.DataError, match=r"a-idx3-ubyte: IDX header says \[3, 2, 2\] .*truncated"):
        data.read_idx(tmp_path / "a-idx3-ubyte")
    (tmp_path / "a2").write_bytes(_idx_bytes(np.zeros(4)) + b"\0")
    with pytest.raises(data.DataError, match=r"a2: IDX header says \[4\] .*trailing data"):
        data.read_idx(tmp_path / "a2")
    (tmp_path / "b.gz").write_bytes(b"not gzip at all")
    with pytest.raises(data.DataError, match="b.gz: cannot read"):
        data.read_idx(tmp_path / "b.gz")
    (tmp_path / "b2.gz").write_bytes(gzip.compress(_idx_bytes(np.zeros((5, 28, 28))))[:-30])
    with pytest.raises(data.DataError, match="b2.gz: cannot read"):
        data.read_idx(tmp_path / "b2.gz")
    (tmp_path / "c").write_bytes(b"\x12\x34\x08\x01")
    with pytest.raises(data.DataError, match="c: not an IDX file"):
        data.read_idx(tmp_path / "c")
    (tmp_path / "d").write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(data.DataError, match="d: truncated IDX header"):
        data.read_idx(tmp_path / "d")


def test_corrupt_file_inside_the_mnist_directory_is_named(tmp_path):
    directory = _synthetic_mnist(tmp_path / "d")
    _write_idx(directory / "t10k-images-idx3-ubyte", np.zeros((2, 28, 28)), truncate=100)
    with pytest.raises(data.DataError, match=r"t10k-images-idx3-ubyte: IDX header says \[2, 28, 28\]"):
        data.mnist(directory)
    _write_idx(directory / "t10k-images-idx3-ubyte", np.zeros((2, 28 * 28)))
    with pytest.raises(data.DataError, match=r"t10k-images-idx3-ubyte: expected \[n, rows, cols\] images .*\[2, 784\]"):
        data.mnist(directory)
    _write_idx(directory / "t10k-images-idx3-ubyte", np.zeros((2, 28, 28)), magic_type=0x0C)
    with pytest.raises(data.DataError, match=r"t10k-images-idx3-ubyte: expected .* unsigned bytes .*got >i4"):
        data.mnist(directory)


def test_image_label_count_mismatch_names_both_files(tmp_path):
    directory = _synthetic_mnist(tmp_path / "d")
    _write_idx(directory / "train-labels-idx1-ubyte", np.zeros(2))
    with pytest.raises(data.DataError, match="train-images-idx3-ubyte has 3 images but .*train-labels-idx1-ubyte "
                                             "has 2 labels"):
        data.mnist(directory)


def test_dataset_refuses_mismatched_lengths():
    with pytest.raises(data.DataError, match="3 images but 2 labels"):
        data.Dataset(np.zeros((3, 1), np.float32), np.zeros(2, np.int64))


def _numbers(n=10):
    return data.Dataset(np.arange(n, dtype=np.float32)[:, None], np.arange(n, dtype=np.int64))


def test_dataloader_batches_keep_the_last_partial_batch_unless_drop_last():
    plain = data.DataLoader(_numbers(), batch_size=4)
    batches = list(plain)
    assert len(plain) == 3 and [len(y) for _, y in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), np.arange(10))
    np.testing.assert_array_equal(batches[1][0][:, 0], [4, 5, 6, 7])  # images and labels stay paired
    dropped = data.DataLoader(_numbers(), batch_size=4, drop_last=True)
    assert len(dropped) == 2 and [len(y) for _, y in dropped] == [4, 4]
    assert len(data.DataLoader(_numbers(), batch_size=5, drop_last=True)) == 2
    with pytest.raises(ValueError, match="batch_size must be positive"):
        data.DataLoader(_numbers(), batch_size=0)


def test_dataloader_shuffle_is_seeded_per_epoch_and_resumable():
    loader = data.DataLoader(_numbers(), batch_size=4, shuffle=True, seed=3)
    first = np.concatenate([y for _, y in loader])
    second = np.concatenate([y for _, y in loader])
    assert sorted(first) == list(range(10)) and sorted(second) == list(range(10))
    assert not np.array_equal(first, second) and not np.array_equal(first, np.arange(10))
    again = data.DataLoader(_numbers(), batch_size=4, shuffle=True, seed=3)
    np.testing.assert_array_equal(np.concatenate([y for _, y in again]), first)
    np.testing.assert_array_equal(np.concatenate([y for _, y in again.batches(0, start=1)]), first[4:])
    np.testing.assert_array_equal(again.order(1), second)
    other_seed = data.DataLoader(_numbers(), batch_size=4, shuffle=True, seed=4)
    assert not np.array_equal(other_seed.order(0), first)
    assert not np.array_equal(data.DataLoader(_numbers(), shuffle=True, seed=4).order(0), loader.order(1))


def test_dataloader_transform_applies_to_images_only():
    loader = data.DataLoader(_numbers(), batch_size=5, transform=lambda x: x * 10)
    x, y = next(iter(loader))
    np.testing.assert_array_equal(x[:, 0], [0, 10, 20, 30, 40])
    np.testing.assert_array_equal(y, [0, 1, 2, 3, 4])


def test_prefetch_keeps_the_order_runs_ahead_on_another_thread_and_stops_when_closed():
    import threading
    import time

    seen = []  # (batch, thread) as the producer gathers them

    def record(x):
        seen.append((int(x[0, 0]), threading.get_ident()))
        return x

    loader = data.DataLoader(_numbers(), batch_size=2, shuffle=True, seed=1, transform=record, prefetch=2)
    plain = data.DataLoader(_numbers(), batch_size=2, shuffle=True, seed=1)
    batches = loader.batches(0)
    x, y = next(batches)
    np.testing.assert_array_equal(y, plain.order(0)[:2])
    deadline = time.monotonic() + 5
    while len(seen) < 4 and time.monotonic() < deadline:  # two queued and one in hand, without being asked
        time.sleep(0.01)
    time.sleep(0.1)
    assert len(seen) == 4 and all(t != threading.get_ident() for _, t in seen)
    batches.close()
    assert not any(t.name == "nncc-prefetch" for t in threading.enumerate())
    got = [y for _, y in loader.batches(1, start=1)]
    want = [y for _, y in plain.batches(1, start=1)]
    assert len(got) == len(want) == 4 and all(np.array_equal(a, b) for a, b in zip(got, want))


def test_prefetch_raises_the_producers_error_in_the_consumer():
    def fail(x):
        if x[0, 0] >= 4:
            raise RuntimeError("bad image")
        return x

    batches = data.DataLoader(_numbers(), batch_size=2, transform=fail, prefetch=1).batches(0)
    assert [len(y) for _, y in (next(batches), next(batches))] == [2, 2]
    with pytest.raises(RuntimeError, match="bad image"):
        next(batches)
    with pytest.raises(ValueError, match="prefetch must be 0"):
        data.DataLoader(_numbers(), prefetch=-1)
