"""Dask cluster overhead against the process pool, and a projection of a 70B model on N workers, in ONE run.

Run by hand on an otherwise idle machine (not in CI; timings on a machine shared with other work
say more about the neighbours than about wwaudit):

    python benchmarks/cluster_scale.py --small     # smoke run on the tiny BERT shape (about a minute)
    python benchmarks/cluster_scale.py             # BERT-large shape (147 matrices), --fast metrics
    python benchmarks/cluster_scale.py --full      # the default metric set (traps, distributions)

(a) Overhead. The BERT-large-shaped model of make_synthetic.py is audited four times with the same
    options: `--workers 1` and `--workers 2` (the process pool; 1 runs in this process) and a
    LocalCluster of 1 and 2 single-threaded worker processes (`--cluster local:N`). The cluster's
    start (about seconds) is timed apart and left out of its wall: it is paid once per run, not per
    task, and a long-lived cluster does not pay it at all. Printed: each wall, the cluster/pool wall
    ratio, and the overhead per task, (cluster wall − pool wall) × workers / tasks. Target: the
    2-worker overhead at most 10% of the process pool's wall. The four JSON documents must be
    byte-identical (checked).
(b) Per-layer cost model. Seconds per task = a + b·N·M² + c·M³ (Gram plus eigensolver, as
    scheduler.estimate_cost), fitted (non-negative least squares) to the per-task seconds of the
    1-worker pool run plus probes: one real layer analysis (spectral.analysis.analyse_matrices,
    same options) of a heavy-tailed M×M and 4M×M matrix for each --probe M, so the M³ term is
    measured beyond BERT's M = 1024.
(c) Projection of a Llama-2-70B-shaped decoder (80 layers, hidden 8192, grouped K/V 1024, gated
    FFN 28672, vocab 32000, untied LM head: 562 matrices, float16) on N = 1…64 workers.
    Assumptions, all printed with the table: workers are identical to one core of this machine,
    one BLAS thread each; task seconds follow the fitted model (the flop rate at M = 8192 is that
    of the largest probe); each task also pays the measured per-task Dask overhead and reads its
    tensor at --read-gbps GB/s per worker from shared storage; tasks are placed largest first on
    the earliest free worker (what the scheduler's priorities do); loading and planning (the
    client's part, measured here per matrix) does not overlap the analysis; no worker fails. Peak
    memory per worker is the largest task's working set (engine.limits.working_set_bytes).
"""

from __future__ import annotations

import argparse
import heapq
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from make_synthetic import ensure, heavy_tailed  # noqa: E402

from wwaudit.engine.core import finish, prepare  # noqa: E402
from wwaudit.engine.limits import format_bytes, working_set_bytes  # noqa: E402
from wwaudit.engine.scheduler import LayerOutcome, SilentProgress, estimate_cost, run_layers  # noqa: E402
from wwaudit.formats import FORMATS  # noqa: E402
from wwaudit.options import AuditOptions  # noqa: E402


def _run(model: Path, options: AuditOptions, executor: object = None) -> tuple[float, list[LayerOutcome], bytes, list]:
    """One audit through prepare/run_layers/finish (the CLI's path), timing the analysis only."""
    prepared = prepare(str(model), options)
    t0 = time.perf_counter()
    outcomes = run_layers(prepared.tasks, SilentProgress(), options.workers, executor)  # type: ignore[arg-type]
    wall = time.perf_counter() - t0
    tasks = list(prepared.tasks)
    result = finish(prepared, outcomes, wall)
    return wall, outcomes, FORMATS["json"](result, None), tasks


def overhead(model: Path, fast: bool) -> tuple[dict, list[tuple[float, float, float]], float]:
    """(a): walls of the four runs; also the 1-worker pool's (N, M, seconds) per task and per-task overhead."""
    from wwaudit.engine import scheduler
    from wwaudit.engine.cluster import cluster_executor

    scheduler.PARALLEL_MIN_COST = 0  # the pool really runs, whatever the model's size
    walls, docs, samples = {}, {}, []
    for workers in (1, 2):
        wall, outcomes, doc, tasks = _run(model, AuditOptions(workers=workers, fast=fast))
        walls[f"pool-{workers}"], docs[f"pool-{workers}"] = wall, doc
        if workers == 1:
            by_index = {o.index: o for o in outcomes}
            samples = [(t.spec.shape_info()[0], t.spec.shape_info()[1], by_index[t.index].seconds) for t in tasks]
    for workers in (1, 2):
        t0 = time.perf_counter()
        with cluster_executor(f"local:{workers}") as ex:
            ex.client.run(lambda: __import__("wwaudit.spectral.analysis"))  # workers import once, as a live cluster has
            walls[f"start-{workers}"] = time.perf_counter() - t0
            wall, _, doc, tasks = _run(model, AuditOptions(workers=workers, fast=fast), ex)
        walls[f"dask-{workers}"], docs[f"dask-{workers}"] = wall, doc
    same = len(set(docs.values())) == 1
    n = len(tasks)
    print(f"\n(a) {n} layer tasks; JSON byte-identical across the four runs: {same}")
    print(
        f"{'workers':>8} {'pool s':>9} {'dask s':>9} {'dask/pool':>10} {'overhead/task':>14} {'of pool wall':>13} {'cluster start s':>16}"
    )
    per_task = 0.0
    for w in (1, 2):
        pool, dask = walls[f"pool-{w}"], walls[f"dask-{w}"]
        per_task = (dask - pool) * w / n
        print(
            f"{w:>8} {pool:>9.2f} {dask:>9.2f} {dask / pool:>10.3f} {per_task * 1e3:>11.1f} ms {(dask - pool) / pool:>12.1%} {walls[f'start-{w}']:>16.1f}"
        )
    if not same:
        print("WARNING: the cluster's JSON differs from the local run's", file=sys.stderr)
    return walls, samples, max(per_task, 0.0)


def probes(sizes: list[int], fast: bool) -> list[tuple[float, float, float]]:
    """(b): seconds of one real layer analysis of M×M and 4M×M heavy-tailed matrices."""
    from threadpoolctl import threadpool_limits

    from wwaudit.spectral.analysis import analyse_matrices

    rng = np.random.default_rng(0)
    out = []
    with threadpool_limits(limits=1):
        for m in sizes:
            for n in (m, 4 * m):
                mat = heavy_tailed(rng, n, m, np.float32)
                t0 = time.perf_counter()
                analyse_matrices([mat], "dense", float(np.finfo(np.float32).eps), AuditOptions(fast=fast))
                out.append((float(n), float(m), time.perf_counter() - t0))
                print(f"    probe {n}×{m}: {out[-1][2]:.2f} s")
    return out


def fit(samples: list[tuple[float, float, float]]) -> np.ndarray:
    """Non-negative least squares of seconds = a + b·N·M² + c·M³, weighted to fit relative error."""
    from scipy.optimize import nnls

    n, m, s = (np.array(col) for col in zip(*samples))
    design = np.stack([np.ones_like(n), n * m * m, m**3], axis=1) / s[:, None]
    coef, _ = nnls(design, np.ones_like(s))
    return coef


def llama70b() -> list[tuple[int, int]]:
    """The 562 matrices of a Llama-2-70B-shaped decoder as (rows, cols)."""
    h, kv, ffn, vocab = 8192, 1024, 28672, 32000
    per_layer = [(h, h), (h, kv), (h, kv), (h, h), (h, ffn), (h, ffn), (ffn, h)]
    return per_layer * 80 + [(vocab, h), (h, vocab)]


def project(coef: np.ndarray, per_task_overhead: float, read_gbps: float, plan_s_per_matrix: float) -> None:
    """(c): LPT schedule of the 70B tasks on N workers, with the assumptions printed."""
    shapes = llama70b()
    seconds = []
    for rows, cols in shapes:
        n, m = max(rows, cols), min(rows, cols)
        seconds.append(coef[0] + coef[1] * n * m * m + coef[2] * m**3 + per_task_overhead + rows * cols * 2 / (read_gbps * 1e9))
    seconds.sort(reverse=True)
    plan = plan_s_per_matrix * len(shapes)
    peak = max(working_set_bytes(r * c, max(r, c), min(r, c), 2, False, True) for r, c in shapes)
    print(f"\n(c) Llama-2-70B shape: {len(shapes)} matrices, {sum(r * c for r, c in shapes) / 1e9:.1f} G parameters in float16")
    print(
        f"    model: s = {coef[0]:.3g} + {coef[1]:.3g}·N·M² + {coef[2]:.3g}·M³; + {per_task_overhead * 1e3:.1f} ms Dask overhead per task;"
    )
    print(
        f"    read at {read_gbps:g} GB/s per worker; planning {plan:.1f} s before the analysis; peak per worker {format_bytes(peak)}"
    )
    print(f"{'workers':>8} {'wall':>12} {'speed-up':>9} {'efficiency':>11}")
    total = sum(seconds)
    for workers in (1, 2, 4, 8, 16, 32, 64):
        free = [0.0] * workers
        for s in seconds:
            heapq.heappush(free, heapq.heappop(free) + s)
        wall = plan + max(free)
        serial = plan + total
        print(f"{workers:>8} {_duration(wall):>12} {serial / wall:>9.1f} {serial / wall / workers:>11.0%}")
    print(f"    the longest task ({_duration(seconds[0])}) bounds the wall from below: {_duration(plan + seconds[0])}")


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="tiny BERT shape, small probes: a smoke run")
    parser.add_argument("--full", action="store_true", help="default metric set (traps, distributions); default: --fast")
    parser.add_argument("--probe", type=int, action="append", help="probe size M (repeatable; default 1024 and 2048)")
    parser.add_argument("--read-gbps", type=float, default=0.5, help="assumed read bandwidth per worker, GB/s (default 0.5)")
    args = parser.parse_args()
    fast = not args.full
    model = ensure("bert-large", args.small)
    print(f"model {model.relative_to(ROOT)}; metrics: {'fast' if fast else 'default'}")
    t0 = time.perf_counter()
    prepared = prepare(str(model), AuditOptions(fast=fast))
    plan_per_matrix = (time.perf_counter() - t0) / max(1, len(prepared.tasks))
    _walls, samples, per_task = overhead(model, fast)
    print("\n(b) probes (one BLAS thread):")
    sizes = args.probe or ([128, 256] if args.small else [1024, 2048])
    coef = fit(samples + probes(sizes, fast))
    project(coef, per_task, args.read_gbps, plan_per_matrix)
    print(f"\nestimate_cost of the largest 70B task: {estimate_cost(28672, 8192, 1):.3g} flops")


if __name__ == "__main__":
    main()
