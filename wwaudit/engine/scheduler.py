"""Streaming layer scheduler: one task per layer, run in parallel, results in layer order.

Why it is shaped this way:

- Streaming. A task holds a *reference* to its tensor (the TensorRef: name, dims, dtype and, for
  external data, location/offset/length), the pass-through transforms and the view, never the
  data. The worker memory-maps the tensor when the task runs, keeps it in its stored dtype,
  lets spectra.gram widen it chunk by chunk into the M x M Gram matrix, analyses and drops it.
  Peak memory is therefore about (workers x largest tensor), whatever the number of layers.
- Parallel across layers. Per-layer work is a mix of BLAS (Gram, eigensolver) and numpy/Python
  (fits, shuffles, traps). Worker *processes* scale both; threads only scale the BLAS part because
  the Python part holds the GIL. Each task runs with ONE BLAS thread: OpenBLAS' symmetric
  eigensolver gives different last bits for different thread counts (measured), and the JSON must
  be byte-identical whatever `--workers` is. Parallelism comes from running layers side by side;
  tasks are submitted largest first so the biggest layer never starts last.
- Pluggable executor. Anything with `submit(fn, *args)` returning a future that has
  `add_done_callback` and `result` can run the tasks: concurrent.futures' executors, or Dask
  distributed's `Client.get_executor()` (the cluster must see the model folder under the same
  path, since tasks carry the path, not the bytes, of external data). The analysis code does not
  change: a task is a plain picklable value and `run_task` a module-level function.
- The progress display is fed from the calling thread only, as results arrive.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import sys
import time
from concurrent.futures import BrokenExecutor, Executor, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol

import numpy as np

from wwaudit.spectral.analysis import LayerAnalysis, analyse_matrices
from wwaudit.ingest.plan import LayerSpec
from wwaudit.options import AuditOptions
from wwaudit.spectral.spectra import Storage
from wwaudit.errors import InputError

# dtypes numpy computes with natively; others (bfloat16, float8, float4 from ml_dtypes) are
# widened to float32, which holds every one of their values exactly.
_NATIVE_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))

# Below this much estimated eigen work (flops) the layers run here, one after another: starting
# worker processes costs 0.05-0.3 s (measured), more than such a model's whole analysis.
PARALLEL_MIN_COST = 5e8


class Progress(Protocol):
    """What the scheduler tells a progress display: layer count, and work units for the ETA."""

    def start(self, total: int, work: float | None = None) -> None: ...

    def advance(self, name: str, work: float = 1.0) -> None: ...

    def finish(self) -> None: ...


class SilentProgress:
    """The progress display that shows nothing: libraries, --quiet, and stderr that is not a terminal."""

    def start(self, total: int, work: float | None = None) -> None:
        pass

    def advance(self, name: str, work: float = 1.0) -> None:
        pass

    def finish(self) -> None:
        pass


class LayerExecutor(Protocol):
    """The one method the scheduler needs from an executor (concurrent.futures or Dask's)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Any: ...


@dataclass(frozen=True)
class LayerTask:
    """Everything needed to analyse one layer, and no weight data: cheap to pickle and send."""

    index: int  # position in the audit's layer list; results are put back in this order
    name: str
    spec: LayerSpec  # tensor reference (external location/offset/length), transforms, view
    kind: str
    eps: Storage | float  # how the values were stored: the rank-loss noise floor (spectra.Storage)
    options: AuditOptions
    cost: float  # estimated work: N·M² per slice (Gram) + M³ (eigensolver)

    def matrices(self) -> list[Any]:
        """The layer's matrices in their stored dtype (memory-mapped for external data), or read
        in blocks on demand (StreamedMatrix) where the metrics asked for need no more than row
        chunks: the reference set (--fast) with no metric that reads the matrix whole."""
        options = self.options
        if options.fast and not (options.vectors or options.per_slice):
            streamed = self.spec.streamed()
            if streamed is not None:
                return list(streamed)
        mats = self.spec.matrices(widen=False)
        return [m if m.dtype in _NATIVE_FLOATS else m.astype(np.float32) for m in mats]


@dataclass
class LayerOutcome:
    """What came back for one task: an analysis, or the reason its tensor could not be read."""

    index: int
    analysis: LayerAnalysis | None
    error: str | None = None
    seconds: float = 0.0
    problem: str | None = None  # results.LayerResult.problem when analysis is None


def estimate_cost(N: int, M: int, slices: int) -> float:
    """Flop estimate of the eigen work: Gram N·M² plus eigensolver ~M³, per slice."""
    return float(slices) * (float(N) * M * M + float(M) ** 3)


def run_task(task: LayerTask) -> LayerOutcome:
    """Read, analyse and drop one layer (runs in a worker; module-level so it pickles by name)."""
    t0 = time.perf_counter()
    try:
        mats = task.matrices()
    except InputError as exc:
        return LayerOutcome(task.index, None, str(exc), time.perf_counter() - t0, problem="unreadable")
    try:
        analysis = analyse_matrices(mats, task.kind, task.eps, task.options)
    except (ArithmeticError, ValueError, np.linalg.LinAlgError) as exc:
        # A numerical failure in one layer must not end the audit of the others: the layer is
        # reported as an error (rule WW010) and the verdict fails, so nothing is silently passed.
        message = f"analysis failed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        return LayerOutcome(task.index, None, message, time.perf_counter() - t0, problem="internal")
    del mats
    return LayerOutcome(task.index, analysis, None, time.perf_counter() - t0)


def default_workers() -> int:
    """Usable cores of this process (CPU affinity/cgroup-aware where the OS tells)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _limit_blas_threads() -> None:
    """Worker initializer: one BLAS thread per task (determinism, no oversubscription)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def make_executor(workers: int, device: str = "cpu") -> Executor:
    """Worker processes for the CPU (fork where available: no re-import, workers start at once);
    threads when torch drives a device (CUDA contexts do not survive fork; GPU work serialises)."""
    if device != "cpu":
        return ThreadPoolExecutor(max_workers=workers)
    methods = multiprocessing.get_all_start_methods()
    method = "fork" if "fork" in methods and sys.platform.startswith("linux") else "spawn"
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context(method), initializer=_limit_blas_threads
    )


def _start(tasks: list[LayerTask], progress: Progress) -> None:
    progress.start(len(tasks), sum(t.cost for t in tasks))


def _run_serial(tasks: list[LayerTask], progress: Progress) -> dict[int, LayerOutcome]:
    _start(tasks, progress)
    outcomes = {}
    for task in tasks:
        outcomes[task.index] = run_task(task)
        progress.advance(task.name, task.cost)
    return outcomes


def _run_on(executor: LayerExecutor, tasks: list[LayerTask], progress: Progress) -> dict[int, LayerOutcome]:
    """Submit every task, then collect results as they finish; progress is fed from this thread.

    The display starts only after the submissions: a fork-based pool forks its workers at the
    first submit, and must do so before the display's refresh thread exists.
    """
    done: queue.SimpleQueue = queue.SimpleQueue()
    for task in tasks:
        future = executor.submit(run_task, task)
        future.add_done_callback(lambda f, t=task: done.put((t, f)))
    _start(tasks, progress)
    outcomes = {}
    for _ in range(len(tasks)):
        task, future = done.get()
        try:
            outcomes[task.index] = future.result()
        except BrokenExecutor:
            raise MemoryError(f"a worker died while analysing layer '{task.name}'") from None
        progress.advance(task.name, task.cost)
    return outcomes


def run_layers(
    tasks: Iterable[LayerTask],
    progress: Progress,
    workers: int = 1,
    executor: LayerExecutor | None = None,
) -> list[LayerOutcome]:
    """Run the tasks (largest first) and return their outcomes in layer order.

    With `executor` the caller's executor runs them (and the caller shuts it down); otherwise
    `workers` > 1 starts worker processes for this call (unless the model is too small to repay
    them), and 1 runs them here, one after another.
    Either way each task sees one BLAS thread, so the numbers never depend on `workers`.
    """
    from threadpoolctl import threadpool_limits

    ordered = sorted(tasks, key=lambda t: (-t.cost, t.index))
    with ExitStack() as stack:
        stack.callback(progress.finish)
        stack.enter_context(threadpool_limits(limits=1))
        if executor is not None:
            outcomes = _run_on(executor, ordered, progress)
        elif workers <= 1 or len(ordered) <= 1 or sum(t.cost for t in ordered) < PARALLEL_MIN_COST:
            outcomes = _run_serial(ordered, progress)
        else:
            device = ordered[0].options.device
            pool = make_executor(min(workers, len(ordered)), device)
            stack.callback(pool.shutdown, cancel_futures=True)
            outcomes = _run_on(pool, ordered, progress)
    return [outcomes[i] for i in sorted(outcomes)]
