"""``export_package``: the package runs in a fresh process that cannot import nncc and gives the same outputs;
model names stay data."""
import json
import subprocess
import sys
from pathlib import Path

import llvmlite
import numba
import numpy as np
import pytest

import nncc
from nncc.errors import NNCCError
from nncc.export import export_package
from lenet import LeNet

NO_NNCC = """
try:
    import nncc
except ImportError:
    pass
else:
    raise SystemExit("nncc is importable in the isolated process")
"""


def run_isolated(code: str, package_parent: Path, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``code`` where only numpy, numba, llvmlite and ``package_parent`` are importable: -I ignores PYTHON*
    variables, the current directory and the user site; -S skips site-packages (and so the editable nncc
    install), whose numpy, numba and llvmlite are put back on sys.path by hand; SciPy, installed beside them, is
    blocked."""
    deps = sorted({str(Path(m.__file__).parents[1]) for m in (np, numba, llvmlite)})
    prelude = f"import sys\nsys.path[:0] = {[*deps, str(package_parent)]!r}\nsys.modules['scipy'] = None\n" + NO_NNCC
    return subprocess.run([sys.executable, "-I", "-S", "-c", prelude + code], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_lenet_package_runs_without_nncc_and_matches_the_compiled_module(tmp_path):
    nncc.manual_seed(0)
    compiled = nncc.compile(LeNet(), input_shape=(None, 1, 28, 28))
    package = export_package(compiled, tmp_path / "out" / "lenet_pkg")
    assert package == tmp_path / "out" / "lenet_pkg"
    assert "import lenet_pkg" in (package / "README.md").read_text()
    rng = np.random.default_rng(0)
    x5, x1 = rng.random((5, 1, 28, 28), np.float32), rng.random((1, 1, 28, 28), np.float32)
    other = {name: value * 0.5 for name, value in compiled.state_dict().items()}
    np.save(tmp_path / "x5.npy", x5)
    np.save(tmp_path / "x1.npy", x1)
    np.savez(tmp_path / "other.npz", **other)
    np.savez(tmp_path / "partial.npz", **{k: v for k, v in other.items() if k != "fc3.bias"})
    run = run_isolated("""
import numpy as np
import lenet_pkg
np.save("y5.npy", lenet_pkg.forward(np.load("x5.npy")))
np.save("y1.npy", lenet_pkg.forward(np.load("x1.npy")))
np.save("y_other.npy", lenet_pkg.Model("other.npz")(np.load("x5.npy")))
for bad in (np.zeros((1, 1, 28, 29), np.float32), np.zeros((1, 1, 28, 28)), np.zeros((28, 28), np.float32)):
    try:
        lenet_pkg.forward(bad)
    except ValueError as e:
        print(e)
try:
    lenet_pkg.Model("partial.npz")
except ValueError as e:
    print(e)
""", tmp_path / "out", tmp_path)
    assert run.returncode == 0, run.stderr + run.stdout
    np.testing.assert_allclose(np.load(tmp_path / "y5.npy"), compiled(x5), rtol=1e-6)
    np.testing.assert_allclose(np.load(tmp_path / "y1.npy"), compiled(x1), rtol=1e-6)
    compiled.load_state_dict(other)
    np.testing.assert_allclose(np.load(tmp_path / "y_other.npy"), compiled(x5), rtol=1e-6)
    assert run.stdout.splitlines() == [
        "input 'x': expected float32 [None, 1, 28, 28] (None: any size), got float32 [1, 1, 28, 29]",
        "input 'x': expected float32 [None, 1, 28, 28] (None: any size), got float64 [1, 1, 28, 28]",
        "input 'x': expected float32 [None, 1, 28, 28] (None: any size), got float32 [28, 28]",
        "partial.npz: missing tensors ['fc3.bias'], unexpected tensors []",
    ]


# a layer name that would run code wherever it was pasted into source: in a comment, a string or a docstring
EVIL = "fc\n    getattr(__import__('os'), 'mkdir')('PWNED')\n#\"\"\"'''"


def test_model_names_stay_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the injected code would make its directory
    spec = tmp_path / "evil.toml"
    spec.write_text(f'[model]\ninput_shape = [4]\n[[layers]]\ntype = "Linear"\nname = {json.dumps(EVIL)}\n'
                    f'in_features = 4\nout_features = 3\n')
    compiled = nncc.compile(spec)
    package = export_package(compiled, tmp_path / "out" / "evil_pkg")
    manifest = json.loads((package / "manifest.json").read_text())
    assert [s["name"] for s in manifest["inputs"]] == ["x", f"{EVIL}.weight", f"{EVIL}.bias"]
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.save(tmp_path / "x.npy", x)
    run = run_isolated("import numpy as np, evil_pkg\nnp.save('y.npy', evil_pkg.forward(np.load('x.npy')))\n",
                       tmp_path / "out", tmp_path)
    assert run.returncode == 0, run.stderr + run.stdout
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), compiled(x), rtol=1e-6)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("name", ["lenet-pkg", "class", "1pkg"])
def test_the_directory_name_must_be_importable(tmp_path, name):
    compiled = nncc.compile(nncc.nn.Linear(4, 3), input_shape=(None, 4))
    with pytest.raises(NNCCError, match="must be a Python identifier"):
        export_package(compiled, tmp_path / name)
