"""Cold compiles on every core: the slots of a CPU module not yet in numba's cache compile in several
processes at once, before the module's first call (a program never called, such as the forward program of a
training run, costs no compile).

numba compiles one function at a time under a process-wide lock, so a cold LeNet training step kept one core
busy for its ~20 kernels while the other sat idle. Here the calling process and ``jobs - 1`` worker processes
share the work: each imports the module from its cache file (the same file, hence the same numba cache
entries), then claims work items one by one, largest first, by creating a claim file (``O_EXCL``: exactly one
process wins each item) and compiles what it claimed into numba's on-disk cache. Afterwards the calling
process loads the workers' results from that cache like any warm start.

A work item is one kernel with all its slots (numba keeps one cache index file per function, which two
writers would clobber) or the driver. A worker that dies leaves its items uncompiled: the calling process
then compiles them on first use and reports any error as usual. Each process leaves the CPU seconds an item
took it beside the item's claim; ``compile_module`` returns them (``NNCC_DEBUG=1`` prints them at the first
call), so a slow cold compile is blamed on its kernel.

This file runs as a script in the workers (``python parallel_compile.py ...``), so it imports nothing of
nncc: a worker starts in the time numba takes to import.
"""
from __future__ import annotations

import importlib.util
import inspect
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Optional

#: below this many work items a worker's start (about 0.6 s: Python, numpy, numba) costs more than it saves
MIN_ITEMS = 6
#: workers beyond this many mostly wait for their numba import: a module has a few dozen work items at most
MAX_JOBS = 8
DRIVER = "driver"
#: the suffix of the file in which a process leaves the CPU seconds an item took it, beside the item's claim
_SECONDS = ".seconds"


def compile_jobs() -> int:
    """Processes for a cold compile: ``NNCC_COMPILE_JOBS``, else the cores this process may run on."""
    setting = os.environ.get("NNCC_COMPILE_JOBS", "").strip()
    if setting:
        try:
            return max(1, int(setting))
        except ValueError:
            raise ValueError(f"NNCC_COMPILE_JOBS must be a whole number of processes, got {setting!r}") from None
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def compile_module(module: ModuleType, jobs: Optional[int] = None) -> dict[str, float]:
    """Compile every slot and the driver of ``module`` with ``jobs`` processes (default ``compile_jobs()``, at
    most ``MAX_JOBS``; one below ``MIN_ITEMS`` work items), this one included, unless numba's cache already
    holds some of its code (a warm start, or one whose other items compile on first use). Returns the CPU
    seconds each work item took to compile, in whichever process took it (empty when nothing compiled here).

    Nothing here raises for a kernel that does not compile: the module's first call compiles what is left
    and reports the error there, whichever process met it first."""
    path = Path(module.__file__)
    try:
        if any(Path(module._run._cache._cache_path).glob(f"{path.stem}.*.nbi")):  # numba's index files of it
            return {}
        items = _work_items(module)
    except Exception:  # noqa: BLE001 - numba's private cache layout changed, or no source: compile on first use
        return {}
    jobs = 1 if len(items) < MIN_ITEMS else min(compile_jobs() if jobs is None else jobs, MAX_JOBS, len(items))
    claims = Path(tempfile.mkdtemp(dir=path.parent, prefix="claims-"))  # this call's own: others may run too
    command = [sys.executable, os.path.abspath(__file__), module.__name__, str(path), str(claims)]
    workers: list[subprocess.Popen] = []
    try:
        for _ in range(jobs - 1):
            workers.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _work(module, items, claims)
    except Exception:  # noqa: BLE001 - left to the first call, which compiles the rest and reports
        pass
    finally:
        _finish(workers, interrupted=sys.exc_info()[0] is not None)
        seconds = _seconds(claims)
        shutil.rmtree(claims, ignore_errors=True)
    return seconds


def _seconds(claims: Path) -> dict[str, float]:
    """The CPU seconds the processes left for their items, longest first (a file cut short by a stopped
    worker is left out)."""
    seconds = {}
    for path in claims.glob(f"*{_SECONDS}"):
        try:
            seconds[path.name.removesuffix(_SECONDS)] = float(path.read_text())
        except (OSError, ValueError):
            continue
    return dict(sorted(seconds.items(), key=lambda kv: -kv[1]))


def _finish(workers: list[subprocess.Popen], interrupted: bool) -> None:
    """Wait for the workers; on an interrupt stop them instead of waiting for the whole module."""
    for worker in workers:
        if interrupted:
            worker.terminate()
        try:
            worker.wait(timeout=5 if interrupted else None)
        except subprocess.TimeoutExpired:
            worker.kill()


def _work_items(module: ModuleType) -> list[str]:
    """The kernels (by name) and the driver, largest source first: the last items to finish are small."""
    size = {DRIVER: len(inspect.getsource(module._run.py_func))}
    kernels = {kernel.__name__ for kernel, _ in module._SLOTS}
    for kernel, _ in module._SLOTS:  # helpers (im2col, epilogue) are named after the kernel whose chunk has them
        prefix = kernel.__name__.removesuffix("_chunk") + "_"
        helpers = [f for name, f in vars(module).items() if name.startswith(prefix) and name not in kernels]
        size[kernel.__name__] = sum(len(inspect.getsource(f.py_func)) for f in [kernel] + helpers)
    return sorted(size, key=size.get, reverse=True)


def _work(module: ModuleType, items: list[str], claims: Path) -> None:
    for item in items:
        try:
            os.close(os.open(claims / item, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue  # another process has it
        except FileNotFoundError:
            return  # the calling process is done and removed the claims
        start = time.process_time()
        if item == DRIVER:
            from numba.core import sigutils

            module._run.compile(sigutils.normalize_signature(module._DRIVER_SIGNATURE)[0])
        else:
            for kernel, signature in module._SLOTS:
                if kernel.__name__ == item:
                    module._address(kernel, signature)
        try:
            (claims / f"{item}{_SECONDS}").write_text(f"{time.process_time() - start:.4f}")
        except FileNotFoundError:
            return  # the calling process is done and removed the claims


def _worker(name: str, path: str, claims: str) -> None:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    _work(module, _work_items(module), Path(claims))


if __name__ == "__main__":
    _worker(*sys.argv[1:4])
