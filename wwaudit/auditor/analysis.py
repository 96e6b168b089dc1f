"""Analyse one layer's matrices: spectrum, then metrics. No ONNX here; matrices in, numbers out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wwaudit.auditor.metrics import scale_metrics
from wwaudit.auditor.options import AuditOptions
from wwaudit.auditor.spectra import Spectrum, layer_spectrum


@dataclass
class LayerAnalysis:
    """What the analysis of one layer produced; status 'error' carries the reason."""

    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    notes: list[str] = field(default_factory=list)
    spectrum: Spectrum | None = None


def analyse_matrices(mats: list[np.ndarray], kind: str, eps: float, options: AuditOptions) -> LayerAnalysis:
    """Eigenvalues of the pooled slices and the metrics computed from them.

    `kind` is the layer kind (dense, conv, embedding, recurrent, attention): conv layers follow the
    reference's conv normalisation.
    """
    for W in mats:
        if not np.all(np.isfinite(W)):
            bad = int(np.count_nonzero(~np.isfinite(W)))
            return LayerAnalysis("error", reason=f"weights contain {bad} NaN/Inf values")
    if all(not np.any(W) for W in mats):
        return LayerAnalysis("error", reason="all weights are zero (dead layer)")
    spectrum = layer_spectrum(mats, eps)
    metrics = scale_metrics(spectrum)
    return LayerAnalysis("ok", metrics=metrics, spectrum=spectrum)
