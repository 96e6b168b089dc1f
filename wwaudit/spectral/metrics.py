"""Scale metrics of one ESD, exactly as weightwatcher 0.7.7 defines them (apply_norm_metrics).

log_norm = log10 Σλ (= 2·log10 of the Frobenius norm), log_spectral_norm = log10 λ_max,
stable_rank = Σλ / λ_max, alpha_weighted = α·log10 λ_max, log_alpha_norm = log10 Σλ^α, entropy =
the reference's matrix entropy. No ONNX here: these take eigenvalues only.

Conv layers: the reference multiplies every Conv2d weight by √(1/2) before its SVD (``conv2d_norm``,
on by default: ``apply_normalize_Wmats`` scales by √(conv2d_count/2) and conv2d_count is 1 unless
layers are analysed slice by slice), so a Conv2d ESD is λ/2. We apply the same factor,
``CONV_NORM_FACTOR``, to every conv layer (Conv1d/2d/3d, ConvTranspose): α, D, stable rank and
ranks are scale-free; log_norm, log_spectral_norm, xmin, bulk edges and λ_max carry the factor.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wwaudit.spectral.spectra import Spectrum

WEAK_RANK_TOLERANCE = 1e-6  # eigenvalues below this count as weak rank loss (reference default)
CONV_NORM_FACTOR = 0.5  # conv ESDs are scaled by this (the reference's default conv2d_norm)
ENTROPY_EPSILON = 1e-10  # the reference's EPSILON in matrix_entropy


def scale_metrics(spec: Spectrum) -> dict[str, Any]:
    """Norm-based metrics that need no fit."""
    evals = spec.evals
    total = float(np.sum(evals))
    lam_max = float(evals[-1]) if evals.size else 0.0
    out: dict[str, Any] = {
        "num_evals": int(evals.size),
        "lambda_max": lam_max,
        "sv_max": spec.sv_max,
        "log_norm": float(np.log10(total)) if total > 0 else None,
        "log_spectral_norm": float(np.log10(lam_max)) if lam_max > 0 else None,
        "stable_rank": total / lam_max if lam_max > 0 else None,
        "rank_loss": spec.rank_loss,
        "matrix_rank": int(evals.size - spec.rank_loss),
        "weak_rank_loss": int(np.count_nonzero(evals < WEAK_RANK_TOLERANCE)),
    }
    return out


def matrix_entropy(evals: np.ndarray, N: int) -> float | None:
    """The reference's ``matrix_entropy``: −Σ p log p / log(rank), p = λ/Σλ + 1e-10.

    rank counts σ > σ_max·N·eps64 over the pooled singular values (the reference computes it in
    float64 whatever the weights' dtype); it measures how evenly the spectrum spreads (1 = flat).
    """
    total = float(np.sum(evals))
    if total <= 0 or evals.size == 0:
        return None
    sv = np.sqrt(evals)
    rank = np.count_nonzero(sv > sv.max() * N * np.finfo(np.float64).eps) + ENTROPY_EPSILON
    p = evals / total + ENTROPY_EPSILON
    return float(-np.sum(p * np.log(p)) / np.log(rank))


def alpha_metrics(evals: np.ndarray, alpha: float | None) -> dict[str, float | None]:
    """alpha_weighted = α·log10 λ_max and log_alpha_norm = log10 Σλ^α; None without a fit."""
    lam_max = float(evals[-1]) if evals.size else 0.0
    if alpha is None or lam_max <= 0:
        return {"alpha_weighted": None, "log_alpha_norm": None}
    with np.errstate(over="ignore"):
        total = float(np.sum(evals**alpha))
    return {
        "alpha_weighted": alpha * float(np.log10(lam_max)),
        "log_alpha_norm": float(np.log10(total)) if 0 < total < np.inf else None,
    }
