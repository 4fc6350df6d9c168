"""Loss and accuracy curves of a training history (matplotlib is an optional dependency: ``pip install nncc[plot]``)."""
from __future__ import annotations

from pathlib import Path


def plot_history(history: list[dict], path) -> Path:
    """Save train/test loss and accuracy per epoch as a PNG; returns the path.

    Example: ``plot_history(Trainer(step, train, test).fit(), "curve.png")``.
    """
    try:
        from matplotlib.figure import Figure  # a bare Figure: no pyplot, so the user's backend is left alone
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'nncc[plot]'") from None
    if not history:
        raise ValueError("plot_history: the history is empty (no epoch finished)")
    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(10, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for split in ("train", "test"):
        if f"{split}_loss" in history[0]:
            ax_loss.plot(epochs, [r[f"{split}_loss"] for r in history], marker="o", label=split)
        if f"{split}_accuracy" in history[0]:
            ax_acc.plot(epochs, [100 * r[f"{split}_accuracy"] for r in history], marker="o", label=split)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        if ax.lines:
            ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path
