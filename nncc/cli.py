"""The ``nncc`` command line: compile, dump, run, train and check models.

MODEL is ``file.py:ClassName`` (an nncc.nn.Module), a ``.toml`` spec file or an ``.onnx`` file.

    nncc train examples/lenet.py:LeNet --data ../shared/data/mnist-small --epochs 5 --out lenet.npz
    nncc dump examples/lenet.toml --stage all
    nncc compile examples/lenet.toml -o lenet_pkg --weights lenet.npz
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional

import numpy as np

from .errors import NNCCError


class CliError(Exception):
    """A bad command line or input: printed as one line, exit status 2."""


def _shape(text: Optional[str]) -> Optional[tuple]:
    if not text:
        return None
    try:
        return (None, *(int(d) for d in text.split(",")))
    except ValueError:
        raise CliError(f"--input-shape must be comma-separated ints without the batch, e.g. 1,28,28; got {text!r}")


def _load(args, default_shape: Optional[tuple] = None):
    """(model, input shape) from MODEL, --input-shape and --weights."""
    from .frontend.loader import load_model

    model, file_shape = load_model(args.model)
    shape = _shape(getattr(args, "input_shape", None)) or file_shape or default_shape
    if shape is None:
        raise CliError(f"{args.model}: give the input shape without the batch, e.g. --input-shape 1,28,28")
    weights = getattr(args, "weights", None)
    if weights:
        model.load_state_dict(_read_npz(weights))
    return model, shape


def _read_npz(path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k[len("model/"):] if k.startswith("model/") else k: z[k] for k in z.files
                    if not k.startswith(("optim/", "meta/"))}
    except (OSError, ValueError) as e:
        raise CliError(f"{path}: cannot read weights ({e})")


def _compile(model, shape, kind: str, args):
    import nncc
    from nncc import nn
    from runtime import optim

    target = getattr(args, "target", "cpu")
    if kind == "forward":
        return nncc.compile(model, input_shape=shape, fuse=not args.no_fuse, target=target)
    return nncc.compile(model, input_shape=shape, loss=nn.CrossEntropyLoss(),
                        optimizer=optim.SGD(lr=0.01, momentum=0.9), fuse=not args.no_fuse, target=target)


# ---- commands -------------------------------------------------------------------------------------------------
def cmd_compile(args) -> None:
    from .export import export_package

    model, shape = _load(args)
    path = export_package(_compile(model, shape, "forward", args), args.output)
    print(f"wrote {path}/ (import it with {path.parent} on sys.path: `import {path.name}; {path.name}.forward(x)`)")


def cmd_dump(args) -> None:
    model, shape = _load(args)
    compiled = _compile(model, shape, args.kind, args)
    program = compiled.program(args.kind)
    if args.stats:
        print(stats_text(compiled, args.kind, args.batch))
        return
    if args.stage == "source":
        print(program.emitted.source)
        return
    stages = list(program.dumps) + ["final"] if args.stage == "all" else [args.stage]
    for stage in stages:
        if stage not in program.dumps and stage != "final":
            raise CliError(f"no stage {stage!r}; stages: "
                           f"{', '.join(list(program.dumps) + ['final', 'all', 'source'])}")
        text = str(program.graph) if stage == "final" else program.dumps[stage]
        if args.format == "dot":
            from .ir.parser import parse_graph

            text = to_dot(program.graph if stage == "final" else parse_graph(text)) if stage != "fused" else text
        print(f"// ---- {stage} ----" if args.format == "dot" else f"# ---- {stage} ----")
        print(text)


def cmd_run(args) -> None:
    try:
        x = np.load(args.input, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise CliError(f"{args.input}: cannot read a .npy array ({e})")
    model, shape = _load(args, default_shape=(None, *x.shape[1:]))
    y = _compile(model, shape, "forward", args)(x)
    if args.output:
        np.save(args.output, y)
        print(f"wrote {args.output} {list(np.shape(y))}")
    else:
        print(np.array2string(np.asarray(y), precision=4))


def cmd_train(args) -> None:
    import nncc
    from nncc import nn
    from runtime import Trainer, data, optim

    train, test = data.mnist(args.data, download=args.download)
    model, shape = _load(args, default_shape=(None, *train.images.shape[1:]))
    nncc.manual_seed(args.seed)
    opt = optim.Adam(lr=args.lr) if args.optimizer == "adam" else optim.SGD(lr=args.lr, momentum=args.momentum)
    step = nncc.compile(model, input_shape=shape, loss=nn.CrossEntropyLoss(), optimizer=opt, fuse=not args.no_fuse,
                        target=args.target)
    trainer = Trainer(step, train, test, batch_size=args.batch_size, epochs=args.epochs, seed=args.seed,
                      checkpoint=args.checkpoint, resume=args.resume, progress=not args.no_progress)
    history = trainer.fit()
    if args.out:
        np.savez(args.out, **step.state_dict())
        print(f"wrote {args.out}")
    if args.plot:
        from runtime.plot import plot_history

        print(f"wrote {plot_history(history, args.plot)}")
    if history and "test_accuracy" in history[-1]:
        print(f"final test accuracy: {100 * history[-1]['test_accuracy']:.2f}%")


def cmd_check(args) -> None:
    from .check import find_divergence

    model, shape = _load(args)
    compiled = _compile(model, shape, args.kind, args)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, *shape[1:])).astype(np.float32)
    target = None
    if args.kind != "forward":
        classes = compiled.program("forward").graph.outputs[0].type.shape[-1]
        target = rng.integers(0, classes, args.batch)
    found = find_divergence(compiled, x, target, kind=args.kind, rtol=args.rtol, atol=args.atol)
    print(found or f"no divergence: every IR node of the {args.kind} program matches the numpy reference")
    if found:
        sys.exit(1)


# ---- stats and dot ---------------------------------------------------------------------------------------------
def stats_text(compiled, kind: str, batch: int) -> str:
    """Kernel count, FLOPs and bytes moved per kernel (fused and unfused), peak memory and compile timings."""
    from .ops import get_op
    from .passes.fusion import plan_kernels

    program = compiled.program(kind)
    sizes = {"N": batch}
    lines = [f"{kind} program of graph {program.graph.name} at batch {batch}",
             f"kernels: {len(plan_kernels(program.graph, fuse=False))} unfused, {len(program.kernels)} fused "
             f"({program.emitted.kernel_count} distinct functions)",
             f"{'kernel':>6}  {'kind':<12} {'MFLOP':>9} {'MB moved':>9}  nodes"]
    for i, k in enumerate(program.kernels):
        flops = sum(get_op(n.op).flops(n, sizes) for n in k.nodes if get_op(n.op).flops)
        moved = sum(_nbytes(v, sizes) for v in k.inputs + k.outputs)
        lines.append(f"{i:>6}  {k.kind:<12} {flops / 1e6:>9.3f} {moved / 1e6:>9.3f}  "
                     + ", ".join(n.op for n in k.nodes))
    memory = program.memory
    if memory is not None:
        item = memory.dtype_np.itemsize
        lines.append(f"intermediate memory: {memory.arena_elements(batch) * item / 1e6:.2f} MB with planning, "
                     f"{memory.bytes_without_plan(batch, item) / 1e6:.2f} MB without")
    from .debug import format_timings

    lines.append("compile timings: " + format_timings(program.timings))
    return "\n".join(lines)


def _nbytes(v, sizes) -> int:
    return int(np.prod(v.type.concrete(sizes), dtype=np.int64)) * v.type.np_dtype.itemsize


def to_dot(graph) -> str:
    """Graphviz text of a graph; every model name is JSON-escaped."""
    names = {v: f"in{i}" for i, v in enumerate(graph.inputs)}
    lines = [f"digraph {json.dumps(graph.name)} {{", "  node [shape=box, fontname=monospace];"]
    for v, n in names.items():
        lines.append(f"  {n} [label={json.dumps(f'%{v.name}: {v.type}')}, shape=ellipse];")
    for i, node in enumerate(graph.nodes):
        label = f"{node.op}\\n{', '.join(str(o.type) for o in node.outputs)}"
        lines.append(f"  n{i} [label={json.dumps(label)[:-1].replace(chr(92) * 2 + 'n', chr(92) + 'n')}\"];")
        for v in node.inputs:
            lines.append(f"  {names[v]} -> n{i};")
        for o in node.outputs:
            names[o] = f"n{i}"
    for j, v in enumerate(graph.outputs):
        lines.append(f"  out{j} [label=\"output {j}\", shape=ellipse];\n  {names[v]} -> out{j};")
    return "\n".join(lines + ["}"])


# ---- argument parsing ------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nncc", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", type=int, choices=[0, 1, 2, 3], help="1 timings, 2 IR after each pass, 3 source")
    sub = parser.add_subparsers(dest="command", required=True)

    def model_command(name, help_text, fn):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("model", help="file.py:ClassName, a .toml spec or an .onnx file")
        p.add_argument("--input-shape", help="input shape without the batch, e.g. 1,28,28")
        p.add_argument("--weights", help=".npz of parameters (PyTorch names), e.g. from nncc train --out")
        p.add_argument("--no-fuse", action="store_true", help="one kernel per op, no memory planning")
        p.set_defaults(fn=fn)
        return p

    p = model_command("compile", "write a self-contained Python package", cmd_compile)
    p.add_argument("-o", "--output", required=True, help="package directory to write")
    p = model_command("dump", "print the IR after a pass, the generated source, or statistics", cmd_dump)
    _target_option(p)
    p.add_argument("--stage", default="final", help="a pass name, 'fused', 'final', 'all' or 'source'")
    p.add_argument("--kind", default="forward", choices=["forward", "grad", "train"])
    p.add_argument("--format", default="text", choices=["text", "dot"])
    p.add_argument("--stats", action="store_true", help="kernels, FLOPs, bytes moved, memory, compile timings")
    p.add_argument("--batch", type=int, default=64, help="batch size for --stats")
    p = model_command("run", "run inference on a .npy input", cmd_run)
    _target_option(p)
    p.add_argument("input", help="input .npy file")
    p.add_argument("-o", "--output", help="write the output to this .npy file")
    p = model_command("train", "train on MNIST-format IDX files", cmd_train)
    _target_option(p)
    p.add_argument("--data", required=True, help="directory with the MNIST IDX files")
    p.add_argument("--download", action="store_true", help="download MNIST into --data when it is missing")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the trained parameters to this .npz")
    p.add_argument("--plot", help="write the loss/accuracy curves to this .png (needs matplotlib)")
    p.add_argument("--checkpoint", help="checkpoint file written after every epoch")
    p.add_argument("--resume", help="continue from this checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p = model_command("check", "find the first IR node where compiled code and the numpy reference differ",
                      cmd_check)
    p.add_argument("--kind", default="forward", choices=["forward", "grad", "train"])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--rtol", type=float, default=1e-4)
    p.add_argument("--atol", type=float, default=1e-5)
    return parser


def _target_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default="cpu", choices=["cpu", "cuda"],
                   help="cuda: numba.cuda kernels on an NVIDIA GPU (or numba's simulator, NUMBA_ENABLE_CUDASIM=1)")


def main(argv: Optional[list[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    if args.debug is not None:
        os.environ["NNCC_DEBUG"] = str(args.debug)
    from runtime import CheckpointError, TrainingDiverged
    from runtime.data import DataError

    try:
        args.fn(args)
    except (CliError, NNCCError, DataError, CheckpointError, TrainingDiverged, OSError) as e:
        print(f"nncc: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
