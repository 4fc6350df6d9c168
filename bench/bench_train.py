"""LeNet training step (forward, cross-entropy, backward, SGD-momentum update): nncc vs PyTorch eager and
torch.compile, in one run, alternating; plus cold/warm compile time and the fraction of fp32 peak.

    python bench/bench_train.py [--batches 1,32,64,256] [--no-torch-compile] [--parallel]

``--parallel`` compiles nncc's step with ``parallel=True``: every kernel's batch loop on numba's threads, not only the
convolutions' and max-pools' chunks.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

from common import alternate, batch_cycle, cold_and_warm, matmul_peak_gflops, table, torch_lenet

COMPILE_CODE = """
import json, sys, time
sys.path.insert(0, "examples")
start = time.perf_counter()
import numpy as np, nncc
from nncc import nn
from runtime import optim
from lenet import LeNet
step = nncc.compile(LeNet(), input_shape=(None, 1, 28, 28), loss=nn.CrossEntropyLoss(),
                    optimizer=optim.SGD(lr=0.01, momentum=0.9), parallel=PARALLEL)
step.train_step(np.zeros((2, 1, 28, 28), np.float32), np.zeros(2, np.int64))
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def step_flops(step, batch: int) -> int:
    from nncc.ops import get_op

    program = step.program("train")
    total = 0
    for node in program.graph.nodes:
        op = get_op(node.op)
        if op.flops is not None:
            total += op.flops(node, {"N": batch})
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", default="1,32,64,256")
    parser.add_argument("--no-torch-compile", action="store_true")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--parallel", action="store_true")
    args = parser.parse_args()

    # a truly cold torch.compile: inductor and triton caches in a fresh directory
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")
    os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="triton-")
    import torch
    import nncc
    from nncc import nn
    from runtime import optim
    from lenet import LeNet

    torch.set_num_threads(2)
    model = LeNet()
    step = nncc.compile(model, input_shape=(None, 1, 28, 28), loss=nn.CrossEntropyLoss(),
                        optimizer=optim.SGD(lr=0.01, momentum=0.9), parallel=args.parallel)
    tmodel = torch_lenet(model.state_dict())
    topt = torch.optim.SGD(tmodel.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()

    def torch_step(model_, opt_, x, y):
        opt_.zero_grad(set_to_none=True)
        loss = loss_fn(model_(x), y)
        loss.backward()
        opt_.step()
        return loss

    compiled_step, tc_cold = None, None
    if not args.no_torch_compile:
        cmodel = torch_lenet(model.state_dict())
        copt = torch.optim.SGD(cmodel.parameters(), lr=0.01, momentum=0.9)
        compiled_step = torch.compile(lambda x, y: torch_step(cmodel, copt, x, y))
        start = time.perf_counter()
        compiled_step(torch.zeros(64, 1, 28, 28), torch.zeros(64, dtype=torch.long))
        tc_cold = time.perf_counter() - start

    rows = []
    peak = matmul_peak_gflops()
    initial, initial_opt = step.state_dict(), step.optimizer_state_dict()
    for batch in [int(b) for b in args.batches.split(",")]:
        # every batch size trains from the same initial state, not from where the last one left the model
        step.load_state_dict(initial)
        step.load_optimizer_state_dict(initial_opt)
        for torch_model, torch_opt in [(tmodel, topt)] + ([(cmodel, copt)] if compiled_step else []):
            torch_model.load_state_dict({k: torch.tensor(v) for k, v in initial.items()})
            torch_opt.state.clear()
        batches, torch_batches = batch_cycle(batch), batch_cycle(batch, convert=torch.tensor)
        fns = {"nncc": lambda: step.train_step(*batches()),
               "eager": lambda: torch_step(tmodel, topt, *torch_batches())}
        if compiled_step is not None:
            compiled_batches = batch_cycle(batch, convert=torch.tensor)
            fns["compile"] = lambda: compiled_step(*compiled_batches())
        t = alternate(fns, seconds=args.seconds)
        row = {"batch": batch, "nncc img/s": f"{batch / t['nncc']:.0f}", "eager img/s": f"{batch / t['eager']:.0f}",
               "nncc/eager": f"{t['eager'] / t['nncc']:.2f}x"}
        if compiled_step is not None:
            row["compile img/s"] = f"{batch / t['compile']:.0f}"
            row["nncc/compile"] = f"{t['compile'] / t['nncc']:.2f}x"
        row["% of fp32 peak"] = f"{100 * step_flops(step, batch) / t['nncc'] / 1e9 / peak:.1f}"
        rows.append(row)
    print(table(rows))
    cold, warm = cold_and_warm(COMPILE_CODE.replace("PARALLEL", str(args.parallel)))
    print(f"\nnncc LeNet training-step compile: cold {cold:.1f} s, warm (new process, cache hit) {warm:.2f} s "
          f"(both include Python start-up and imports)")
    if tc_cold is not None:
        print(f"torch.compile cold compile of the same step: {tc_cold:.1f} s (nncc cold / torch.compile cold = "
              f"{cold / tc_cold:.2f})")
    print(f"fp32 peak (numpy 2048^3 sgemm): {peak:.0f} GFLOP/s; "
          f"nncc kernels in the training step: {step.program('train').emitted.kernel_count}")


if __name__ == "__main__":
    main()
