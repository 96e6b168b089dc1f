"""Per-layer overhead of the default metrics over the eigen floor, on BERT-large-shaped layers.

Run by hand (not in CI):

    python benchmarks/layer_overhead.py                 # this tree
    PYTHONPATH=/path/to/other/tree python benchmarks/layer_overhead.py   # another version

For a 4096×1024 and a 1024×1024 float32 matrix built like make_synthetic.py's (transposed views,
as layers.py hands ONNX (in×out) weights over), it times in ONE process: the floor (float64 Gram
+ eigvalsh of each matrix and of an element-shuffled copy, the shuffling itself not timed, as in
bench_audit.py), analyse_matrices with the default metrics, and its parts (the shuffle, the layer
seed, the distribution comparison). Every figure is printed as a ratio to the floor measured in
the same run, so runs on a loaded machine stay comparable; best of --repeat; one BLAS thread, as in
the scheduler's worker tasks.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_synthetic import heavy_tailed  # noqa: E402

from wwaudit.spectral.analysis import analyse_matrices  # noqa: E402
from wwaudit.spectral.distributions import compare_distributions  # noqa: E402
from wwaudit.options import AuditOptions  # noqa: E402
from wwaudit.spectral.powerlaw_fit import fit_power_law  # noqa: E402
from wwaudit.spectral.traps import layer_rng  # noqa: E402


def best_of(repeat: int, fn: Callable[[], Any]) -> float:
    """Least wall time of `repeat` calls: the figure least disturbed by other load."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def floor_eigen(W: np.ndarray) -> np.ndarray:
    """float64 Gram of the small side + eigvalsh: the eigen work nothing can avoid."""
    A = np.asarray(W if W.shape[0] >= W.shape[1] else W.T, dtype=np.float64)
    return np.linalg.eigvalsh(A.T @ A)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    # one BLAS thread, as the scheduler runs every layer task: with more, numpy's and scipy's two
    # OpenBLAS pools spin against each other and the float32 solve of the shuffled copy gets slower
    with threadpool_limits(1):
        _measure(args.repeat)


def _measure(repeat: int) -> None:
    rng = np.random.default_rng(0)
    mats = [heavy_tailed(rng, 1024, 4096, np.float32).T, heavy_tailed(rng, 1024, 1024, np.float32).T]
    shuffled = []
    for W in mats:
        flat = np.array(W, order="K").ravel(order="K")
        rng.shuffle(flat)
        shuffled.append(flat.reshape(W.shape))
    options = AuditOptions(fast=False)
    floor = best_of(repeat, lambda: [floor_eigen(W) for W in mats + shuffled])
    full = best_of(repeat, lambda: [analyse_matrices([W], "dense", 1e-10, options) for W in mats])
    fast = best_of(repeat, lambda: [analyse_matrices([W], "dense", 1e-10, AuditOptions(fast=True)) for W in mats])

    def shuffle_only() -> None:
        for W in mats:
            flat = np.array(W, copy=True, order="K").ravel(order="K")  # as traps.shuffled_spectrum
            np.random.default_rng(1).shuffle(flat)

    evs = [floor_eigen(W) for W in mats]
    fits = [fit_power_law(ev) for ev in evs]
    parts = {
        "shuffle (copy + rng.shuffle)": best_of(repeat, shuffle_only),
        "layer seed (layer_rng)": best_of(repeat, lambda: [layer_rng([W], 0) for W in mats]),
        "distribution comparison": best_of(
            repeat,
            lambda: [compare_distributions(ev, f.xmin, f.alpha) for ev, f in zip(evs, fits) if f.status == "ok"],
        ),
    }
    print(f"floor (Gram + eigvalsh, 2 layers + shuffled copies): {floor:.3f} s")
    print(f"analyse_matrices default metrics: {full:.3f} s  = {full / floor:.2f} x floor")
    print(f"analyse_matrices --fast:          {fast:.3f} s  (its own floor is about half the above)")
    for name, seconds in parts.items():
        print(f"  {name}: {seconds:.3f} s  = {seconds / floor:.3f} x floor")


if __name__ == "__main__":
    main()
