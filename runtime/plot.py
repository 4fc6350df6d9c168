"""Loss and accuracy curves of a training history (matplotlib is an optional dependency: ``pip install nncc[plot]``)."""
from __future__ import annotations

from pathlib import Path


def plot_history(history: list[dict], path) -> Path:
    """Save train/test loss and accuracy per epoch as a PNG. Example: ``plot_history(trainer.history, "curve.png")``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'nncc[plot]'") from None
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for split in ("train", "test"):
        if history and f"{split}_loss" in history[0]:
            ax_loss.plot(epochs, [r[f"{split}_loss"] for r in history], marker="o", label=split)
            ax_acc.plot(epochs, [100 * r[f"{split}_accuracy"] for r in history], marker="o", label=split)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
