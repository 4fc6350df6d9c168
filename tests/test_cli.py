"""The nncc command line, run as a user would (subprocesses), and the self-contained compiled package."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import nncc
from lenet import LeNet

ROOT = Path(__file__).resolve().parents[1]
LENET = str(ROOT / "examples" / "lenet.py") + ":LeNet"
SPEC = str(ROOT / "examples" / "lenet.toml")


def nncc_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "nncc.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=dict(os.environ))


def test_dump_all_stages_and_dot():
    out = nncc_cli("dump", SPEC, "--stage", "all")
    assert out.returncode == 0, out.stderr
    for stage in ("input", "fold-constants", "cse", "dce", "fused", "final"):
        assert f"# ---- {stage} ----" in out.stdout
    dot = nncc_cli("dump", LENET, "--input-shape", "1,28,28", "--format", "dot")
    assert dot.returncode == 0 and dot.stdout.count("digraph") == 1 and "conv2d" in dot.stdout


def test_dump_stats_reports_kernels_flops_memory_and_timings():
    out = nncc_cli("dump", SPEC, "--kind", "train", "--stats", "--batch", "32")
    assert out.returncode == 0, out.stderr
    assert "unfused" in out.stdout and "MFLOP" in out.stdout
    assert "with planning" in out.stdout and "compile timings" in out.stdout


def test_bad_inputs_are_one_line_errors(tmp_path):
    cases = [
        (["dump", str(tmp_path / "missing.toml")], "does not exist"),
        (["dump", LENET], "give the input shape"),
        (["dump", SPEC, "--stage", "nonsense"], "no stage 'nonsense'"),
        (["train", LENET, "--data", str(tmp_path)], "holds no MNIST files"),
    ]
    for args, message in cases:
        out = nncc_cli(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert message in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_run_and_check(tmp_path):
    x = np.random.default_rng(0).random((3, 1, 28, 28), np.float32)
    np.save(tmp_path / "x.npy", x)
    out = nncc_cli("run", SPEC, str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"))
    assert out.returncode == 0, out.stderr
    assert np.load(tmp_path / "y.npy").shape == (3, 10)
    check = nncc_cli("check", SPEC, "--kind", "grad")
    assert check.returncode == 0 and "no divergence" in check.stdout, check.stdout + check.stderr


def test_compiled_package_runs_without_nncc(tmp_path):
    nncc.manual_seed(0)
    model = LeNet()
    np.savez(tmp_path / "w.npz", **model.state_dict())
    out = nncc_cli("compile", LENET, "--input-shape", "1,28,28", "--weights", str(tmp_path / "w.npz"),
                   "-o", str(tmp_path / "pkg" / "lenet_pkg"))
    assert out.returncode == 0, out.stderr
    x = np.random.default_rng(1).random((5, 1, 28, 28), np.float32)
    np.save(tmp_path / "x.npy", x)
    script = (
        "import sys, numpy as np\n"
        "try:\n    import nncc\n    sys.exit('nncc is importable here')\nexcept ImportError:\n    pass\n"
        "import lenet_pkg\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, lenet_pkg.forward(np.load({str(tmp_path / 'x.npy')!r})))\n"
        "m = lenet_pkg.Model()\nm(np.zeros((1, 1, 28, 28), np.float32))\n"
        "try:\n    m(np.zeros((1, 1, 28, 29), np.float32))\nexcept ValueError as e:\n    print(e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["PYTHONPATH"] = str(tmp_path / "pkg")
    # -I isolates from the current directory and user site; -S drops site-packages, where nncc is installed,
    # so re-add only the directories of numpy, numba and scipy
    deps = {str(Path(m.__file__).parents[1]) for m in (np, __import__("numba"), __import__("scipy"))}
    run = subprocess.run([sys.executable, "-S", "-c",
                          f"import sys; sys.path[:0] = {sorted(deps)!r} + [{str(tmp_path / 'pkg')!r}]\n" + script],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr + run.stdout
    assert "input 'x': expected float32 [None, 1, 28, 28], got float32 [1, 1, 28, 29]" in run.stdout
    expected = nncc.compile(model, input_shape=(None, 1, 28, 28))(x)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-6)
