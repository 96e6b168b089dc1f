"""Time wwaudit's power-law fit against the reference fits on the same eigenvalues; print ratios.

Compared, on ESDs of n eigenvalues (a Marchenko-Pastur bulk plus a power-law tail):
``powerlaw.Fit`` (powerlaw 2.0, the package the method was built on), weightwatcher 0.7.7's
default ``WWFit`` (a Python loop over xmin candidates), and ``wwaudit.spectral.powerlaw_fit``.
Absolute times depend on the machine; the ratios measured in one run are what to compare.

    python benchmarks/fit_speed.py [--sizes 256 1024 4096] [--repeat 5]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
import warnings

import numpy as np
import powerlaw

from wwaudit.spectral.powerlaw_fit import fit_power_law


def esd(rng: np.random.Generator, n: int) -> np.ndarray:
    bulk = np.linalg.svd(rng.normal(size=(2 * n, n - n // 5)), compute_uv=False) ** 2
    bulk /= bulk.max()
    return np.sort(np.concatenate([bulk, 1.0 + rng.pareto(2.0, n // 5)]))


def best_time(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 4096])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    from weightwatcher.WW_powerlaw import WWFit

    rng = np.random.default_rng(0)
    print(
        "| n | wwaudit | WWFit (reference) | powerlaw.Fit | WWFit / wwaudit | powerlaw.Fit / wwaudit "
        "| alpha equal to WWFit | alpha: wwaudit / powerlaw.Fit |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in args.sizes:
        x = esd(rng, n)
        t_ours, ours = best_time(lambda x=x: fit_power_law(x), args.repeat)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t_ww, ref = best_time(lambda x=x: WWFit(x[x > 1e-5]), max(1, args.repeat // 2))
            t_pl, pl = best_time(lambda x=x: powerlaw.Fit(x[x > 1e-5], verbose=False), 1)
        same = abs(ours.alpha - ref.alpha) < 1e-9
        print(
            f"| {n} | {t_ours * 1e3:.1f} ms | {t_ww * 1e3:.1f} ms | {t_pl * 1e3:.0f} ms | "
            f"{t_ww / t_ours:.1f}x | {t_pl / t_ours:.0f}x | {same} | {ours.alpha:.3f} / {pl.alpha:.3f} |"
        )


if __name__ == "__main__":
    main()
