"""Bias of wwaudit's alpha on synthetic matrices whose ESD tail has a known exponent.

Each matrix is W = U·diag(√λ)·Vᵀ (N×M, random orthogonal U, V) with eigenvalues λ drawn i.i.d.:

* ``pareto``: every λ from the continuous power law p(λ) ∝ λ^(−α), λ ≥ 1;
* ``bulk+tail``: 70 % of the λ from a Marchenko-Pastur bulk rescaled into [0, 1), 30 % from the
  power law above 1 (a layer whose spectrum is MP noise plus a heavy tail, as in trained nets).

W goes through the same path as an audited layer (analyse_matrices: Gram eigenvalues, fit), so
the table measures the estimator, not a shortcut. Reported per α: mean α̂ − α (bias), RMSE,
mean tail size, and how often the 95 % interval [alpha_ci_low, alpha_ci_high] contains α.

    python benchmarks/calibration.py [--reps 20] [--M 256]
"""

from __future__ import annotations

import argparse

import numpy as np

from wwaudit.spectral.analysis import analyse_matrices
from wwaudit.options import AuditOptions

ALPHAS = (1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0)


def orthogonal(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(n, m)))
    return q * np.sign(np.diag(r))


def eigenvalues(rng: np.random.Generator, kind: str, alpha: float, M: int, N: int) -> np.ndarray:
    tail = 1.0 + rng.pareto(alpha - 1.0, M)
    if kind == "pareto":
        return tail
    n_tail = int(0.3 * M)
    G = rng.normal(size=(N, M - n_tail))
    bulk = np.linalg.svd(G, compute_uv=False) ** 2
    bulk = 0.99 * bulk / bulk.max()
    return np.concatenate([bulk, tail[:n_tail]])


def run(reps: int, M: int, seed: int) -> list[tuple]:
    rng = np.random.default_rng(seed)
    N = 2 * M
    rows = []
    options = AuditOptions(fast=True)
    for kind in ("pareto", "bulk+tail"):
        for alpha in ALPHAS:
            est, cover, tails = [], 0, []
            for _ in range(reps):
                lam = eigenvalues(rng, kind, alpha, M, N)
                W = (orthogonal(rng, N, M) * np.sqrt(lam)) @ orthogonal(rng, M, M).T
                res = analyse_matrices([W.astype(np.float32)], "dense", float(np.finfo(np.float32).eps), options)
                m = res.metrics
                if m["alpha"] is None:
                    continue
                est.append(m["alpha"])
                tails.append(m["num_pl_spikes"])
                cover += m["alpha_ci_low"] <= alpha <= m["alpha_ci_high"]
            est_a = np.array(est)
            rows.append(
                (
                    kind,
                    alpha,
                    float(est_a.mean() - alpha),
                    float(np.sqrt(np.mean((est_a - alpha) ** 2))),
                    float(np.mean(tails)),
                    cover / max(len(est), 1),
                    len(est),
                )
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--M", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"M = {args.M} eigenvalues per matrix (N = {2 * args.M}), {args.reps} matrices per row")
    print("| ESD | alpha | bias | RMSE | mean tail size | 95% CI coverage | fits |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for kind, alpha, bias, rmse, tail, cov, n in run(args.reps, args.M, args.seed):
        print(f"| {kind} | {alpha:.1f} | {bias:+.3f} | {rmse:.3f} | {tail:.0f} | {cov:.0%} | {n} |")


if __name__ == "__main__":
    main()
