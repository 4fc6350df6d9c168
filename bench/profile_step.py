"""Time of each kernel of the LeNet training step: the generated driver run from Python with a timer around
every kernel call (wall time: the convolutions run their chunks of the batch on several threads; on the GPU
the timer synchronises the device before and after each launch).

    python bench/profile_step.py [--batch 64] [--steps 30] [--target cuda]

Each kernel call is labelled by the IR nodes it runs (``conv2d+relu``), as the driver's comments name them,
and by its function; the sum over kernels is close to the compiled step's own time (each Python call adds a
few us).
"""
from __future__ import annotations

import argparse
import importlib.util
import re
import tempfile
import time
from pathlib import Path

import numpy as np

import common  # noqa: F401  (puts examples/ on the path)
from nncc.codegen.cpu.native_calls import NATIVE_ONLY


# per target: the driver's first line and its kernel calls (kernel name, arguments: on the CPU through _call,
# or a chunked kernel's call by name); a CUDA launch is timed from an idle device until it is idle again
DRIVERS = {"cpu": ("def _run(", r"    (?:_call\((k\d+), addresses, \((.*)\)\)|(k\d+)\((.*, addresses)\))$", "{}", ""),
           "cuda": ("def run(", r"    (k\d+)_launch\((.*)\)$", "{}_launch", "cuda.synchronize(); ")}


def timed_driver(source: str, target: str = "cpu") -> str:
    """The driver run in Python (the CPU's ``_run`` without its @njit), each kernel called directly (on the
    CPU not through its address, so with numba's Python wrapper) inside a timer keyed by its IR ops, kernel
    name and call (kernels shared by layers are timed per layer); the driver's arena views and buffers by
    numpy (the kernels keep the intrinsics of codegen/cpu/arrays.py)."""
    first, pattern, callee, sync = DRIVERS[target]
    lines = source.replace(NATIVE_ONLY, "").split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(first))
    if target == "cpu":
        lines[start - 1] = ""  # the driver's decorator: run it in Python
    out, ops, seen = [], [], {}
    for i, line in enumerate(lines):
        if i > start:
            line = line.replace("_view(", "_py_view(").replace("_empty(", "np.empty(")
        call = re.match(pattern, line) if i > start else None
        if i > start and line.strip().startswith("# %"):
            ops.append(line.split(" = ", 1)[1].split("(")[0])
        if call:
            kernel, arguments = [group for group in call.groups() if group is not None]
            seen[kernel] = seen.get(kernel, 0) + 1  # which call of the kernel: the layer
            key = f"{'+'.join(ops)} {kernel}#{seen[kernel]}"
            out += [f"    _args = [{arguments}]  # views made outside the timer",
                    f"    {sync}_t = _time.perf_counter()", f"    {callee.format(kernel)}(*_args)",
                    f"    {sync}_T[{key!r}] += _time.perf_counter() - _t"]
            ops = []
        else:
            out.append(line)
    return ("import time as _time, collections as _c\n_T = _c.defaultdict(float)\n" + "\n".join(out) +
            "\n\ndef _py_view(base, start, shape):\n"
            "    return base.reshape(-1)[start:start + int(np.prod(shape))].reshape(shape)\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--target", default="cpu", choices=sorted(DRIVERS))
    args = parser.parse_args()

    import nncc
    from nncc import nn
    from runtime import optim
    from lenet import LeNet

    step = nncc.compile(LeNet(), input_shape=(None, 1, 28, 28), loss=nn.CrossEntropyLoss(),
                        optimizer=optim.SGD(lr=0.01, momentum=0.9), target=args.target)
    x = np.random.rand(args.batch, 1, 28, 28).astype(np.float32)
    y = np.random.randint(0, 10, args.batch)
    step.train_step(x, y)
    program = step.program("train")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "timed_driver.py"
        path.write_text(timed_driver(program.emitted.source, args.target))
        spec = importlib.util.spec_from_file_location("timed_driver", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        feeds = step._training_feeds(x, y, "train")
        feeds.update(lr=np.array(0.01), step=np.array(1.0), **step.opt_state)
        run_args = [feeds[n] for n in program.input_names] + list(program.constants)
        if program.emitted.memory is not None:
            run_args.append(program._arena(run_args))
        if args.target == "cpu":
            addresses = np.array([module._address(k, sig) for k, sig in module._SLOTS], np.int64)  # chunked kernels
            run = lambda: module._run(*run_args, addresses)  # noqa: E731
        else:
            run = lambda: module.run(*run_args)  # noqa: E731
        run()  # compiles the kernels of this copy, called from Python
        module._T.clear()
        for _ in range(args.steps):
            run()
        start = time.perf_counter()
        for _ in range(args.steps):
            step.train_step(x, y)
        compiled = (time.perf_counter() - start) / args.steps
    total = sum(module._T.values()) / args.steps
    print(f"batch {args.batch}: kernels {total * 1e3:.2f} ms per step; the compiled step {compiled * 1e3:.2f} ms "
          f"({args.batch / compiled:.0f} img/s)")
    for key, seconds in sorted(module._T.items(), key=lambda kv: -kv[1]):
        print(f"  {seconds / args.steps * 1e3:7.3f} ms  {100 * seconds / args.steps / total:5.1f}%  {key}")


if __name__ == "__main__":
    main()
