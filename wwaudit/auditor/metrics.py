"""Scale metrics of one ESD, exactly as weightwatcher 0.7.7 defines them (apply_norm_metrics).

log_norm = log10 Σλ (= 2·log10 of the Frobenius norm), log_spectral_norm = log10 λ_max,
stable_rank = Σλ / λ_max, alpha_weighted = α·log10 λ_max, log_alpha_norm = log10 Σλ^α.
No ONNX here: these take eigenvalues only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wwaudit.auditor.spectra import Spectrum

WEAK_RANK_TOLERANCE = 1e-6  # eigenvalues below this count as weak rank loss (reference default)


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
