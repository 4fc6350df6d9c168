"""The CPU driver calls kernels through their entry addresses (nncc/codegen/cpu/native_calls.py): errors
raised in a kernel reach the caller, a call whose types differ from its slot's is refused at compile time,
kernels differing only in run-time attributes, or updating parameters of different ranks, share one compiled
function, and a cold module's kernels
compile in several processes (parallel_compile.py) with the same results."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from numba import errors

import nncc
from nncc import nn
from nncc.codegen.cache import load_generated
from nncc.codegen.cpu import parallel_compile
from nncc.codegen.cpu.float_mode import FLOAT_MODE, FLOAT_MODE_IMPORTS
from nncc.codegen.cpu.native_calls import NATIVE_CALLS, NATIVE_CALLS_IMPORTS, wrapper

ROOT = Path(__file__).resolve().parents[2]


def _module(kernel: str, driver: str, slots: str, tag: str):
    """A generated-style module: the native-call preamble, one kernel ``k0``, a driver and its slots; its
    ``run`` flushes denormals, as nncc.compile's do by default."""
    source = "\n".join([f"# native-call test {tag}", "import numpy as np", "from numba import njit",
                        NATIVE_CALLS_IMPORTS, FLOAT_MODE_IMPORTS, "", textwrap.dedent(kernel), FLOAT_MODE,
                        NATIVE_CALLS, f"_SLOTS = ({slots},)", textwrap.dedent(driver), wrapper(True)])
    return load_generated(source)


KERNEL = """
@njit(cache=True)
def k0(x, out):
    if x.size == 3:
        raise ValueError("k0 refuses three elements")
    for i in range(x.size):
        out[i] = 2 * x[i]
"""


def test_a_kernel_error_reaches_the_caller():
    module = _module(KERNEL, """
        @njit(cache=True)
        def _run(x, addresses):
            out = np.empty_like(x)
            _call(k0, addresses, (x, out))
            return out
        """, "(k0, 'void(float32[::1], float32[::1])')", "error")
    np.testing.assert_array_equal(module.run(np.ones(4, np.float32)), np.full(4, 2, np.float32))
    with pytest.raises(ValueError, match="refuses three"):
        module.run(np.ones(3, np.float32))
    tiny = np.float32(1e-20)
    assert tiny * tiny > 0  # the caller's floating-point mode is back: denormal products are not flushed


def test_a_call_with_other_types_than_its_slot_is_refused():
    module = _module(KERNEL, """
        @njit(cache=True)
        def _run(x, addresses):
            out = np.empty(x.shape, np.float64)
            _call(k0, addresses, (x, out))
            return out
        """, "(k0, 'void(float32[::1], float32[::1])')", "mismatch")
    with pytest.raises(errors.TypingError, match=r"no slot of k0 takes .*float64.*; its slots take"):
        module.run(np.ones(4, np.float32))


class TwoPaddings(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3, padding=1)
        self.b = nn.Conv2d(2, 2, 3, padding=0)

    def forward(self, x):
        return self.b(self.a(x))


def test_convolutions_differing_in_padding_share_one_kernel():
    model = TwoPaddings()
    fwd = nncc.compile(model, input_shape=(None, 1, 8, 8))
    generated = sys.modules[fwd.program("forward").fn.__module__]
    # both convolutions: one chunk function, one signature, the padding passed at run time to the kernel, which
    # the driver calls by name (it is inlined); and the launcher of chunks, with more than one thread
    assert [kernel.__name__ for kernel, _ in generated._SLOTS if kernel.__name__ != "_chunks"] == ["k0_chunk"]
    calls = [line for line in fwd.source().splitlines() if line.startswith("    k0(")]
    assert len(calls) == 2 and ", 1, 1, addresses)" in calls[0] and ", 0, 0, addresses)" in calls[1]
    x = np.random.default_rng(0).random((2, 1, 8, 8), np.float32)
    np.testing.assert_allclose(fwd(x), model(x), rtol=1e-5, atol=1e-6)  # model(x): nncc.nn's numpy execution


class ConvThenLinear(nn.Module):  # parameters of ranks 4, 1, 2 and 1
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(self.conv(x).reshape(x.shape[0], -1))


@pytest.mark.parametrize("optimizer", ["SGD", "Adam"])
def test_an_optimizer_update_of_parameters_of_any_rank_is_one_compiled_kernel(optimizer):
    """OpDef.flat: the driver passes the update 1-D views, so all four parameters share one slot."""
    from runtime import optim

    step = nncc.compile(ConvThenLinear(), input_shape=(None, 1, 6, 6), loss=nn.MSELoss(),
                        optimizer=getattr(optim, optimizer)(lr=0.1))
    lines = step.source("train").splitlines()
    update = "sgd_update" if optimizer == "SGD" else "adam_update"
    calls = [next(line for line in lines[i:] if line.startswith("    _call(")) for i, line in enumerate(lines)
             if f" = {update}(" in line]
    kernels = {call.split("(")[1].split(",")[0] for call in calls}
    generated = sys.modules[step.program("train").fn.__module__]
    assert len(calls) == 4 and len(kernels) == 1
    assert [k.__name__ for k, _ in generated._SLOTS].count(kernels.pop()) == 1
    x, y = np.random.default_rng(0).random((2, 1, 6, 6), np.float32), np.zeros((2, 3), np.float32)
    assert np.isfinite(step.train_step(x, y))


# run in fresh processes: within one, a module already imported is reused with its compiled kernels
COLD_STEP = """
import json, sys
import numpy as np, nncc
from nncc import nn
from nncc.codegen.cpu.parallel_compile import MIN_ITEMS, _work_items
from parity.nncc_models import MODELS
from runtime import optim
rng = np.random.default_rng(0)
x, y = rng.random((4, 1, 28, 28), np.float32), rng.integers(0, 10, 4)
nncc.manual_seed(0)
step = nncc.compile(MODELS["mlp"][0](), input_shape=(None, 1, 28, 28), loss=nn.CrossEntropyLoss(),
                    optimizer=optim.SGD(lr=0.1, momentum=0.9))
step.train_step(x, y)
generated = sys.modules[step.program("train").fn.__module__]
print(json.dumps({"items": sorted(_work_items(generated)), "min_items": MIN_ITEMS,
                  "loaded": sum(sum(k.stats.cache_hits.values()) for k, _ in generated._SLOTS),
                  "seconds": step.program("train").compile_seconds,
                  "state": {k: v.tolist() for k, v in step.state_dict().items()}}))
"""


def test_a_cold_module_compiles_in_two_processes_with_the_same_results(tmp_path):
    runs = {}
    for jobs in ("1", "2"):
        env = dict(os.environ, NNCC_CACHE_DIR=str(tmp_path / jobs), NNCC_COMPILE_JOBS=jobs,
                   PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "examples"), str(ROOT / "tests")]))
        out = subprocess.run([sys.executable, "-c", COLD_STEP], env=env, capture_output=True, text=True, check=True)
        runs[jobs] = json.loads(out.stdout.strip().splitlines()[-1])
        assert not list(tmp_path.glob(f"{jobs}/*/claims-*"))  # the claim files are cleaned up
    assert len(runs["1"]["items"]) >= runs["1"]["min_items"]
    assert runs["1"]["loaded"] == 0  # one process alone compiles everything itself...
    assert runs["2"]["loaded"] > 0  # ...with two, this one loads the worker's share from numba's cache
    assert runs["1"]["state"] == runs["2"]["state"]
    for run in runs.values():  # the CPU seconds of every work item, whichever process compiled it
        assert sorted(run["seconds"]) == run["items"] and all(s > 0 for s in run["seconds"].values())


def test_a_bad_compile_jobs_setting_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("NNCC_COMPILE_JOBS", "many")
    with pytest.raises(ValueError, match="NNCC_COMPILE_JOBS must be a whole number"):
        parallel_compile.compile_jobs()


def test_an_arena_smaller_than_the_batch_needs_is_refused():
    fwd = nncc.compile(TwoPaddings(), input_shape=(None, 1, 8, 8))
    program = fwd.program("forward")
    program._arenas[2] = np.empty(3, np.float32)  # what a caller of the generated run() might pass
    with pytest.raises(ValueError, match="the arena is smaller than this batch needs"):
        fwd(np.zeros((2, 1, 8, 8), np.float32))


def test_a_program_never_called_compiles_no_kernel():
    class Unique(nn.Module):  # a module no other test compiles, so nothing of it is compiled in this process
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 5, 3, padding=2)

        def forward(self, x):
            return self.a(x)

    fwd = nncc.compile(Unique(), input_shape=(None, 1, 7, 7))  # builds and imports the forward program
    generated = sys.modules[fwd.program("forward").fn.__module__]
    assert all(not kernel.overloads for kernel, _ in generated._SLOTS) and not generated._run.overloads
    fwd(np.zeros((2, 1, 7, 7), np.float32))
    assert all(kernel.overloads for kernel, _ in generated._SLOTS)
