"""wwaudit against its floor and against weightwatcher, in ONE run, with peak memory.

Run by hand on an otherwise idle machine (not in CI):

    python benchmarks/bench_audit.py --small      # smoke run on tiny shapes (seconds)
    python benchmarks/bench_audit.py              # BERT-large shape + 1B fp16 decoder memory check

Models come from make_synthetic.py (generated on first use under benchmarks/.data/). Every
measurement runs in its own child process, so timings include what a user pays and the peak
memory is that child's own (PSS summed over its process tree, workers included, so pages
shared by forked workers count once; and the largest single process's peak RSS):

(a) wwaudit end to end (`python -m wwaudit MODEL --json … --quiet`), --fast and default metrics,
    each also with a PDF report (the report's own time, from the end of the analysis to the end of
    the command, as a share of that run's analysis; the report has its defaults: --plots findings,
    --max-plots 24), and --fast --precision
    float32 (time and the largest |Δα| against float64);
(b) the floor: float64 Gram + eigvalsh of the same matrices and nothing else, once per matrix
    (for --fast) and for each matrix plus an element-shuffled copy (for the default metrics; the
    shuffling itself is not timed). Two floors: one process with all BLAS threads, and the same
    matrices split largest-first over --workers processes with one BLAS thread each (the makespan
    of pure eigen work); ratios are taken against the faster of the two;
(c) weightwatcher 0.7.7's analyze() on an equivalent torch model (nn.Linear / nn.Embedding holding
    the same weights), with its defaults and with mp_fit=True, randomize=True (analyze() alone is
    timed; building the torch model is not);
(d) processes versus threads for the layer workers (library API, same options), to check the
    scheduler's choice of worker processes on this machine;
(e) memory: wwaudit --fast on the 1B-parameter fp16 decoder and on the same decoder with twice
    the layers: peak memory against 3 x the largest stored tensor + 400 MB, and their ratio (< 10%).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import make_synthetic  # noqa: E402  (a sibling script, not a package)


# ------------------------------------------------------------------------------------------------
# Child processes: wall time and peak memory of the whole process tree
# ------------------------------------------------------------------------------------------------
def _proc_kb(pid: int, name: str, key: str) -> int:
    """A kB figure from /proc/PID/NAME (the line starting with KEY); 0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/{name}") as fh:
            for line in fh:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    """Proportional set size: pages shared with forked workers counted once over the tree."""
    return _proc_kb(pid, "smaps_rollup", "Pss:")


def _hwm_kb(pid: int) -> int:
    """Peak RSS of one process since its exec (VmHWM). wait4's ru_maxrss is not that: Linux records
    the RSS of the image the child replaced at exec, i.e. the *caller's* RSS when it forked or
    vforked (llm_int4.py's driver had just generated the model: every audit read 1,050 MB)."""
    return _proc_kb(pid, "status", "VmHWM:")


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except OSError:
            continue
    return out


def run_child(cmd: list[str], every: float = 0.5) -> dict:
    """Run `cmd`; wall seconds, peak memory of its process tree (PSS summed over the tree, sampled
    every `every` seconds), the largest single-process peak RSS (VmHWM of each process in the
    tree, sampled likewise), and the last line of stdout parsed as JSON if any.

    Reading smaps_rollup walks the page tables of every process in the tree: at 20 ms intervals
    that took ~15% of a core and slowed a 24 s wwaudit run to 27 s (measured), so timing runs
    sample every 0.5 s and only the memory checks (e) sample every 20 ms."""
    out = tempfile.TemporaryFile(mode="w+")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, text=True)
    peak, hwm = [0], [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            tree = _tree(proc.pid)
            peak[0] = max(peak[0], sum(_pss_kb(p) for p in tree))
            hwm[0] = max([hwm[0]] + [_hwm_kb(p) for p in tree])
            stop.wait(every)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, _usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    stop.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read()
    out.seek(0)
    lines = out.read().strip().splitlines()
    if proc.returncode not in (0, 1):
        sys.exit(f"bench: {' '.join(cmd)} failed ({proc.returncode}): {err.strip()[-2000:]}")
    payload = {}
    if lines and lines[-1].startswith("{"):
        payload = json.loads(lines[-1])
    return {"wall": wall, "tree_peak_mb": peak[0] / 1024, "proc_peak_mb": hwm[0] / 1024, **payload}


def _self(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child", *args]


# ------------------------------------------------------------------------------------------------
# Child: the floor
# ------------------------------------------------------------------------------------------------
def _matrices(folder: Path) -> list[dict]:
    """The analysable weights of a synthetic model (both sides ≥ 8), from its manifest."""
    manifest = json.loads((folder / "manifest.json").read_text())
    return [w for w in manifest["weights"] if min(w["shape"]) >= 8]


def _load(folder: Path, w: dict) -> np.ndarray:
    return np.memmap(folder / "model.onnx.data", dtype=w["dtype"], mode="r", offset=w["offset"], shape=tuple(w["shape"]))


def _eig_seconds(W: np.ndarray) -> float:
    """float64 Gram (row chunks of 4M elements, as a tall table must be) + eigvalsh, timed."""
    t0 = time.perf_counter()
    A = W if W.shape[0] >= W.shape[1] else W.T
    G = np.zeros((A.shape[1], A.shape[1]))
    step = max(1, (1 << 22) // A.shape[1])
    for s in range(0, A.shape[0], step):
        b = np.asarray(A[s : s + step], dtype=np.float64)
        G += b.T @ b
    np.linalg.eigvalsh(G)
    return time.perf_counter() - t0


def _floor_work(folder: Path, items: list[dict], shuffled: bool) -> float:
    rng = np.random.default_rng(0)
    total = 0.0
    for w in items:
        W = _load(folder, w)
        total += _eig_seconds(W)
        if shuffled:
            S = rng.permutation(np.asarray(W).ravel()).reshape(W.shape)  # not timed
            total += _eig_seconds(S)
    return total


def _floor_worker(args: tuple[str, list[dict], bool]) -> float:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return _floor_work(Path(args[0]), args[1], args[2])


def child_floor(folder: Path, shuffled: bool, workers: int) -> dict:
    """Serial floor (all BLAS threads) and the parallel makespan (largest-first split)."""
    import multiprocessing

    items = _matrices(folder)
    serial = _floor_work(folder, items, shuffled)
    bins: list[list[dict]] = [[] for _ in range(workers)]
    loads = [0.0] * workers
    for w in sorted(items, key=lambda w: -w["shape"][0] * w["shape"][1] * min(w["shape"])):
        i = loads.index(min(loads))
        bins[i].append(w)
        loads[i] += w["shape"][0] * w["shape"][1] * min(w["shape"])
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        per_worker = pool.map(_floor_worker, [(str(folder), b, shuffled) for b in bins])
    return {"serial_s": serial, "parallel_s": max(per_worker), "matrices": len(items)}


# ------------------------------------------------------------------------------------------------
# Child: weightwatcher on the equivalent torch model
# ------------------------------------------------------------------------------------------------
def child_weightwatcher(folder: Path, full: bool) -> dict:
    import logging

    import torch
    import weightwatcher as ww

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    model = torch.nn.Module()
    for i, w in enumerate(json.loads((folder / "manifest.json").read_text())["weights"]):
        W = torch.from_numpy(np.array(_load(folder, w), dtype=np.float32))
        if w["role"] == "embedding":
            mod = torch.nn.Embedding(*w["shape"], _weight=W)
        else:  # MatMul [in, out] is nn.Linear(in, out) with weight [out, in]
            mod = torch.nn.Linear(*w["shape"], bias=False)
            mod.weight = torch.nn.Parameter(W.T.contiguous())
        model.add_module(f"w{i}", mod)
    kwargs = {"mp_fit": True, "randomize": True} if full else {}
    t0 = time.perf_counter()
    details = ww.WeightWatcher(model=model).analyze(**kwargs)
    return {"analyze_s": time.perf_counter() - t0, "layers": int(len(details))}


# ------------------------------------------------------------------------------------------------
# Child: processes versus threads through the library API
# ------------------------------------------------------------------------------------------------
def child_executor(model: Path, kind: str, workers: int, fast: bool) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    from wwaudit.engine.core import audit
    from wwaudit.options import AuditOptions

    t0 = time.perf_counter()
    if kind == "threads":
        with ThreadPoolExecutor(workers) as pool:
            audit(str(model), AuditOptions(fast=fast), executor=pool)
    else:
        audit(str(model), AuditOptions(fast=fast, workers=workers))
    return {"audit_s": time.perf_counter() - t0}


# ------------------------------------------------------------------------------------------------
# Parent
# ------------------------------------------------------------------------------------------------
# Timing runs are repeated this many times (--repeat) and the fastest kept: on a shared 2-core
# machine the same run varies by ±5-10% (measured 21.1-23.0 s for one wwaudit command), and the
# noise only ever adds time. Peak memory is the largest over the repeats.
REPEAT = 1


def best_of(run: Callable[[], dict]) -> dict:
    """The fastest of REPEAT runs, with the highest peak memory seen and every wall time."""
    runs = [run() for _ in range(REPEAT)]
    best = dict(min(runs, key=lambda r: r["wall"]))
    for key in ("tree_peak_mb", "proc_peak_mb"):
        best[key] = max(r[key] for r in runs)
    for key in ("serial_s", "parallel_s"):
        if key in best:
            best[key] = min(r[key] for r in runs)
    best["walls"] = [r["wall"] for r in runs]
    return best


def wwaudit_run(model: Path, out: Path, workers: int, *flags: str, every: float = 0.5) -> dict:
    """wwaudit end to end in a child process. With a report among `flags` the child runs the same
    command line through `child_report`, which also times the report itself."""
    args = [str(model), "--json", str(out), "--quiet", "--workers", str(workers), *flags]
    cmd = _self("report", json.dumps(args)) if "--report" in flags else [sys.executable, "-m", "wwaudit", *args]
    return best_of(lambda: run_child(cmd, every))


def child_report(args: list[str]) -> dict:
    """`wwaudit ARGS` in this process (as `python -m wwaudit` runs it), timing the report phase:
    from the end of the analysis to the end of the command (waiting for the background imports,
    building the document, drawing the plots, printing and writing the PDF). The wall-time
    difference between runs with and without a report is too noisy for this (±5–10% of the
    analysis from run to run)."""
    import wwaudit.engine.core as core
    from wwaudit.cli.main import main as cli_main

    analysed: list[float] = []
    real_audit = core.audit

    def timed_audit(*a: object, **k: object) -> object:
        result = real_audit(*a, **k)
        analysed.append(time.perf_counter())
        return result

    core.audit = timed_audit  # the CLI imports it from the module when it runs
    code = cli_main(args)
    return {"report_s": time.perf_counter() - analysed[-1], "exit_code": code}


def _alphas(path: Path) -> dict[str, float]:
    return {l["name"]: l["alpha"] for l in json.loads(path.read_text())["layers"] if l.get("alpha") is not None}


def _line(label: str, r: dict, extra: str = "") -> None:
    print(
        f"  {label:<44} {r['wall']:8.2f} s   peak {r['tree_peak_mb']:6.0f} MB (tree PSS), "
        f"{r['proc_peak_mb']:6.0f} MB (largest process RSS) {extra}",
        flush=True,
    )


def _report_share(report: dict, plain: dict, what: str) -> str:
    """The report's own time against the analysis of the same run (its wall less the report), and
    the wall-time difference to the run without a report, which is noisier."""
    own = report["report_s"]
    return (
        f"report {own:.2f} s = {100 * own / (report['wall'] - own):.0f}% of the same run's {what}; "
        f"wall difference to the run without it {report['wall'] - plain['wall']:+.2f} s"
    )


def bench_bert(small: bool, workers: int, skip_ww: bool, executors: bool, tmp: Path) -> None:
    model = make_synthetic.ensure("bert-large", small)
    folder = model.parent
    print(f"\nBERT-large shape ({'small' if small else 'full'}): {model}", flush=True)
    imports = run_child([sys.executable, "-c", "import wwaudit.cli.main, wwaudit.engine.core, wwaudit.formats"])
    print(f"  python start-up + wwaudit imports            {imports['wall']:8.2f} s (included in every wwaudit figure)")
    fast = wwaudit_run(model, tmp / "fast.json", workers, "--fast")
    _line("(a) wwaudit --fast", fast)
    full = wwaudit_run(model, tmp / "default.json", workers)
    _line("(a) wwaudit (default metrics)", full)
    report = wwaudit_run(model, tmp / "fullr.json", workers, "--report", str(tmp / "report.pdf"))
    _line("(a) wwaudit --report report.pdf", report, _report_share(report, full, "analysis (target <= 20%)"))
    report_fast = wwaudit_run(model, tmp / "fastr.json", workers, "--fast", "--report", str(tmp / "report-fast.pdf"))
    _line("(a) wwaudit --fast --report report.pdf", report_fast, _report_share(report_fast, fast, "--fast analysis"))
    f32 = wwaudit_run(model, tmp / "fast32.json", workers, "--fast", "--precision", "float32")
    a64, a32 = _alphas(tmp / "fast.json"), _alphas(tmp / "fast32.json")
    dalpha = max((abs(a64[k] - a32[k]) for k in a64 if k in a32), default=float("nan"))
    _line("(a) wwaudit --fast --precision float32", f32, f"max |Δα| {dalpha:.2e}")
    floor = best_of(lambda: run_child(_self("floor", str(folder), "fast", str(workers))))
    floor2 = best_of(lambda: run_child(_self("floor", str(folder), "shuffled", str(workers))))
    print(
        f"  (b) floor, {floor['matrices']} matrices x1: serial {floor['serial_s']:.2f} s, "
        f"{workers} processes {floor['parallel_s']:.2f} s"
    )
    print(
        f"  (b) floor, each matrix + shuffled copy: serial {floor2['serial_s']:.2f} s, "
        f"{workers} processes {floor2['parallel_s']:.2f} s"
    )
    best1 = min(floor["serial_s"], floor["parallel_s"])
    best2 = min(floor2["serial_s"], floor2["parallel_s"])
    print(f"  ratio wwaudit --fast / floor              {fast['wall'] / best1:6.2f}   (target <= 1.25)")
    print(f"  ratio wwaudit default / floor(+shuffled)  {full['wall'] / best2:6.2f}   (target <= 1.25)")
    print(f"  ratio float32 / float64 (--fast)          {f32['wall'] / fast['wall']:6.2f}")
    if not skip_ww:
        ww1 = run_child(_self("ww", str(folder), "defaults"))
        _line("(c) weightwatcher analyze() [child wall]", ww1, f"analyze() {ww1['analyze_s']:.2f} s, {ww1['layers']} layers")
        ww2 = run_child(_self("ww", str(folder), "full"))
        _line("(c) weightwatcher analyze(mp_fit, randomize)", ww2, f"analyze() {ww2['analyze_s']:.2f} s")
        print(f"  speed-up vs weightwatcher defaults        {ww1['analyze_s'] / fast['wall']:6.2f}x  (target >= 3)")
        print(f"  speed-up vs weightwatcher mp_fit+randomize {ww2['analyze_s'] / full['wall']:5.2f}x  (target >= 4)")
    if executors:
        for fast_flag in (True, False):
            label = "--fast" if fast_flag else "default"
            metrics = "fast" if fast_flag else "default"
            res = {k: run_child(_self("executor", str(model), k, str(workers), metrics)) for k in ("processes", "threads")}
            print(
                f"  (d) {label:<8} {workers} worker processes {res['processes']['audit_s']:.2f} s, "
                f"{workers} threads {res['threads']['audit_s']:.2f} s"
            )


def bench_memory(small: bool, workers: int, tmp: Path) -> None:
    print(f"\nMemory, 1B-parameter fp16 decoder shape ({'small' if small else 'full'}), wwaudit --fast:", flush=True)
    runs = {}
    for name in ("decoder-1b", "decoder-1b-x2"):
        model = make_synthetic.ensure(name, small)
        manifest = json.loads((model.parent / "manifest.json").read_text())
        largest = max(w["length"] for w in manifest["weights"]) / 2**20
        runs[name] = r = wwaudit_run(model, tmp / f"{name}.json", workers, "--fast", every=0.02)
        budget = 3 * largest + 400
        _line(
            f"(e) {name} ({manifest['layers']} layers)",
            r,
            f"budget 3x{largest:.0f}+400 = {budget:.0f} MB: {'ok' if r['tree_peak_mb'] <= budget else 'OVER'}",
        )
    a, b = runs["decoder-1b"]["tree_peak_mb"], runs["decoder-1b-x2"]["tree_peak_mb"]
    print(f"  peak memory change when doubling the layers{100 * (b - a) / a:+6.1f}%  (target < 10%)")


def main() -> None:
    parser = argparse.ArgumentParser(description="wwaudit vs floor vs weightwatcher (see module docstring)")
    parser.add_argument("--small", action="store_true", help="tiny shapes: checks that the benchmark runs")
    parser.add_argument("--workers", type=int, default=None, help="wwaudit --workers (default: usable cores)")
    parser.add_argument("--skip-ww", action="store_true", help="leave weightwatcher out")
    parser.add_argument("--skip-memory", action="store_true", help="leave the decoder memory check out")
    parser.add_argument("--skip-bert", action="store_true", help="leave the BERT-large timings out")
    parser.add_argument("--executors", action="store_true", help="also time worker processes vs threads")
    parser.add_argument("--repeat", type=int, default=1, help="repeat each wwaudit and floor timing, keep the fastest")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, rest = args.child[0], args.child[1:]
        if kind == "floor":
            result = child_floor(Path(rest[0]), rest[1] == "shuffled", int(rest[2]))
        elif kind == "report":
            result = child_report(json.loads(rest[0]))
        elif kind == "ww":
            result = child_weightwatcher(Path(rest[0]), rest[1] == "full")
        else:
            result = child_executor(Path(rest[0]), rest[1], int(rest[2]), rest[3] == "fast")
        print(json.dumps(result))
        return
    from wwaudit.engine.scheduler import default_workers

    global REPEAT
    REPEAT = max(1, args.repeat)
    workers = args.workers or default_workers()
    load = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} CPUs ({default_workers()} usable), load average {load[0]:.1f}; "
        f"wwaudit --workers {workers}; python {sys.version.split()[0]}, numpy {np.__version__}; "
        f"timings: fastest of {REPEAT}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_bert:
            bench_bert(args.small, workers, args.skip_ww, args.executors, Path(tmp))
        if not args.skip_memory:
            bench_memory(args.small, workers, Path(tmp))


if __name__ == "__main__":
    main()
