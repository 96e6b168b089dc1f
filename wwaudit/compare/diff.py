"""Differences between two versions of one layer: numbers from matrices and metrics, no ONNX here.

Given the (out x in) slices of a base layer and of its candidate counterpart (same shapes), this
module measures how far the candidate moved and in which way:

- relative_distance = ‖W₂ − W₁‖_F / ‖W₁‖_F over all slices of the layer (W₁ base, W₂ candidate);
- subspace_overlap: how much of the base's top-k singular subspace the candidate kept, the mean
  squared cosine of the principal angles between the two top-k subspaces, ‖V₁ᵀV₂‖²_F / k, averaged
  over slices. The subspaces are taken on each slice's smaller side (the input side of a tall
  matrix), from the eigenvectors of the small-side Gram matrix the audit itself uses. k is
  min(10, max(1, d // 4)) for a smaller dimension d: a quarter of the space at most, so the
  score of two unrelated subspaces (k / d in expectation, reported as `subspace_overlap_random`)
  stays far from 1 and a collapse is visible;
- top_sv_rel_change: the largest relative change |σ₂ᵢ − σ₁ᵢ| / σ₁ᵢ among the top 5 pooled
  singular values (what quantization does to the directions that carry most of the signal);
- the spectrum of W₂ − W₁ (what a fine-tune added): analysed with the project's own layer
  analysis, so its rank, stable rank and, once a power law is fitted, its alpha;
- metric deltas (candidate − base) for the keys of layer_metrics.METRICS marked delta=True (DELTA_KEYS).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wwaudit.layer_metrics import DELTA_METRICS
from wwaudit.spectral.analysis import analyse_matrices
from wwaudit.options import AuditOptions
from wwaudit.spectral.spectra import gram

DELTA_KEYS: tuple[str, ...] = DELTA_METRICS  # layer_metrics: the metrics marked delta=True
SUBSPACE_K_MAX = 10
TOP_SV = 5
# The difference spectrum is a diagnostic, not an audited layer: the reference metric set suffices
# (correlation traps on a difference matrix would only cost time).
_DIFF_OPTIONS = AuditOptions(fast=True)


def subspace_k(d: int) -> int:
    """Dimension of the compared top singular subspaces for a slice whose smaller side is d."""
    return min(SUBSPACE_K_MAX, max(1, d // 4))


@dataclass
class PairDiff:
    """Matrix-level differences of one matched layer pair."""

    relative_distance: float | None
    subspace_overlap: float | None
    subspace_k: int
    subspace_overlap_random: float
    top_sv_rel_change: float | None
    diff: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"  # "ok" | "error"
    reason: str | None = None


def _top_vectors(W: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top max(k, TOP_SV) eigenvalues (σ², ascending) of the small-side Gram matrix and its
    top-k eigenvectors. Only that subset is computed (LAPACK's syevx): a full eigendecomposition
    with vectors costs 10-15 times the eigenvalues-only solve the audit itself runs."""
    from scipy.linalg import eigh

    G = gram(W)
    d = G.shape[0]
    count = min(d, max(k, TOP_SV))
    evals, vecs = eigh(G, subset_by_index=[d - count, d - 1], driver="evx")
    return np.clip(evals, 0.0, None), vecs[:, ::-1][:, :k]


def metric_deltas(base: dict[str, Any], candidate: dict[str, Any]) -> dict[str, float | None]:
    """candidate − base for DELTA_KEYS; None where either side lacks the metric."""
    out: dict[str, float | None] = {}
    for key in DELTA_KEYS:
        a, b = base.get(key), candidate.get(key)
        ok = all(isinstance(v, (int, float, np.floating, np.integer)) and np.isfinite(v) for v in (a, b))
        out[key] = float(b) - float(a) if ok else None
    return out


def pair_diff(base: list[np.ndarray], candidate: list[np.ndarray], kind: str, eps: float) -> PairDiff:
    """Differences between the slices of a base layer and of its candidate (same count and shapes)."""
    shapes_a = [m.shape for m in base]
    shapes_b = [m.shape for m in candidate]
    d = min(min(s) for s in shapes_a) if shapes_a else 0
    k = subspace_k(d)
    random_overlap = k / d if d else 0.0
    if shapes_a != shapes_b:
        return PairDiff(
            None,
            None,
            k,
            random_overlap,
            None,
            status="error",
            reason=f"slice shapes differ: {shapes_a[:1]} vs {shapes_b[:1]} ({len(shapes_a)} vs {len(shapes_b)} slices)",
        )
    for mats in (base, candidate):
        if not all(np.all(np.isfinite(m)) for m in mats):
            return PairDiff(None, None, k, random_overlap, None, status="error", reason="weights contain NaN/Inf values")
    base_sq = diff_sq = 0.0
    overlaps: list[float] = []
    evals_a: list[np.ndarray] = []
    evals_b: list[np.ndarray] = []
    diffs: list[np.ndarray] = []
    for A, B in zip(base, candidate):
        D = np.asarray(B, dtype=np.float64) - np.asarray(A, dtype=np.float64)
        base_sq += float(np.sum(np.square(A, dtype=np.float64)))
        diff_sq += float(np.sum(D * D))
        diffs.append(D)
        ea, va = _top_vectors(A, k)
        eb, vb = _top_vectors(B, k)
        evals_a.append(ea)
        evals_b.append(eb)
        if ea[-1] > 0 and eb[-1] > 0:
            overlaps.append(float(np.sum((va.T @ vb) ** 2)) / k)
    relative = float(np.sqrt(diff_sq / base_sq)) if base_sq > 0 else None
    overlap = float(np.mean(overlaps)) if overlaps else None
    sa = np.sqrt(np.sort(np.concatenate(evals_a))[::-1][:TOP_SV])
    sb = np.sqrt(np.sort(np.concatenate(evals_b))[::-1][:TOP_SV])
    keep = sa > 0
    top_change = float(np.max(np.abs(sb[keep] - sa[keep]) / sa[keep])) if np.any(keep) else None
    return PairDiff(relative, overlap, k, random_overlap, top_change, diff=difference_spectrum(diffs, kind, eps))


def difference_spectrum(diffs: list[np.ndarray], kind: str, eps: float) -> dict[str, Any]:
    """Rank, stable rank, spectral norm and (when fitted) power-law alpha of W₂ − W₁."""
    if not any(np.any(D) for D in diffs):
        return {"rank": 0, "stable_rank": None, "log_spectral_norm": None, "alpha": None}
    analysis = analyse_matrices(diffs, kind, eps, _DIFF_OPTIONS)
    m = analysis.metrics
    return {
        "rank": m.get("matrix_rank"),
        "stable_rank": m.get("stable_rank"),
        "log_spectral_norm": m.get("log_spectral_norm"),
        "alpha": m.get("alpha"),
    }
