"""plot_history writes a PNG, and says clearly what is wrong when it cannot."""
import sys

import pytest

from runtime import plot_history

HISTORY = [{"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5, "test_loss": 0.9, "test_accuracy": 0.6},
           {"epoch": 2, "train_loss": 0.5, "train_accuracy": 0.8, "test_loss": 0.6, "test_accuracy": 0.7}]


def test_plot_writes_a_png(tmp_path):
    path = plot_history(HISTORY, tmp_path / "curve.png")
    assert path == tmp_path / "curve.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    train_only = [{k: v for k, v in r.items() if not k.startswith("test")} for r in HISTORY]
    assert plot_history(train_only, tmp_path / "train.png").stat().st_size > 1000


def test_empty_history_and_missing_matplotlib_are_explained(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="the history is empty"):
        plot_history([], tmp_path / "curve.png")
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if matplotlib were not installed
    with pytest.raises(ImportError, match="plotting needs matplotlib: pip install 'nncc\\[plot\\]'"):
        plot_history(HISTORY, tmp_path / "curve.png")
