"""End to end, as the README's main job: `nncc train` of LeNet on mnist-small, shortened to one epoch for CI.

Five epochs (the README command) reach 97.85% on the 2,000 test images; one epoch reaches 88.45% (seed 0).
"""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_nncc_train_lenet_one_epoch_on_mnist_small(mnist_dir, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "nncc.cli", "train", str(ROOT / "examples" / "lenet.py") + ":LeNet",
         "--data", str(mnist_dir), "--epochs", "1", "--batch-size", "64", "--lr", "0.01", "--momentum", "0.9",
         "--out", str(tmp_path / "lenet.npz"), "--checkpoint", str(tmp_path / "ckpt.npz")],
        capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    accuracy = float(re.search(r"final test accuracy: ([\d.]+)%", out.stdout).group(1))
    assert accuracy >= 87.0, out.stdout
    assert (tmp_path / "lenet.npz").exists() and (tmp_path / "ckpt.npz").exists()
