"""Power-law fit of an ESD tail: Clauset's continuous MLE, xmin by minimal KS distance, vectorised.

This reproduces weightwatcher 0.7.7's default fit (``WW_powerlaw.WWFit``), which is the
``powerlaw`` package's continuous fit without xmax:

* eigenvalues ≤ 1e-5 (``EVALS_THRESH``) are dropped first;
* every sorted eigenvalue except the largest is an xmin candidate (duplicates included, as the
  reference does); for the tail x ≥ xmin of size n, α = 1 + n / Σ log(x / xmin);
* D is the Kolmogorov-Smirnov distance between the fitted CDF 1 − (x/xmin)^(1−α) and the
  empirical CDF 0, 1/n, …, (n−1)/n of the tail, and the first candidate with minimal D wins;
* sigma = (α − 1)/√n, the asymptotic standard error; xmax is the largest eigenvalue (no upper
  cut-off is fitted);
* small-sample rule: with fewer than 20 eigenvalues above the threshold the reference switches to
  a bias-corrected MLE α = 1 + (n − 1)/Σ log(x/xmin) over tails of at least 8 points. It computes
  an objective D − 0.868/√n for the xmin choice, but ``WWFit.__init__`` then overrides that choice
  with argmin D; we reproduce what it reports (argmin D).

Where the reference goes wrong we do not follow it: when no meaningful fit exists (fewer than 8
eigenvalues above the threshold, or a degenerate tail whose eigenvalues are all equal) the
reference reports alpha = −1 (or 1, or inf) and then labels the layer over-trained because −1 < 2.
We return status ``fit_failed`` with alpha None instead, and nothing downstream reads it as α.

The reference loops over xmin candidates in Python (the ``powerlaw`` package refits a distribution
object per candidate and takes seconds on 4096 eigenvalues). Here α for all candidates comes from
one suffix sum; D is bounded for all candidates on coarse grids, and computed exactly, in blocked
(candidates × eigenvalues) arrays, only for those that can still be the minimum
(``min_ks_candidate``). The worst case is a spectrum that is a power law from its first
eigenvalue on, where D is nearly flat over thousands of candidates and few can be pruned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

EVALS_THRESH = 1e-5  # eigenvalues at or below this are not part of the tail fit (reference)
SMALL_N_CUTOFF = 20  # below this many eigenvalues, the reference's small-sample fit
SMALL_N_KMIN = 8  # smallest tail the small-sample fit considers; also our minimum for any fit
CI_LEVEL = 0.95

# Elements per block of the (candidates × eigenvalues) KS computation: bounds memory at ~32 MB.
_BLOCK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class PowerLawFit:
    """Result of the tail fit.

    ``xmin`` is the eigenvalue where the fitted power-law tail starts (plot it as a vertical line
    on the ESD); the tail density is ρ(λ) ∝ λ^(−alpha) for λ ≥ xmin. ``xmax`` is the largest
    eigenvalue. ``n_tail`` eigenvalues (≥ xmin, after the 1e-5 threshold) entered the MLE;
    ``num_pl_spikes`` counts all eigenvalues ≥ xmin. ``ci_low``/``ci_high``: the 95 % interval of
    alpha, exact conditional on xmin (see ``alpha_interval``). On status ``fit_failed`` every
    number is None and ``reason`` says why.
    """

    status: str  # "ok" | "fit_failed"
    alpha: float | None = None
    D: float | None = None
    xmin: float | None = None
    xmax: float | None = None
    sigma: float | None = None
    num_pl_spikes: int | None = None
    n_tail: int | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    small_sample: bool = False
    reason: str | None = None

    def metrics(self) -> dict[str, float | int | None]:
        """The per-layer metric columns this fit fills."""
        return {
            "alpha": self.alpha,
            "alpha_ci_low": self.ci_low,
            "alpha_ci_high": self.ci_high,
            "D": self.D,
            "xmin": self.xmin,
            "xmax": self.xmax,
            "sigma": self.sigma,
            "num_pl_spikes": self.num_pl_spikes,
        }


def _failed(reason: str) -> PowerLawFit:
    return PowerLawFit(status="fit_failed", reason=reason)


def candidate_alphas(data: np.ndarray, bias_corrected: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """MLE α and S = Σ_{j≥i} log(x_j/x_i) for every xmin candidate x_i (all but the largest).

    ``data`` must be sorted ascending and positive. One reversed cumulative sum replaces the
    reference's per-candidate sums.
    """
    logs = np.log(data)
    suffix = np.cumsum(logs[::-1])[::-1]
    n = np.arange(data.size, 0, -1, dtype=np.float64)
    S = suffix[:-1] - n[:-1] * logs[:-1]
    S = np.maximum(S, 0.0)  # rounding can make a zero sum slightly negative
    with np.errstate(divide="ignore", invalid="ignore"):
        alphas = 1.0 + ((n[:-1] - 1.0) if bias_corrected else n[:-1]) / S
    return alphas, S


def _ks_rows(logs: np.ndarray, alphas: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Exact KS distance of the candidate tails ``rows`` (ascending, α > 1), in row blocks.

    Candidate i's tail is x[i:]; its fitted CDF at x_j is 1 − exp((1 − α_i)(log x_j − log x_i))
    and the empirical CDF is (j − i)/n_i, as in the reference. A block spans columns from its
    first candidate on; the small triangle left of each row's own diagonal is masked to zero.
    Operations are in place: memory traffic, not arithmetic, is the cost here.
    """
    N = logs.size
    out = np.empty(rows.size, dtype=np.float64)
    step = max(1, _BLOCK_ELEMENTS // max(N, 1))
    for start in range(0, rows.size, step):
        i = rows[start : start + step]
        i0 = int(i[0])
        cols = np.arange(i0, N)
        inv_n = 1.0 / (N - i).astype(np.float64)
        block = logs[i0:][None, :] - logs[i][:, None]
        block *= (1.0 - alphas[i])[:, None]
        with np.errstate(over="ignore"):  # overflow only left of the diagonal, masked below
            np.exp(block, out=block)
        emp = (cols[None, :] - i[:, None]) * inv_n[:, None]
        block += emp
        np.subtract(1.0, block, out=block)
        np.abs(block, out=block)
        width = int(i[-1]) - i0
        if width:
            left = block[:, :width]
            left[emp[:, :width] < 0] = 0.0
        out[start : start + step] = block.max(axis=1)
    return out


def _ks_bounds(logs: np.ndarray, alphas: np.ndarray, rows: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of the KS distance of candidates ``rows`` from a coarse column grid.

    Both CDFs are non-decreasing along the tail, so between two grid points a < b the gap
    F_fit − F_emp lies in [F_fit(a) − F_emp(b), F_fit(b) − F_emp(a)]: the grid gives an upper
    bound, its own points a lower bound. Columns before a candidate's xmin carry the t = 0 values
    (both CDFs 0), so the first segment of every row starts at its own xmin. Rows are taken in
    blocks of at most _BLOCK_ELEMENTS / 2 (rows × grid) elements: a 10⁶-eigenvalue spectrum
    would otherwise ask for a 10⁶ × 15,625 matrix (116 GiB) at once.
    """
    N = logs.size
    first = int(rows.min()) // stride * stride
    grid = np.unique(np.concatenate([np.arange(first, N, stride), [N - 1]]))
    lower = np.empty(rows.size, dtype=np.float64)
    upper = np.empty(rows.size, dtype=np.float64)
    step = max(1, (_BLOCK_ELEMENTS // 2) // grid.size)
    for start in range(0, rows.size, step):
        block = rows[start : start + step]
        lower[start : start + step], upper[start : start + step] = _ks_bounds_block(logs, alphas, block, grid)
    return lower, np.maximum(upper, lower)


def _ks_bounds_block(logs: np.ndarray, alphas: np.ndarray, rows: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """_ks_bounds for one block of candidate rows (lower bound, raw upper bound)."""
    N = logs.size
    i = rows[:, None]
    t = grid[None, :] - i
    n = (N - rows).astype(np.float64)[:, None]
    with np.errstate(over="ignore"):  # overflow only before a row's xmin, masked below
        F = 1.0 - np.exp((1.0 - alphas[rows])[:, None] * (logs[grid][None, :] - logs[rows][:, None]))
    E = t / n
    before = t <= 0
    F[before] = 0.0
    E[before] = 0.0
    lower = np.abs(F - E).max(axis=1)
    upper = np.maximum(F[:, 1:] - E[:, :-1], E[:, 1:] - F[:, :-1]).max(axis=1) if grid.size > 1 else lower
    return lower, upper


def fit_working_bytes(evals: int) -> int:
    """Peak bytes of fit_power_law on `evals` eigenvalues, for --max-memory's estimate.

    Per-candidate vectors (sorted data, logs, alphas, sums, bounds: about 16 float64 arrays of
    `evals`) plus the KS blocks (at most _BLOCK_ELEMENTS elements, about 4 arrays of it alive).
    """
    return 16 * 8 * evals + 4 * 8 * min(evals * evals, _BLOCK_ELEMENTS)


def min_ks_candidate(data: np.ndarray, alphas: np.ndarray) -> tuple[int, float]:
    """Index and KS distance of the first candidate with minimal D, without computing every D.

    The reference computes D for every candidate (O(N²) work). Here coarse grids bound each
    candidate's D from both sides; candidates whose lower bound exceeds the best upper bound
    cannot be the minimum and are dropped, and only the survivors get the exact D. The result is
    the same candidate the full scan picks (ties included: survivors keep their order).
    Candidates with α ≤ 1 (or undefined) get D = 1, as in the reference.
    """
    logs = np.log(data)
    rows = np.flatnonzero(np.isfinite(alphas) & (alphas > 1.0))
    if rows.size == 0:
        return 0, 1.0
    # Coarse strides first: on 10⁵-10⁶ eigenvalues they drop most candidates for little work.
    for stride in (16384, 4096, 1024, 256, 64, 16, 4):
        # Bounds only pay off on tails much longer than the grid step; shorter tails stay
        # candidates and get the exact D, which costs little for them.
        long_tail = (data.size - rows) > 8 * stride
        if np.count_nonzero(long_tail) < 2:
            continue
        lower, upper = _ks_bounds(logs, alphas, rows[long_tail], stride)
        keep = np.ones(rows.size, dtype=bool)
        keep[long_tail] = lower <= upper.min()
        rows = rows[keep]
    Ds = _ks_rows(logs, alphas, rows)
    best = int(np.argmin(Ds))
    if Ds[best] >= 1.0 and rows[best] > 0:  # every tail fits as badly as possible: reference picks 0
        return 0, 1.0
    return int(rows[best]), float(Ds[best])


def ks_distances(data: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """KS distance of every candidate tail (1.0 where α ≤ 1 or undefined), as the reference's Ds."""
    logs = np.log(data)
    Ds = np.ones(alphas.size, dtype=np.float64)
    rows = np.flatnonzero(np.isfinite(alphas) & (alphas > 1.0))
    if rows.size:
        Ds[rows] = _ks_rows(logs, alphas, rows)
    return Ds


def alpha_interval(S: float, n: int, level: float = CI_LEVEL) -> tuple[float, float]:
    """Confidence interval for α given the tail's log-sum S = Σ log(x/xmin) over n points.

    For a continuous power law above a known xmin, (α − 1)·S follows a Gamma(n, 1) distribution,
    so [1 + g_lo/S, 1 + g_hi/S] with the Gamma quantiles is an exact interval, asymmetric and
    valid for small n where the asymptotic α ± 1.96·sigma is not. It is conditional on xmin: the
    uncertainty of the xmin choice is not included (README, "Spectral metrics"). The pivot does not
    depend on the point estimator, so the small-sample (n − 1) fit gets the same interval.
    """
    tail = (1.0 - level) / 2.0
    # gammaincinv(n, q) is what stats.gamma.ppf(q, n) evaluates (same values); calling it directly
    # keeps scipy.stats (about half a second of import) out of every run's start-up.
    g_lo, g_hi = special.gammaincinv(n, [tail, 1.0 - tail])
    return 1.0 + float(g_lo) / S, 1.0 + float(g_hi) / S


def _range_candidate(data: np.ndarray, alphas: np.ndarray, xmin_range: tuple[float, float]) -> tuple[int, float] | None:
    """The first candidate with minimal D among those with lo ≤ xmin < hi (None when there is none)."""
    lo, hi = xmin_range
    cand = data[:-1]
    rows = np.flatnonzero((cand >= lo) & (cand < hi) & np.isfinite(alphas) & (alphas > 1.0))
    if rows.size == 0:
        return None
    Ds = _ks_rows(np.log(data), alphas, rows)
    best = int(np.argmin(Ds))
    return int(rows[best]), float(Ds[best])


def fit_power_law(evals: np.ndarray, xmin_range: tuple[float, float] | None = None) -> PowerLawFit:
    """Fit the ESD tail as the reference does by default; see the module docstring.

    `xmin_range` (lo, hi) restricts the xmin candidates to lo ≤ xmin < hi (finger fixing by the
    ESD's peak, spectral/fingers.py); None: every eigenvalue is a candidate.
    """
    ev = np.asarray(evals, dtype=np.float64)
    if not np.all(np.isfinite(ev)):
        return _failed("eigenvalues overflow float64")
    data = np.sort(ev[ev > EVALS_THRESH])
    if data.size < SMALL_N_KMIN:
        return _failed(f"{data.size} eigenvalues above {EVALS_THRESH:g}: too few for a tail fit")
    small = data.size < SMALL_N_CUTOFF
    alphas, S = candidate_alphas(data, bias_corrected=small)
    n_all = np.arange(data.size, 1, -1)  # tail size of each candidate
    if small:
        # The reference computes J = D − 0.868/√n for this case, but WWFit.__init__ then
        # overrides the choice with argmin D; we follow what it actually reports.
        ok = (n_all >= SMALL_N_KMIN) & (S > 1e-12) & (alphas > 1.0)
        if xmin_range is not None:
            ok &= (data[:-1] >= xmin_range[0]) & (data[:-1] < xmin_range[1])
        alphas = np.where(ok, alphas, 0.0)
        Ds = ks_distances(data, np.where(ok, alphas, np.nan))
        best = int(np.argmin(Ds))
        if not ok[best]:
            return _failed("no tail of at least 8 distinct eigenvalues fits a power law")
        D = float(Ds[best])
    elif xmin_range is not None:
        found = _range_candidate(data, alphas, xmin_range)
        if found is None:
            return _failed(f"no xmin candidate in [{xmin_range[0]:.4g}, {xmin_range[1]:.4g})")
        best, D = found
    else:
        best, D = min_ks_candidate(data, alphas)
    alpha = float(alphas[best])
    n_tail = int(n_all[best])
    if not np.isfinite(alpha) or alpha <= 1.0 or S[best] <= 0.0:
        return _failed("degenerate tail: all eigenvalues above xmin are equal")
    xmin = float(data[best])
    lo, hi = alpha_interval(float(S[best]), n_tail)
    return PowerLawFit(
        status="ok",
        alpha=alpha,
        D=D,
        xmin=xmin,
        xmax=float(data[-1]),
        sigma=(alpha - 1.0) / np.sqrt(n_tail),
        num_pl_spikes=int(np.count_nonzero(ev >= xmin)),
        n_tail=n_tail,
        ci_low=lo,
        ci_high=hi,
        small_sample=small,
    )
