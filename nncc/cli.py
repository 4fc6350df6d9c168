"""The ``nncc`` command line: compile, dump, run, train and check models (``_EPILOG`` below is its usage).

Every bad input ends in one line on stderr, ``nncc: error: ...``, and exit status 2; ``--debug 1`` (or
``NNCC_DEBUG=1``) adds the traceback behind it.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
import zipfile
from pathlib import Path
from typing import Optional, Union

import numpy as np

from . import debug
from .errors import NNCCError

Shape = Union[tuple, list]  # one input shape with None for the batch, or a list of them


_EPILOG = """\
MODEL is file.py:ClassName (an nncc.nn.Module), a .toml spec file or an .onnx file. Examples:

  nncc train examples/lenet.py:LeNet --data ../shared/data/mnist-small --epochs 5 --out lenet.npz
  nncc run examples/lenet.toml images.npy --weights lenet.npz -o logits.npy
  nncc compile examples/lenet.toml -o lenet_pkg --weights lenet.npz
  nncc dump examples/lenet.toml --stage all
  nncc compile lenet.onnx -o lenet_pkg      (an ONNX file's weights and input shape come with it)
  nncc dump examples/lenet.toml --stage fused --format dot | dot -Tsvg > lenet.svg
  nncc --debug 1 dump examples/lenet.py:LeNet --input-shape 1,28,28 --kind train --stats
"""


class CliError(Exception):
    """A bad command line or input: printed as one line, exit status 2."""


# ---- loading models, weights and inputs -----------------------------------------------------------------------
def _load(args, default_shape: Optional[Shape] = None):
    """(model, input shape) from MODEL, --input-shape and --weights."""
    from .frontend.loader import load_model

    model, file_shape = load_model(args.model)
    shape = args.input_shape or file_shape or default_shape
    if shape is None:
        raise CliError(f"{args.model}: give the input shape without the batch, e.g. --input-shape 1,28,28")
    if args.weights:
        model.load_state_dict(read_weights(args.weights))
    return model, shape


def read_weights(path) -> dict[str, np.ndarray]:
    """Parameters from an ``.npz``: ``np.savez(f, **state_dict)``, ``nncc train --out`` or a checkpoint."""
    archive = _load_numpy(path, "weights")
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise CliError(f"{path}: weights must be an .npz archive of named arrays (np.savez), not a single array")
    with archive:
        return {k.removeprefix("model/"): archive[k] for k in archive.files if not k.startswith(("optim/", "meta/"))}


def _read_input(path) -> np.ndarray:
    array = _load_numpy(path, "input")
    if not isinstance(array, np.ndarray):
        array.close()
        raise CliError(f"{path}: an input must be a .npy array (np.save), not an .npz archive")
    return array


def _load_numpy(path, what: str):
    try:
        return np.load(path, allow_pickle=False)
    except OSError as e:
        raise CliError(f"cannot read the {what} {path}: {e.strerror or e}")
    except (ValueError, zipfile.BadZipFile):  # numpy's own message would talk about pickles
        raise CliError(f"cannot read the {what} {path}: not a NumPy .npy/.npz file")


def _compile(model, shape: Shape, kind: str, args):
    import nncc
    from nncc import nn
    from runtime import optim

    options = {"input_shape": shape, "fuse": not args.no_fuse, "target": getattr(args, "target", "cpu")}
    if kind == "forward":
        return nncc.compile(model, **options)
    return nncc.compile(model, loss=nn.CrossEntropyLoss(), optimizer=optim.SGD(lr=0.01, momentum=0.9), **options)


# ---- commands -------------------------------------------------------------------------------------------------
def cmd_compile(args) -> None:
    from .export import export_package

    model, shape = _load(args)
    path = export_package(_compile(model, shape, "forward", args), args.output)
    print(f"wrote {path}/ (with {path.parent} on sys.path: `import {path.name}; {path.name}.forward(x)`)")


def cmd_dump(args) -> None:
    model, shape = _load(args)
    compiled = _compile(model, shape, args.kind, args)
    if args.stats:
        print(stats_text(compiled, args.kind, args.batch))
        return
    program = compiled.program(args.kind)
    if args.stage == "source":
        if args.format == "dot":
            raise CliError("--format dot draws IR stages; --stage source is Python text")
        print(program.emitted.source)
        return
    stages = [*program.dumps, "final"]
    if args.stage != "all" and args.stage not in stages:
        raise CliError(f"no stage {args.stage!r}; stages: {', '.join([*stages, 'all', 'source'])}")
    comment = "//" if args.format == "dot" else "#"
    for stage in stages if args.stage == "all" else [args.stage]:
        print(f"{comment} ---- {stage} ----")
        print(_stage_dot(program, stage) if args.format == "dot" else
              str(program.graph) if stage == "final" else program.dumps[stage])


def _stage_dot(program, stage: str) -> str:
    from .ir.parser import parse_graph

    if stage == "final":
        return to_dot(program.graph)
    if stage == "fused":
        return to_dot(program.graph, program.kernels)
    return to_dot(parse_graph(program.dumps[stage]))


def cmd_run(args) -> None:
    xs = [_read_input(p) for p in args.inputs]
    sample_shapes = [(None, *x.shape[1:]) for x in xs]
    model, shape = _load(args, default_shape=sample_shapes[0] if len(xs) == 1 else sample_shapes)
    y = _compile(model, shape, "forward", args)(*xs)
    outputs = list(y) if isinstance(y, tuple) else [y]
    if not args.output:
        for i, out in enumerate(outputs):
            if len(outputs) > 1:
                print(f"output {i}: {out.dtype} {list(out.shape)}")
            print(np.array2string(out, precision=4))
        return
    with open(args.output, "wb") as f:  # a file object: np.save/np.savez would otherwise change the suffix
        if len(outputs) == 1:
            np.save(f, outputs[0])
        else:
            np.savez(f, **{f"output{i}": out for i, out in enumerate(outputs)})
    print(f"wrote {args.output}: " + ", ".join(f"{out.dtype} {list(out.shape)}" for out in outputs)
          + (" (an .npz with output0, output1, ...)" if len(outputs) > 1 else ""))


def cmd_train(args) -> None:
    import nncc
    from nncc import nn
    from runtime import Trainer, data, optim

    from .export import save_npz

    if args.plot:
        try:
            import matplotlib  # noqa: F401 - checked before training, not after it
        except ImportError:
            raise CliError("--plot needs matplotlib: pip install 'nncc[plot]'")
    train, test = data.mnist(args.data, download=args.download)
    nncc.manual_seed(args.seed)  # before the model is built: its initial weights come from this seed
    model, shape = _load(args, default_shape=(None, *train.images.shape[1:]))
    opt = optim.Adam(lr=args.lr) if args.optimizer == "adam" else optim.SGD(lr=args.lr, momentum=args.momentum)
    step = nncc.compile(model, input_shape=shape, loss=nn.CrossEntropyLoss(), optimizer=opt, fuse=not args.no_fuse,
                        target=args.target)
    trainer = Trainer(step, train, test, batch_size=args.batch_size, epochs=args.epochs, seed=args.seed,
                      checkpoint=args.checkpoint, resume=args.resume, progress=not args.no_progress)
    history = trainer.fit()
    if args.out:
        save_npz(args.out, step.state_dict())
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
             (f"kernels: {len(plan_kernels(program.graph, fuse=False))} unfused, {len(program.kernels)} fused "
              f"({program.emitted.kernel_count} distinct functions)"),
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
    lines.append("compile timings: " + debug.format_timings(program.timings))
    return "\n".join(lines)


def _nbytes(v, sizes) -> int:
    return int(np.prod(v.type.concrete(sizes), dtype=np.int64)) * v.type.np_dtype.itemsize


def to_dot(graph, kernels: Optional[list] = None) -> str:
    """Graphviz text of a graph: inputs as ellipses, one box per node (numbered as the IR printer numbers
    values), an edge per use. With ``kernels`` (a fusion plan), each kernel is a cluster. Names from the model
    only ever appear inside escaped label strings.

    Example: ``nncc dump examples/lenet.toml --format dot --stage fused | dot -Tsvg > lenet.svg``.
    """
    from .ir.printer import format_name

    source = {v: f"in{i}" for i, v in enumerate(graph.inputs)}  # value -> dot id of its producer
    names = {v: format_name(v.name) for v in graph.inputs}
    lines = [f"digraph {dot_string(graph.name)} {{", "  node [shape=box, fontname=monospace];"]
    lines += [f"  {source[v]} [label={dot_string(f'{names[v]}: {v.type}')}, shape=ellipse];" for v in graph.inputs]
    boxes, edges = {}, []
    for i, node in enumerate(graph.nodes):
        for out in node.outputs:
            names[out] = f"%{len(names) - len(graph.inputs)}"
            source[out] = f"n{i}"
        text = f"{', '.join(names[o] for o in node.outputs)} = {node.op}\n" \
               f"{', '.join(str(o.type) for o in node.outputs)}" + (f"\n{node.label}" if node.label else "")
        boxes[id(node)] = f"n{i} [label={dot_string(text)}];"
        edges += [f"  {source[v]} -> n{i};" for v in node.inputs]
    if kernels is None:
        lines += ["  " + box for box in boxes.values()]
    for k, kernel in enumerate(kernels or []):
        lines.append(f"  subgraph cluster_{k} {{ label={dot_string(f'kernel #{k} ({kernel.kind})')};")
        lines += ["    " + boxes[id(node)] for node in kernel.nodes]
        lines.append("  }")
    for j, v in enumerate(graph.outputs):
        lines += [f"  out{j} [label=\"output {j}\", shape=ellipse];", f"  {source[v]} -> out{j};"]
    return "\n".join(lines + edges + ["}"])


def dot_string(text: str) -> str:
    """A Graphviz quoted string showing ``text`` literally; newlines become line breaks."""
    escaped = []
    for c in text:
        if c in '\\"':
            escaped.append("\\" + c)
        elif c == "\n":
            escaped.append("\\n")
        elif ord(c) < 32 or ord(c) == 127:  # other control characters, shown as \xNN
            escaped.append(f"\\\\x{ord(c):02x}")
        else:
            escaped.append(c)
    return '"' + "".join(escaped) + '"'


# ---- argument parsing ------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and status 2, like every other bad input (no usage block)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _input_shape(text: str) -> tuple:
    dims = text.split(",")
    if not all(d.strip().isdigit() and int(d) > 0 for d in dims):
        raise argparse.ArgumentTypeError(f"expected positive ints without the batch, e.g. 1,28,28; got {text!r}")
    return (None, *(int(d) for d in dims))


def _output_file(text: str) -> str:
    """A file to write: its directory must exist now, not after a long run."""
    parent = Path(text).parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: directory {str(parent)!r} does not exist")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nncc", description="nncc: compile, inspect, run and train small neural networks",
                     epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", type=int, choices=list(debug.LEVELS),
                        help="as NNCC_DEBUG: 1 compile timings (and tracebacks), 2 IR after each pass, 3 source")
    sub = parser.add_subparsers(dest="command", required=True)

    def model_command(name, help_text, fn):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("model", help="file.py:ClassName, a .toml spec or an .onnx file")
        p.add_argument("--input-shape", type=_input_shape, help="input shape without the batch, e.g. 1,28,28")
        p.add_argument("--weights", help=".npz of parameters (PyTorch names): np.savez, nncc train --out, a checkpoint")
        p.add_argument("--no-fuse", action="store_true", help="one kernel per op, no memory planning")
        p.set_defaults(fn=fn)
        return p

    p = model_command("compile", "write a self-contained Python package (needs only numpy and numba)",
                      cmd_compile)
    p.add_argument("-o", "--output", required=True, help="package directory to write; its name is the package's")
    p = model_command("dump", "print the IR after a pass, the generated source, or statistics", cmd_dump)
    _target_option(p)
    p.add_argument("--stage", default="final", help="a pass name, 'fused', 'final', 'all' or 'source'")
    p.add_argument("--kind", default="forward", choices=["forward", "evaluate", "grad", "train"],
                   help="the program: forward; or with a cross-entropy loss and SGD: evaluate, grad, train")
    p.add_argument("--format", default="text", choices=["text", "dot"], help="dot: Graphviz text")
    p.add_argument("--stats", action="store_true", help="kernels, FLOPs, bytes moved, memory, compile timings")
    p.add_argument("--batch", type=_positive_int, default=64, help="batch size for --stats")
    p = model_command("run", "run inference on .npy input(s)", cmd_run)
    _target_option(p)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="input .npy file(s), one per model input")
    p.add_argument("-o", "--output", type=_output_file, help="write the output to this .npy file")
    p = model_command("train", "train on MNIST-format IDX files with a cross-entropy loss", cmd_train)
    _target_option(p)
    p.add_argument("--data", required=True, help="directory with the MNIST IDX files")
    p.add_argument("--download", action="store_true", help="download MNIST into --data when it is missing")
    p.add_argument("--epochs", type=_positive_int, default=5)
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    p.add_argument("--lr", type=_non_negative_float, default=0.01)
    p.add_argument("--momentum", type=_non_negative_float, default=0.9, help="SGD only")
    p.add_argument("--seed", type=int, default=0, help="initial weights, shuffling and dropout masks")
    p.add_argument("--out", type=_output_file, help="write the trained parameters to this .npz")
    p.add_argument("--plot", type=_output_file, help="write the loss/accuracy curves to this .png (needs matplotlib)")
    p.add_argument("--checkpoint", type=_output_file, help="checkpoint file written after every epoch")
    p.add_argument("--resume", help="continue from this checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p = model_command("check", "find the first IR node where compiled code and the numpy reference differ",
                      cmd_check)
    p.add_argument("--kind", default="forward", choices=["forward", "grad", "train"])
    p.add_argument("--batch", type=_positive_int, default=4)
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
    except KeyboardInterrupt:
        checkpoint = getattr(args, "checkpoint", None)
        print("nncc: interrupted" + (f"; continue from its last checkpoint with --resume {checkpoint}"
                                     if checkpoint else ""), file=sys.stderr)
        sys.exit(130)
    except (CliError, NNCCError, DataError, CheckpointError, TrainingDiverged, OSError) as e:
        if debug.level() >= 1:
            traceback.print_exc()
        print(f"nncc: error: {' '.join(str(e).splitlines())}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
