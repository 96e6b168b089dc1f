"""Is the ESD tail a power law? Truncated power law and likelihood-ratio comparisons.

Above the fitted xmin the tail is compared with a truncated power law (TPL, ρ ∝ λ^(−α) e^(−Λλ)),
a lognormal and an exponential, each fitted by maximum likelihood on the same tail with the
``powerlaw`` package's distribution classes, and with the power law of ``powerlaw_fit`` (its
log-likelihood computed here from α and xmin, as the reference's ``WWFit.distribution_compare``
does). ``R_<dist>``, ``p_<dist>`` are ``powerlaw.loglikelihood_ratio(PL, dist)``: the normalised
ratio R/√(n·var) (R > 0 favours the power law) and the significance of its sign (Vuong's test; for
the nested TPL the χ²(1) test of 2·ΔlogL). ``best_fit`` is the power law unless an alternative
fits significantly better (R < 0, p < 0.05); among those, the one with the highest likelihood.

Why not the reference's code: with powerlaw 2.0 its TPL path calls ``powerlaw.Fit(...,
distribution=...)``, a keyword 2.0 removed (TypeError, so every TPL fit "fails"), and powerlaw 2.0's
power-law and TPL classes default to α ∈ [0, 3], which clamps every α > 3 to 3 and flags the fit as
noise. We build the distributions directly and widen α to [0, 50].
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np

from wwaudit.auditor.powerlaw_fit import EVALS_THRESH

SIGNIFICANCE = 0.05
ALTERNATIVES: tuple[str, ...] = ("truncated_power_law", "lognormal", "exponential")
_SHORT = {"truncated_power_law": "tpl", "lognormal": "lognormal", "exponential": "exponential"}
_CLASS_NAMES = {
    "truncated_power_law": "Truncated_Power_Law",
    "lognormal": "Lognormal",
    "exponential": "Exponential",
}
# powerlaw 2.0 defaults to alpha in [0, 3], wrong for ESD tails (α up to ~10 and beyond).
_RANGES: dict[str, dict[str, list[float | None]] | None] = {
    "truncated_power_law": {"alpha": [0.0, 50.0], "Lambda": [0.0, None]},
    "lognormal": None,
    "exponential": None,
}
MIN_TAIL = 5  # fewer tail points than this: no comparison


@functools.cache
def _distribution_class(name: str) -> type:
    """powerlaw's class for ``name`` without its KS-distance step.

    ``Distribution.fit`` ends by computing KS/Kuiper/Anderson-Darling distances, which for the TPL
    evaluates an mpmath incomplete gamma per tail point (seconds on a few thousand points). Only
    the fitted parameters and log-likelihoods are used here, so that step is skipped.
    """
    import powerlaw  # imported here: it pulls in matplotlib.pyplot (~1 s), not needed with --fast

    base = getattr(powerlaw, _CLASS_NAMES[name])
    return type(base.__name__, (base,), {"compute_distance_metrics": lambda self, data=None: None})


def power_law_loglikelihoods(tail: np.ndarray, alpha: float, xmin: float) -> np.ndarray:
    """log p(x) of the continuous power law α, xmin (no xmax): log(α−1) − log xmin − α·log(x/xmin)."""
    return np.log(alpha - 1.0) - np.log(xmin) - alpha * np.log(tail / xmin)


def compare_distributions(evals: np.ndarray, xmin: float, alpha: float) -> dict[str, Any]:
    """TPL parameters, R/p against each alternative and the best-fitting distribution of the tail."""
    from powerlaw import loglikelihood_ratio

    ev = np.asarray(evals, dtype=np.float64)
    tail = np.sort(ev[(ev > EVALS_THRESH) & (ev >= xmin)])
    out: dict[str, Any] = {"best_fit": None, "tpl_alpha": None, "tpl_lambda": None}
    for name in ALTERNATIVES:
        out[f"R_{_SHORT[name]}"] = None
        out[f"p_{_SHORT[name]}"] = None
    if tail.size < MIN_TAIL:
        return out
    ll_pl = power_law_loglikelihoods(tail, alpha, xmin)
    best, best_ll = "power_law", float(np.sum(ll_pl))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ALTERNATIVES:
            try:
                dist = _distribution_class(name)(
                    data=tail, xmin=xmin, discrete=False, parameter_ranges=_RANGES[name], verbose=0
                )
                ll = np.asarray(dist.loglikelihoods(tail), dtype=np.float64)
            except (ValueError, ZeroDivisionError, OverflowError, FloatingPointError):
                continue
            if not np.all(np.isfinite(ll)):
                continue
            R, p = loglikelihood_ratio(
                ll_pl.copy(), ll.copy(), nested=name == "truncated_power_law", normalized_ratio=True
            )
            R, p = float(R), float(p)
            if not np.isfinite(R):  # identical likelihoods: R = 0/0
                R, p = 0.0, 1.0
            out[f"R_{_SHORT[name]}"], out[f"p_{_SHORT[name]}"] = R, p
            if name == "truncated_power_law":
                out["tpl_alpha"], out["tpl_lambda"] = float(dist.alpha), float(dist.Lambda)
            total = float(np.sum(ll))
            if R < 0 and p < SIGNIFICANCE and total > best_ll:
                best, best_ll = name, total
    out["best_fit"] = best
    return out
