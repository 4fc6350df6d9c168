"""LeNet inference: nncc vs PyTorch eager in one run (alternating, medians), plus cold/warm compile time.

    python bench/bench_inference.py [--batches 1,64,256]
"""
from __future__ import annotations

import argparse

import numpy as np

from common import alternate, cold_and_warm, table, torch_lenet

COMPILE_CODE = """
import json, sys, time
sys.path.insert(0, "examples")
start = time.perf_counter()
import numpy as np, nncc
from lenet import LeNet
fwd = nncc.compile(LeNet(), input_shape=(None, 1, 28, 28))
fwd(np.zeros((2, 1, 28, 28), np.float32))
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", default="1,64,256")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()

    import torch
    import nncc
    from lenet import LeNet

    torch.set_num_threads(2)
    model = LeNet()
    fwd = nncc.compile(model, input_shape=(None, 1, 28, 28))
    tmodel = torch_lenet(model.state_dict()).eval()
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        x = np.random.rand(batch, 1, 28, 28).astype(np.float32)
        tx = torch.tensor(x)

        def eager():
            with torch.no_grad():
                return tmodel(tx)

        np.testing.assert_allclose(fwd(x), eager().numpy(), rtol=1e-4, atol=1e-5)
        t = alternate({"nncc": lambda: fwd(x), "eager": eager}, seconds=args.seconds)
        rows.append({"batch": batch, "nncc us/batch": f"{t['nncc'] * 1e6:.0f}", "eager us/batch": f"{t['eager'] * 1e6:.0f}",
                     "nncc img/s": f"{batch / t['nncc']:.0f}", "eager img/s": f"{batch / t['eager']:.0f}",
                     "nncc/eager": f"{t['eager'] / t['nncc']:.2f}x"})
    print(table(rows))
    cold, warm = cold_and_warm(COMPILE_CODE)
    print(f"\nnncc LeNet forward compile: cold {cold:.1f} s, warm (new process, cache hit) {warm:.2f} s "
          f"(both include Python start-up and imports); kernels: {fwd.program('forward').emitted.kernel_count}")


if __name__ == "__main__":
    main()
