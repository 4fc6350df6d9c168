"""Data loading: the MNIST IDX reader and a DataLoader.

``mnist(dir)`` reads the four standard IDX files (gzip or not) from a directory, so the same code trains on
the full MNIST set wherever a user has it. Example::

    train, test = data.mnist("../shared/data/mnist-small")
    for x, y in data.DataLoader(train, batch_size=64, shuffle=True, seed=0):
        ...
"""
from __future__ import annotations

import gzip
import math
import queue
import shutil
import threading
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/")
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"),
               0x0E: np.dtype(">f8")}


class DataError(ValueError):
    """A data file, directory or array that cannot be used; the message names it."""


@dataclass
class Dataset:
    """Images (float32, [n, C, H, W]) and labels [n] (int64 class indices for classification).

    Example: ``Dataset(images[:500], labels[:500])`` is a subset.
    """

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if len(self.images) != len(self.labels):
            raise DataError(f"Dataset: {len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed when its name ends in .gz); errors name the file."""
    path = Path(path)
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + math.prod(dims) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"{path}: IDX header says {dims} ({expected} bytes) but the file has {len(raw)} bytes "
                        f"({'truncated' if len(raw) < expected else 'trailing data'})")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims)


def _find(directory: Path, stem: str) -> Optional[Path]:
    for name in (stem, stem + ".gz"):
        if (directory / name).exists():
            return directory / name
    return None


def _missing(directory: Path) -> list[str]:
    return [stem for stem in MNIST_FILES.values() if not _find(directory, stem)]


def _fetch(stem: str, directory: Path, timeout: float) -> list[str]:
    """Download ``stem``.gz from the first mirror that answers; the errors of the mirrors that failed."""
    errors = []
    part = directory / (stem + ".gz.part")
    for mirror in MNIST_MIRRORS:
        try:
            with urllib.request.urlopen(mirror + stem + ".gz", timeout=timeout) as response, open(part, "wb") as f:
                shutil.copyfileobj(response, f)
            part.replace(directory / (stem + ".gz"))  # a partial download never looks like a data file
            return []
        except (urllib.error.URLError, OSError) as e:
            errors.append(f"{mirror}: {e}")
    part.unlink(missing_ok=True)
    return errors


def download_mnist(directory, timeout: float = 5.0) -> None:
    """Fetch the missing MNIST files into ``directory``; a clear error naming it and the files when offline."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    failed = {stem: errors for stem in _missing(directory) if (errors := _fetch(stem, directory, timeout))}
    if failed:
        detail = "; ".join(f"{stem}.gz: {' | '.join(errors)}" for stem, errors in failed.items())
        raise DataError(f"could not download the MNIST files {[s + '.gz' for s in failed]} into {directory} "
                        f"(offline?); put them there by hand. Errors: {detail}")


def mnist(directory, download: bool = False, normalize: bool = True) -> tuple[Dataset, Dataset]:
    """(train, test) from the standard IDX files in ``directory``; images scaled to [0, 1] and normalised with
    MNIST's mean and std, shaped [n, 1, 28, 28]; labels int64.

    Example: ``train, test = mnist("data/mnist", download=True)``.
    """
    directory = Path(directory)
    if _missing(directory) and download:
        download_mnist(directory)
    missing = _missing(directory)
    if missing:
        raise DataError(f"{directory} holds no MNIST files {missing} (expected these names, optionally .gz); "
                        f"pass download=True (--download) to fetch them")
    files = {key: _find(directory, stem) for key, stem in MNIST_FILES.items()}
    return (_load_split(files["train_images"], files["train_labels"], normalize),
            _load_split(files["test_images"], files["test_labels"], normalize))


def _read_ubyte(path: Path, ndim: int, what: str) -> np.ndarray:
    array = read_idx(path)
    if array.dtype != np.uint8 or array.ndim != ndim:
        raise DataError(f"{path}: expected {what} as unsigned bytes with {ndim} dimension(s), "
                        f"got {array.dtype} {list(array.shape)}")
    return array


def _load_split(images_path: Path, labels_path: Path, normalize: bool) -> Dataset:
    images = _read_ubyte(images_path, 3, "[n, rows, cols] images")
    labels = _read_ubyte(labels_path, 1, "[n] labels")
    if len(images) != len(labels):
        raise DataError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    x = images.astype(np.float32)[:, None] / np.float32(255.0)
    if normalize:
        x = (x - np.float32(MNIST_MEAN)) / np.float32(MNIST_STD)
    return Dataset(x, labels.astype(np.int64))


def prefetch(items: Iterable[Any], depth: int = 1, stage: Optional[Callable[[Any], Any]] = None) -> Iterator[Any]:
    """Iterate ``items`` on a background thread, ``depth`` items (and one in hand) ahead of the consumer,
    passing each through ``stage`` there (e.g. a copy to the GPU); the order is unchanged and the producer's
    errors are raised in the consumer. Closing the iterator stops the thread.

    Example: ``for x, y in prefetch(loader.batches(0), stage=lambda b: b): train(x, y)``.
    """
    if depth < 1:
        raise ValueError(f"prefetch depth must be positive, got {depth}")
    ready: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def offer(entry) -> bool:  # False once the consumer is gone
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((True, stage(item) if stage else item)):
                    return
            offer((False, None))
        except BaseException as e:  # handed to the consumer, which re-raises it with its traceback
            offer((False, e))

    thread = threading.Thread(target=produce, name="nncc-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            more, item = ready.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        thread.join()


class DataLoader:
    """Batches ``(x, y)`` of a Dataset: seeded shuffle (a new order every epoch), optional drop_last and transform.

    The last partial batch is kept by default: compiled modules serve any batch size. ``prefetch=n`` prepares
    up to n batches ahead on a background thread (gathering, transform, and ``stage``, e.g. a copy to the GPU,
    whose results the loader then yields) while the caller works on the current one; the batches and their
    order are the same as without it. Example::

        loader = DataLoader(train, batch_size=64, shuffle=True, seed=0)
        for epoch in range(3):
            for x, y in loader:   # each pass is the next epoch's order
                ...
    """

    def __init__(self, dataset: Dataset, batch_size: int = 64, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False, transform: Optional[Callable[[np.ndarray], np.ndarray]] = None,
                 prefetch: int = 0, stage: Optional[Callable[[tuple[np.ndarray, np.ndarray]], Any]] = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if prefetch < 0:
            raise ValueError(f"prefetch must be 0 (off) or a positive number of batches, got {prefetch}")
        self.dataset, self.batch_size, self.shuffle = dataset, batch_size, shuffle
        self.seed, self.drop_last, self.transform = seed, drop_last, transform
        self.prefetch, self.stage = prefetch, stage
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The sample order of ``epoch``: reproducible from (seed, epoch) alone, so a resumed run repeats it.

        The generator is seeded with the pair [seed, epoch] rather than seed + epoch, so that run 1's first
        epoch is not run 0's second.
        """
        n = len(self.dataset)
        return np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)

    def batches(self, epoch: int, start: int = 0) -> Iterator[Any]:
        """Batches of ``epoch`` from batch index ``start`` on (a resumed epoch skips those already done), each
        passed through ``stage`` when there is one."""
        gathered = self._gather(epoch, start)
        if self.prefetch:
            yield from prefetch(gathered, self.prefetch, self.stage)  # closing this generator stops the thread
        else:
            yield from map(self.stage, gathered) if self.stage else gathered

    def _gather(self, epoch: int, start: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order = self.order(epoch)
        for b in range(start, len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            x = self.dataset.images[idx]
            yield (self.transform(x) if self.transform else x), self.dataset.labels[idx]

    def __iter__(self) -> Iterator[Any]:
        yield from self.batches(self.epoch)
        self.epoch += 1
