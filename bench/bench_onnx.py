"""LeNet exported by PyTorch to ONNX: nncc (importing the file) vs ONNX Runtime, in one run (alternating, medians).

    python bench/bench_onnx.py [--batches 1,64,256] [--seconds 2]

Both run the same .onnx file with a dynamic batch axis; ONNX Runtime gets the machine's two threads, as nncc's
chunked kernels do, without spin-waiting: its spinning threads would otherwise take the cores from nncc's next
call (an A/B on this machine measured nncc 20x slower at batch 64 beside a spinning ONNX Runtime). The ratio is ONNX Runtime's
time over nncc's: above 1x nncc is faster.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from common import alternate, cold_and_warm, table, torch_lenet

COMPILE_CODE = """
import json, sys, time
start = time.perf_counter()
import numpy as np, nncc
fwd = nncc.compile({path!r})
fwd(np.zeros((2, 1, 28, 28), np.float32))
print(json.dumps({{"seconds": time.perf_counter() - start}}))
"""


def export_lenet(path: Path) -> None:
    import torch

    import nncc
    from lenet import LeNet

    nncc.manual_seed(0)
    model = torch_lenet(LeNet().state_dict()).eval()
    torch.onnx.export(model, (torch.zeros(1, 1, 28, 28),), str(path), dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", default="1,64,256")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()

    import onnxruntime as ort

    import nncc

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lenet.onnx"
        export_lenet(path)
        fwd = nncc.compile(str(path))
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        rows = []
        for batch in [int(b) for b in args.batches.split(",")]:
            x = np.random.default_rng(batch).random((batch, 1, 28, 28), np.float32)
            np.testing.assert_allclose(fwd(x), session.run(None, {"x": x})[0], rtol=1e-4, atol=1e-5)
            t = alternate({"nncc": lambda x=x: fwd(x), "ort": lambda x=x: session.run(None, {"x": x})},
                          seconds=args.seconds)
            rows.append({"batch": batch, "nncc us/batch": f"{t['nncc'] * 1e6:.0f}",
                         "ort us/batch": f"{t['ort'] * 1e6:.0f}",
                         "nncc img/s": f"{batch / t['nncc']:.0f}", "ort img/s": f"{batch / t['ort']:.0f}",
                         "ort/nncc": f"{t['ort'] / t['nncc']:.2f}x"})
        print(table(rows))
        cold, warm = cold_and_warm(COMPILE_CODE.format(path=str(path)))
    print(f"\nnncc compile of lenet.onnx: cold {cold:.1f} s, warm (new process, cache hit) {warm:.2f} s "
          f"(both include Python start-up and imports)")


if __name__ == "__main__":
    main()
