"""The nncc command line: as a user runs it (subprocesses) for the main paths, in-process for the many bad inputs."""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nncc
from nncc.cli import dot_string, main, to_dot
from nncc.ir.builder import GraphBuilder
from nncc.ir.types import TensorType
from lenet import LeNet

ROOT = Path(__file__).resolve().parents[1]
LENET = str(ROOT / "examples" / "lenet.py") + ":LeNet"
SPEC = str(ROOT / "examples" / "lenet.toml")
# a model that compiles in moments, for the commands that need a compiled training step
TINY_SPEC = '[model]\ninput_shape = [1, 28, 28]\n[[layers]]\ntype = "Flatten"\n' \
            '[[layers]]\ntype = "Linear"\nin_features = 784\nout_features = 10\n'


def nncc_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "nncc.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


def in_process(capsys, monkeypatch, *args) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``nncc ARGS`` run in this process."""
    monkeypatch.setenv("NNCC_DEBUG", "0")  # restored afterwards: --debug sets it
    try:
        main(list(args))
        status = 0
    except SystemExit as e:
        status = e.code
    out = capsys.readouterr()
    return status, out.out, out.err


def dot_is_well_formed(text: str) -> bool:
    """Outside quoted strings, a dot text has no quotes and balanced braces."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', "S", text)
    depth = 0
    for c in bare:
        depth += {"{": 1, "}": -1}.get(c, 0)
        if depth < 0:
            return False
    return depth == 0 and '"' not in bare


def test_dump_all_stages_as_text_and_dot():
    out = nncc_cli("dump", SPEC, "--stage", "all")
    assert out.returncode == 0, out.stderr
    for stage in ("input", "fold-constants", "cse", "dce", "fused", "final"):
        assert f"# ---- {stage} ----" in out.stdout
    dot = nncc_cli("dump", LENET, "--input-shape", "1,28,28", "--format", "dot", "--stage", "all")
    assert dot.returncode == 0, dot.stderr
    blocks = dot.stdout.split("// ---- ")[1:]
    assert len(blocks) == out.stdout.count("# ---- ") and all(b.count("digraph") == 1 for b in blocks)
    assert dot_is_well_formed(dot.stdout) and "conv2d" in dot.stdout
    fused = next(b for b in blocks if b.startswith("fused"))
    assert "subgraph cluster_0" in fused and "kernel #0 (kernel)" in fused


def test_dot_escapes_names():
    assert dot_string('a"b\\c\nd\x01') == '"a\\"b\\\\c\\nd\\\\x01"'
    b = GraphBuilder('g"}')
    x = b.input('x"]; evil -> x; {\n', TensorType("f32", ("N", 3)))
    graph = b.finish([b.add1("relu", [x], {})])
    text = to_dot(graph)
    assert dot_is_well_formed(text)
    assert 'digraph "g\\"}" {' in text and '"%\\"x\\\\\\"]; evil -> x; {\\\\n\\": f32[N,3]"' in text


def test_dump_stats():
    out = nncc_cli("dump", SPEC, "--kind", "train", "--stats", "--batch", "32")
    assert out.returncode == 0, out.stderr
    assert "train program of graph sequential at batch 32" in out.stdout
    assert re.search(r"kernels: \d+ unfused, \d+ fused", out.stdout) and "MFLOP" in out.stdout
    assert "with planning" in out.stdout and "compile timings" in out.stdout


def test_debug_levels():
    three = nncc_cli("--debug", "3", "dump", SPEC, "--stage", "final")
    assert three.returncode == 0, three.stderr
    for text in ("compiled (shape-inference", "IR after dce", "generated source", "@njit"):
        assert text in three.stderr
    one = nncc_cli("dump", SPEC, env={"NNCC_DEBUG": "1"})
    assert "compiled (" in one.stderr and "IR after" not in one.stderr


def test_run_writes_the_output_and_reports_the_first_call(tmp_path):
    x = np.random.default_rng(0).random((3, 1, 28, 28), np.float32)
    np.save(tmp_path / "x.npy", x)
    nncc.manual_seed(0)
    weights = LeNet().state_dict()
    np.savez(tmp_path / "w.npz", **weights)
    out = nncc_cli("run", SPEC, str(tmp_path / "x.npy"), "--weights", str(tmp_path / "w.npz"),
                   "-o", str(tmp_path / "y.npy"), env={"NNCC_DEBUG": "1"})
    assert out.returncode == 0, out.stderr
    assert "first call, numba compile or cache load" in out.stderr
    assert out.stdout.strip() == f"wrote {tmp_path / 'y.npy'}: float32 [3, 10]"
    model = LeNet()
    model.load_state_dict(weights)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), nncc.compile(model, input_shape=(None, 1, 28, 28))(x),
                               rtol=1e-6)


def test_compile_writes_a_package_with_the_given_weights(tmp_path):
    nncc.manual_seed(1)
    weights = LeNet().state_dict()
    np.savez(tmp_path / "w.npz", **weights)
    out = nncc_cli("compile", SPEC, "--weights", str(tmp_path / "w.npz"), "-o", str(tmp_path / "pkg" / "lenet_pkg"))
    assert out.returncode == 0, out.stderr
    assert "import lenet_pkg; lenet_pkg.forward(x)" in out.stdout
    package = tmp_path / "pkg" / "lenet_pkg"
    assert {p.name for p in package.iterdir()} >= {"__init__.py", "kernels.py", "weights.npz", "constants.npz",
                                                  "manifest.json", "README.md"}
    with np.load(package / "weights.npz") as written:
        assert sorted(written.files) == sorted(weights)
        for name, value in weights.items():
            np.testing.assert_array_equal(written[name], value)


def _torch_onnx(path: Path) -> None:
    """A small PyTorch model exported to ONNX with a dynamic batch axis (Conv, Relu, Flatten, Gemm)."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(2 * 4 * 4, 3)).eval()
    torch.onnx.export(model, (torch.zeros(2, 1, 6, 6),), str(path), dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})


def test_an_onnx_file_dumps_and_compiles_to_a_package_that_runs(tmp_path):
    import onnxruntime as ort

    path = tmp_path / "small.onnx"
    _torch_onnx(path)
    dump = nncc_cli("dump", str(path))  # the input shape comes from the file
    assert dump.returncode == 0, dump.stderr
    assert "f32[N,1,6,6]" in dump.stdout and "conv2d" in dump.stdout and "matmul" in dump.stdout
    out = nncc_cli("compile", str(path), "-o", str(tmp_path / "pkg" / "small_pkg"))
    assert out.returncode == 0, out.stderr
    x = np.random.default_rng(0).standard_normal((3, 1, 6, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    run = subprocess.run([sys.executable, "-c", "import sys, numpy as np, small_pkg; "
                          "np.save(sys.argv[2], small_pkg.forward(np.load(sys.argv[1])))",
                          str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                         cwd=tmp_path / "pkg", capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-4, atol=1e-5)


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_train_writes_weights_plot_and_checkpoint_and_resumes(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 96), ("t10k", 32)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))
    (tmp_path / "tiny.toml").write_text(TINY_SPEC)
    common = [str(tmp_path / "tiny.toml"), "--data", str(tmp_path), "--batch-size", "32", "--no-progress",
              "--checkpoint", str(tmp_path / "ckpt.npz"), "--lr", "0.001"]
    first = nncc_cli("train", *common, "--optimizer", "adam", "--epochs", "1", "--plot", str(tmp_path / "curve.png"))
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "curve.png").stat().st_size > 0 and "final test accuracy:" in first.stdout
    resume = ["--epochs", "2", "--resume", str(tmp_path / "ckpt.npz"), "--out", str(tmp_path / "model.npz")]
    mismatch = nncc_cli("train", *common, *resume)  # SGD finds no momentum buffers in an Adam checkpoint
    assert mismatch.returncode == 2 and mismatch.stderr.startswith("nncc: error: ")
    assert "momentum_buffer" in mismatch.stderr
    resumed = nncc_cli("train", *common, *resume, "--optimizer", "adam")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and "final test accuracy:" in resumed.stdout
    with np.load(tmp_path / "model.npz") as trained, np.load(tmp_path / "ckpt.npz") as ckpt:
        assert sorted(trained.files) == ["1.bias", "1.weight"]
        np.testing.assert_array_equal(trained["1.weight"], ckpt["model/1.weight"])


BAD = [
    (["dump", "{tmp}/missing.toml"], "does not exist"),
    (["dump", LENET], "give the input shape without the batch, e.g. --input-shape 1,28,28"),
    (["dump", SPEC, "--stage", "nonsense"], "no stage 'nonsense'; stages: input, "),
    (["dump", SPEC, "--stage", "source", "--format", "dot"], "--format dot draws IR stages"),
    (["dump", SPEC, "--input-shape", "1,x"], "argument --input-shape: expected positive ints"),
    (["dump", SPEC, "--weights", "{tmp}/x.npy"], "weights must be an .npz archive"),
    (["dump", SPEC, "--weights", SPEC], "not a NumPy .npy/.npz file"),
    (["dump", SPEC, "--weights", "{tmp}/partial.npz"], "fc3.bias"),
    (["dump", "{tmp}/broken.py:M", "--input-shape", "4"], "broken.py: importing it failed: SyntaxError"),
    (["dump"], "the following arguments are required: model"),
    (["train", LENET, "--data", "{tmp}"], "holds no MNIST files"),
    (["train", LENET, "--data", "{tmp}", "--batch-size", "0"], "argument --batch-size: expected a positive integer"),
    (["train", LENET, "--data", "{tmp}", "--lr", "-1"], "argument --lr: expected a number >= 0"),
    (["train", LENET, "--data", "{tmp}", "--out", "{tmp}/no/dir/w.npz"], "directory '{tmp}/no/dir' does not exist"),
    (["run", SPEC, "{tmp}/missing.npy"], "cannot read the input {tmp}/missing.npy: No such file"),
    (["run", SPEC, "{tmp}/x64.npy"], "input 'x': expected dtype float32"),
    (["compile", SPEC, "-o", "{tmp}/lenet-pkg"], "must be a Python identifier"),
    (["dump", "{tmp}/garbage.onnx"], "garbage.onnx: not an ONNX model"),
    (["dump", "{tmp}/topk.onnx"], "unsupported ONNX operator: TopK (node 'top')"),
]


def _write_topk_onnx(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k = numpy_helper.from_array(np.array([1], np.int64), "k")
    graph = helper.make_graph([helper.make_node("TopK", ["x", "k"], ["v", "i"], name="top")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("v", TensorProto.FLOAT, ["N", 1])], [k])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.mark.parametrize("args, message", BAD, ids=[" ".join(a[:2]) + f" [{i}]" for i, (a, _) in enumerate(BAD)])
def test_bad_inputs_are_one_line_errors(tmp_path, capsys, monkeypatch, args, message):
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 28, 28), np.float32))
    np.save(tmp_path / "x64.npy", np.zeros((1, 1, 28, 28)))
    np.savez(tmp_path / "partial.npz", **{k: v for k, v in LeNet().state_dict().items() if k != "fc3.bias"})
    (tmp_path / "broken.py").write_text("def oops(\n")
    (tmp_path / "garbage.onnx").write_bytes(b"not an ONNX file\n" * 8)
    _write_topk_onnx(tmp_path / "topk.onnx")
    status, _, err = in_process(capsys, monkeypatch, *(a.format(tmp=tmp_path) for a in args))
    assert status == 2, err
    assert message.format(tmp=tmp_path) in err and len(err.strip().splitlines()) == 1, err


def test_check_finds_no_divergence(tmp_path, capsys, monkeypatch):
    (tmp_path / "tiny.toml").write_text(TINY_SPEC)
    status, out, err = in_process(capsys, monkeypatch, "check", str(tmp_path / "tiny.toml"), "--kind", "grad")
    assert status == 0 and "no divergence" in out, out + err
