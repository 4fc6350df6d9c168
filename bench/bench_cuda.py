"""LeNet training step on the GPU: nncc (target="cuda") vs PyTorch eager on the same GPU, in one run.

    python bench/bench_cuda.py [--batches 64,256,1024]

Both keep parameters on the device; each step takes a host batch (nncc copies it in, as PyTorch does with
.cuda()) and returns the loss as a Python float, so both synchronise once per step.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from common import alternate, batch_cycle, table, torch_lenet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", default="64,256,1024")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()

    import torch

    import nncc
    from lenet import LeNet
    from nncc import nn
    from runtime import optim

    model = LeNet()
    start = time.perf_counter()
    try:
        step = nncc.compile(model, input_shape=(None, 1, 28, 28), loss=nn.CrossEntropyLoss(),
                            optimizer=optim.SGD(lr=0.01, momentum=0.9), target="cuda")
    except nncc.NNCCError as e:  # no GPU here: say so in one line
        raise SystemExit(f"bench_cuda: {e}")
    step.train_step(np.zeros((2, 1, 28, 28), np.float32), np.zeros(2, np.int64))
    compile_s = time.perf_counter() - start
    has_torch_gpu = torch.cuda.is_available()
    if has_torch_gpu:
        tmodel = torch_lenet(model.state_dict()).cuda()
        topt = torch.optim.SGD(tmodel.parameters(), lr=0.01, momentum=0.9)
    else:
        print("PyTorch sees no GPU: nncc alone")
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        batches, torch_batches = batch_cycle(batch), batch_cycle(batch, convert=torch.from_numpy)
        fns = {"nncc": lambda: step.train_step(*batches())}
        if has_torch_gpu:
            def torch_step():
                x, y = torch_batches()
                topt.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(tmodel(x.cuda()), y.cuda())
                loss.backward()
                topt.step()
                return loss.item()

            fns["eager"] = torch_step
        t = alternate(fns, seconds=args.seconds)
        row = {"batch": batch, "nncc img/s": f"{batch / t['nncc']:.0f}"}
        if has_torch_gpu:
            row.update({"eager img/s": f"{batch / t['eager']:.0f}", "nncc/eager": f"{t['eager'] / t['nncc']:.2f}x"})
        rows.append(row)
    name = torch.cuda.get_device_name() if has_torch_gpu else "GPU"
    print(f"device: {name}\n" + table(rows))
    print(f"\nnncc compile + first step (kernels JIT-compiled for the GPU): {compile_s:.1f} s; "
          f"kernels: {step.program('train').emitted.kernel_count}")


if __name__ == "__main__":
    main()
