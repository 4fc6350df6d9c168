"""The CUDA backend against the CPU backend and the reference: every op, the MLP, and LeNet training steps.

In CI these run on numba's CUDA simulator (tests/conftest.py sets NUMBA_ENABLE_CUDASIM=1) on small shapes;
with NUMBA_ENABLE_CUDASIM=0 on a machine with a GPU they run on the device.
"""
import numpy as np
import pytest

import nncc
from lenet import LeNet
from nncc import nn
from nncc.compiler import Program
from nncc.ir import GraphBuilder, TensorType, dtype_of
from nncc.ops import get_op
from runtime import optim

from ops.cases import CASES, make_input

pytestmark = pytest.mark.cuda


def test_every_op_matches_the_reference_on_cuda():
    from numba import cuda

    rng = np.random.default_rng(0)
    b = GraphBuilder("all_ops_cuda")
    feeds, expected, outputs = {}, [], []
    for i, case in enumerate(CASES):
        arrays = []
        for spec in case[1]:
            arrays.append(make_input(spec, rng, np.float32, arrays[0] if arrays else None))
        values = [b.input(f"c{i}_{j}", TensorType(dtype_of(a.dtype), a.shape)) for j, a in enumerate(arrays)]
        feeds.update({v.name: a for v, a in zip(values, arrays)})
        outs = b.add(case[0], values, case[2])
        outputs.extend(outs)
        expected.extend((case, r) for r in get_op(case[0]).reference(arrays, case[2]))
    program = Program(b.finish(outputs), target="cuda")
    got = program({k: cuda.to_device(v) for k, v in feeds.items()})
    for (case, want), have in zip(expected, got):
        np.testing.assert_allclose(have.copy_to_host(), want, rtol=1e-4, atol=1e-5, err_msg=f"{case[0]} {case[2]}")


def _both(model_fn, shape, **kwargs):
    compiled = {}
    for target in ("cpu", "cuda"):
        nncc.manual_seed(0)
        compiled[target] = nncc.compile(model_fn(), input_shape=(None, *shape), target=target, **kwargs)
    return compiled["cpu"], compiled["cuda"]


def _tiny_mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 4))


def test_mlp_forward_and_gradients_match_cpu():
    cpu, gpu = _both(_tiny_mlp, (3, 2, 2), loss=nn.CrossEntropyLoss())
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((5, 3, 2, 2)).astype(np.float32), rng.integers(0, 4, 5)
    np.testing.assert_allclose(gpu(x), cpu(x), rtol=1e-4, atol=1e-6)
    (l1, g1), (l2, g2) = cpu.grad(x, y), gpu.grad(x, y)
    assert l2 == pytest.approx(l1, rel=1e-5)
    for name in g1:
        np.testing.assert_allclose(g2[name], g1[name], rtol=1e-4, atol=1e-6, err_msg=name)


def test_lenet_forward_gradients_and_three_training_steps_match_cpu():
    cpu, gpu = _both(LeNet, (1, 28, 28), loss=nn.CrossEntropyLoss(), optimizer=optim.SGD(lr=0.05, momentum=0.9))
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((1, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 1)
    np.testing.assert_allclose(gpu(x), cpu(x), rtol=1e-4, atol=1e-5)
    _, g1 = cpu.grad(x, y)
    _, g2 = gpu.grad(x, y)
    for name in g1:
        np.testing.assert_allclose(g2[name], g1[name], rtol=1e-4, atol=1e-5, err_msg=name)
    for _ in range(3):
        assert gpu.train_step(x, y) == pytest.approx(cpu.train_step(x, y), rel=1e-4)
    for name, value in cpu.state_dict().items():
        np.testing.assert_allclose(gpu.state_dict()[name], value, rtol=1e-4, atol=1e-6, err_msg=name)


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch):
    from numba import cuda

    monkeypatch.setattr(cuda, "is_available", lambda: False)
    with pytest.raises(nncc.NNCCError, match="needs an NVIDIA GPU .* NUMBA_ENABLE_CUDASIM=1"):
        nncc.compile(_tiny_mlp(), input_shape=(None, 3, 2, 2), target="cuda")


def test_split_reductions_cover_each_output_once():
    """Bias-gradient shaped sums: more reduced elements than one chunk, fewer outputs than threads per block."""
    from numba import cuda

    b = GraphBuilder("bias_grad")
    x = b.input("x", TensorType("f32", ("N", 16, 10, 10)))
    outs = [b.add1(op, [x], {"axes": [0, 2, 3], "keepdims": False}) for op in ("sum", "mean", "max")]
    program = Program(b.finish(outs), target="cuda")
    data = np.random.default_rng(3).standard_normal((3, 16, 10, 10)).astype(np.float32)
    got = program({"x": cuda.to_device(data)})
    for have, want in zip(got, (data.sum((0, 2, 3)), data.mean((0, 2, 3)), data.max((0, 2, 3)))):
        np.testing.assert_allclose(have.copy_to_host(), want, rtol=1e-5, atol=1e-5)
