"""Marchenko-Pastur (MP) fit of the bulk of an ESD: the reference's answer, fast.

weightwatcher 0.7.7 (``mp_fit`` / ``RMT_Util.fit_density_with_range``) rescales the ESD to mean 1
(W_scale = √(#evals / Σλ)), estimates its density with a linear-kernel KDE (bandwidth 0.1) on
1000 points of [0, λ_max + 0.5], drops points where that density is below 0.01, and picks σ by
``scipy.optimize.brute`` over [0.05 s, 2 s) in steps of 0.01 s (s: the σ that puts the MP edge at
λ_max), polished by Nelder-Mead (brute's default ``finish=fmin``), minimising the squared
residual between the MP density and the KDE (a flat penalty of 1000 per point where the MP edges
are impossible). For square matrices (Q = 1) it fits the quarter-circle law to √λ instead.

The reference refits the KDE with scikit-learn for every σ it tries (~250 times), which costs
seconds per layer. The KDE does not depend on σ, so we evaluate it once, exactly, from prefix
sums of the sorted eigenvalues, and hand the same objective to the same ``brute`` call. The answer
equals the reference's up to floating-point rounding of the KDE (relative 1e-12), which only
matters if a density value lands within that of the 0.01 cut: see the tolerance in README.

Outputs (``MPFit``): ``sigma_mp`` is σ of the MP law in the rescaled units (ESD mean 1), exactly as
the reference reports it; ``bulk_min``/``bulk_max`` are the MP bulk edges λ± = (σ(1 ∓ 1/√Q))² in the
ESD's own units (plot them on the ESD); ``num_spikes`` counts eigenvalues above
λ+ + √TW (TW = λ+^(2/3)·M^(−2/3)/√Q in rescaled units, the reference's Tracy-Widom margin);
``mp_softrank`` = λ+/λ_max. The MP density to draw over the ESD is ``mp_density``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import optimize

KDE_BANDWIDTH = 0.1
KDE_POINTS = 1000
KDE_THRESH = 0.01  # KDE values below this are ignored by the residual (reference)
BAD_FIT_RESIDUAL = 1000.0


@dataclass(frozen=True)
class MPFit:
    """MP fit of one ESD; see the module docstring for the meaning of each field."""

    num_spikes: int
    sigma_mp: float
    mp_softrank: float
    bulk_min: float
    bulk_max: float
    bulk_max_tw: float  # λ+ plus the Tracy-Widom margin, in the ESD's units: the spike threshold
    w_scale: float

    def metrics(self) -> dict[str, float | int]:
        return {
            "num_spikes": self.num_spikes,
            "sigma_mp": self.sigma_mp,
            "mp_softrank": self.mp_softrank,
            "bulk_min": self.bulk_min,
            "bulk_max": self.bulk_max,
        }


def linear_kde(samples: np.ndarray, x: np.ndarray, bw: float = KDE_BANDWIDTH) -> np.ndarray:
    """Density of a linear (triangular) kernel KDE at x, exactly scikit-learn's ``kernel='linear'``.

    K_h(u) = max(0, 1 − |u|/h)/h. Σ_{|x−s|<h} (1 − |x − s|/h) splits into the samples left and
    right of x, each a count and a sum found by binary search in the sorted samples' prefix sums.
    """
    s = np.sort(np.asarray(samples, dtype=np.float64))
    csum = np.concatenate([[0.0], np.cumsum(s)])
    lo = np.searchsorted(s, x - bw, side="right")
    mid = np.searchsorted(s, x, side="right")
    hi = np.searchsorted(s, x + bw, side="left")
    n_left = mid - lo
    n_right = hi - mid
    sum_left = csum[mid] - csum[lo]
    sum_right = csum[hi] - csum[mid]
    total = n_left * (1.0 - x / bw) + sum_left / bw + n_right * (1.0 + x / bw) - sum_right / bw
    return np.maximum(total, 0.0) / (s.size * bw)


def mp_density(x: np.ndarray, Q: float, sigma: float) -> np.ndarray:
    """MP density with aspect ratio Q = N/M ≥ 1 and scale σ, 0 outside its support.

    For a plot in the ESD's own units use σ² = bulk_max / (1 + 1/√Q)²; it is the reference's
    ``marchenko_pastur_fun`` (NaN outside the support mapped to 0).
    """
    x = np.asarray(x, dtype=np.float64)
    b = (sigma * (1 + np.sqrt(1 / Q))) ** 2
    a = (sigma * (1 - np.sqrt(1 / Q))) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        val = np.nan_to_num((1 / (2 * np.pi * sigma * sigma * x / Q)) * np.sqrt((b - x) * (x - a)))
    return val


def _quarter_circle(x: np.ndarray, sigma: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.nan_to_num((1 / (np.pi * sigma * sigma)) * np.sqrt(4 - x**2))


def _residual_function(to_fit: np.ndarray, Q: float):
    """The reference's ``resid_mp`` (sum of squares) with the KDE evaluated once."""
    xde = np.linspace(0, np.max(to_fit) + 0.5, KDE_POINTS)
    yde = linear_kde(to_fit, xde)
    good = yde > KDE_THRESH
    xde, yde = xde[good], yde[good]
    if xde.size == 0:
        raise ValueError("ESD density too flat for an MP fit")
    x_peak = xde[np.flatnonzero(yde == yde.max())[0]]
    x_top = xde.max()

    def residual(p: np.ndarray) -> float:
        sigma = float(np.asarray(p).ravel()[0])
        if Q == 1:
            resid = _quarter_circle(xde, sigma) - yde
        else:
            b = (sigma * (1 + np.sqrt(1 / Q))) ** 2
            a = (sigma * (1 - np.sqrt(1 / Q))) ** 2
            if b < x_peak or b > x_top or a > x_peak:
                return BAD_FIT_RESIDUAL**2 * xde.size
            resid = mp_density(xde, Q, sigma) - yde
        return float(np.sum(resid**2))

    return residual


def fit_mp(evals: np.ndarray, N: int, M: int) -> MPFit:
    """Fit the MP law to the bulk of an ESD of N×M matrices (N ≥ M), as the reference does.

    Raises ValueError when no fit is possible (empty or all-zero spectrum); the caller records
    the metrics as null then (the reference writes −1).
    """
    ev = np.asarray(evals, dtype=np.float64)
    total = float(np.sum(ev))
    if ev.size == 0 or not np.isfinite(total) or total <= 0 or M < 1:
        raise ValueError("no finite, non-zero spectrum to fit")
    Q = N / M
    w_scale = np.sqrt(ev.size) / np.sqrt(total)
    scaled = w_scale * w_scale * ev
    lam_max = float(np.max(scaled))
    s = np.sqrt(lam_max / np.square(1.0 + 1.0 / np.sqrt(Q)))  # the reference's calc_sigma
    to_fit = np.sqrt(scaled) if Q == 1 else scaled
    residual = _residual_function(to_fit, Q)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = optimize.brute(residual, (slice(0.05 * s, 2.0 * s, 0.01 * s),), full_output=True)
    sigma = float(np.asarray(result[0]).ravel()[0])
    bulk_max = (sigma * (1 + 1 / np.sqrt(Q))) ** 2
    bulk_min = (sigma * (1 - 1 / np.sqrt(Q))) ** 2
    tw = 1 / np.sqrt(Q) * np.power(bulk_max, 2 / 3) * np.power(M, -2 / 3)
    edge = bulk_max + np.sqrt(tw)
    return MPFit(
        num_spikes=int(np.count_nonzero(scaled > edge)),
        sigma_mp=sigma,
        mp_softrank=bulk_max / lam_max,
        bulk_min=bulk_min / w_scale**2,
        bulk_max=bulk_max / w_scale**2,
        bulk_max_tw=edge / w_scale**2,
        w_scale=float(w_scale),
    )
