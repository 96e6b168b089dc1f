"""Opt-in metrics weightwatcher 0.7.7 offers beside its defaults: finger fixing, the Hill
estimator, detX / ERG and a few smaller columns (README, "Optional metrics").

Each takes the layer's (conv-scaled) ESD and returns the columns it fills; nothing here reads
the matrices except through the spectrum. Where the reference is wrong we say so in the
function's docstring and in the README, and do the right thing.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from wwaudit.errors import UsageError
from wwaudit.spectral.powerlaw_fit import EVALS_THRESH, PowerLawFit, fit_power_law

FIX_FINGERS = ("xmin_peak", "clip_xmax")
MAX_FINGERS = 10  # the reference's DEFAULT_MAX_FINGERS (its max_fingers is reset to it for any layer of ≥ 20 eigenvalues)
FINGER_THRESH = 1.0  # α must fall by more than this for a clipped fit to win (DEFAULT_FINGER_THRESH)
MIN_ALPHA = 2.0  # clipping stops once a clipped fit's α is at or below this (fit_clipped_powerlaw's min_alpha)
PEAK_BINS = 100  # histogram bins of log10 λ that locate the ESD's peak (xmin_peak)
PEAK_RANGE = (0.95, 1.5)  # xmin candidates lie in [0.95, 1.5) × the peak (the reference's intent)
HILL_XMIN_POS = 2  # alpha_hill's xmin is the eigenvalue at index n / HILL_XMIN_POS: the median


def check_fix_fingers(mode: str | None) -> None:
    """Raise UsageError (exit code 2) for a finger-fixing mode that does not exist."""
    if mode is not None and mode not in FIX_FINGERS:
        raise UsageError(f"--fix-fingers must be one of {', '.join(FIX_FINGERS)} (got '{mode}')")


def fit_with_fingers(evals: np.ndarray, mode: str) -> tuple[PowerLawFit, dict[str, Any]]:
    """The tail fit under finger fixing `mode`, and the columns num_fingers and raw_alpha.

    raw_alpha is the plain fit's α (the default audit's α); the returned fit replaces it.
    """
    raw = fit_power_law(evals)
    if mode == "clip_xmax":
        fit, fingers = clip_xmax(evals, raw)
        return fit, {"num_fingers": fingers, "raw_alpha": raw.alpha}
    return xmin_peak(evals), {"num_fingers": None, "raw_alpha": raw.alpha}


def clip_xmax(evals: np.ndarray, first: PowerLawFit) -> tuple[PowerLawFit, int]:
    """weightwatcher's fit_clipped_powerlaw: drop the top eigenvalues until α falls by > 1.

    For idx = 2 … MAX_FINGERS − 1 the idx largest eigenvalues (above 1e-5) are dropped and the
    tail refitted; the first fit whose α is more than FINGER_THRESH below the unclipped α wins
    and num_fingers = idx − 1; clipping stops without a winner once a fit's α is ≤ MIN_ALPHA.
    This reproduces the reference exactly, including that it never tries dropping one eigenvalue
    and counts idx − 1 fingers for idx dropped ones (so "1 finger" removes the top two), and that
    num_pl_spikes counts every eigenvalue ≥ xmin, the clipped ones too. Where the reference's
    fit on the clipped data fails (too few eigenvalues), clipping stops there.
    """
    if first.status != "ok" or first.alpha is None:
        return first, 0
    data = np.sort(evals[evals > EVALS_THRESH])
    for idx in range(2, MAX_FINGERS):
        if data.size - idx < 2:
            break
        fit = fit_power_law(data[:-idx])
        if fit.status != "ok" or fit.alpha is None:
            break
        if fit.alpha + FINGER_THRESH < first.alpha:
            assert fit.xmin is not None  # a fit that is ok has one
            return replace(fit, num_pl_spikes=int(np.count_nonzero(evals >= fit.xmin))), idx - 1
        if fit.alpha <= MIN_ALPHA:
            break
    return first, 0


def peak_of_esd(evals: np.ndarray) -> float | None:
    """The left edge of the fullest of PEAK_BINS bins of log10 λ (λ > 1e-5): the reference's xmin2."""
    nz = evals[evals > EVALS_THRESH]
    if nz.size == 0:
        return None
    counts, edges = np.histogram(np.log10(nz), bins=PEAK_BINS)
    return float(10.0 ** edges[int(np.argmax(counts))])


def xmin_peak(evals: np.ndarray) -> PowerLawFit:
    """Tail fit with xmin searched only near the peak of the log-ESD: in [0.95, 1.5) × peak.

    The reference means the same, but builds the range as (log10(0.95·peak), 1.5·peak), a
    logarithm for the lower end and a plain value for the upper one, and hands it to a fit that
    cannot take a range: with its default pl_package ('ww') every layer's fit fails (WWFit
    subtracts the tuple from the data), and with pl_package='powerlaw' the lower end is
    log10(0.95·peak), which lets xmin fall anywhere below the peak. We use the range it intends,
    in eigenvalue units, with the default fit's estimator and KS distance.
    """
    peak = peak_of_esd(evals)
    if peak is None:
        return fit_power_law(evals)  # fails with the reason (no eigenvalue above 1e-5)
    return fit_power_law(evals, xmin_range=(PEAK_RANGE[0] * peak, PEAK_RANGE[1] * peak))


def alpha_hill(evals: np.ndarray) -> float | None:
    """Hill estimator with xmin at the median eigenvalue (AlphaPruning / TempBalance's 'xmin_mid').

    Over the n eigenvalues above 1e-5, sorted: i = int(n / 2), k = n − i, α = 1 + k / Σ_{j≥i}
    log(λ_j / λ_i), the continuous MLE at that fixed xmin (TempBalance's net_esd_estimator with
    xmin_pos = 2). weightwatcher 0.7.7 has no such option; its fit computes the same quantity for
    every candidate (WWFit.alphas), and the parity test checks alpha_hill against that entry.
    None when fewer than 2 eigenvalues lie above 1e-5 or the upper half is flat.
    """
    data = np.sort(evals[evals > EVALS_THRESH])
    if data.size < 2:
        return None
    i = data.size // HILL_XMIN_POS
    k = data.size - i
    S = float(np.sum(np.log(data[i:])) - k * np.log(data[i]))
    return 1.0 + k / S if S > 0 else None


def detx(evals: np.ndarray, num_pl_spikes: int | None) -> dict[str, Any]:
    """detX / ERG (SETOL): the tail at which the product of the rescaled eigenvalues crosses 1.

    The ESD is rescaled to mean 1 (λ·n/Σλ, as the reference's rescale_eigenvalues). Going down
    from the largest eigenvalue, the tail grows until its product falls below 1: detX_num is that
    tail's size (the reference's count: it includes the eigenvalue that takes the product below
    1) and detX_val its smallest eigenvalue, unscaled. num_ERG_spikes = detX_num; ERG_gap =
    detX_num − num_pl_spikes (None without a tail fit; the reference subtracts its −1 there).
    Products are summed as logarithms: the reference multiplies, which overflows to inf on large
    tails. Where no tail's product falls below 1 the reference reports n eigenvalues but the
    second smallest as detX_val; we report n and the smallest. A flat ESD has no tail (0).
    """
    n = int(evals.size)
    total = float(np.sum(evals))
    if n < 2 or total <= 0 or not evals[0] < evals[-1]:
        return {"detX_num": 0 if n else None, "detX_val": float(evals[0]) if n else None, "num_ERG_spikes": 0, "ERG_gap": None}
    scaled = evals * (n / total)
    with np.errstate(divide="ignore"):
        tail_logs = np.cumsum(np.log(scaled[::-1]))  # tail_logs[k - 1]: log of the product of the top k
    # the reference scans tails of 1 … n − 1 eigenvalues; a tail of all n has product < 1 unless flat
    below = np.flatnonzero(tail_logs[: n - 1] < 0.0)
    num = int(below[0]) + 1 if below.size else n
    return {
        "detX_num": num,
        "detX_val": float(evals[n - num]),
        "num_ERG_spikes": num,
        "ERG_gap": num - num_pl_spikes if num_pl_spikes is not None else None,
    }


def sv_min(evals: np.ndarray) -> float | None:
    """Smallest singular value over all slices: √λ_min of the pooled ESD.

    The reference keeps the largest of the slices' smallest singular values (combined_eigenvalues:
    min_sv = max(min_sv, min(sv))), which is not the layer's smallest for a multi-slice conv; for
    a one-slice layer both agree.
    """
    return float(np.sqrt(evals[0])) if evals.size else None


def random_columns(evals: np.ndarray, random_evals: np.ndarray | None, max_random: float | None) -> dict[str, Any]:
    """max_rand_eval, ww_softrank and ww_maxdist from the element-shuffled copies (traps.py).

    max_rand_eval is the largest eigenvalue over all copies (5 for layers under 100 eigenvalues,
    else 1, as the reference); ww_softrank = max(one copy) / λmax and ww_maxdist = λmax −
    max(one copy), on the first copy (the reference draws one more shuffle for them). None with
    --fast (no shuffled copy) or where the shuffle does not apply (vector slices).
    """
    if random_evals is None or not random_evals.size or not evals.size or evals[-1] <= 0:
        return {"max_rand_eval": None, "ww_softrank": None, "ww_maxdist": None}
    top = float(random_evals[-1])
    lam = float(evals[-1])
    return {"max_rand_eval": max_random, "ww_softrank": top / lam, "ww_maxdist": lam - top}
