"""Phase of training per layer: Martin & Mahoney's 5+1 phases, read off the MP fit and alpha.

The phases (JMLR 22, 2021, section 5) describe how an ESD departs from random as training
proceeds: random-like → bleeding-out → bulk+spikes → bulk-decay → heavy-tailed, plus
rank-collapse for over-regularised layers. wwaudit turns them into a decision list on metrics that
the spectral analysis already produced (no eigenvalues are read here):

1. rank-collapse: at least RANK_COLLAPSE_SHARE of the singular values are numerically zero;
2. heavy-tailed: a good power-law fit with alpha < HEAVY_TAILED_ALPHA (MM's moderately and very
   heavy-tailed ESDs; well-trained layers sit here or in bulk-decay);
3. random-like: nothing above the Marchenko-Pastur bulk edge (num_spikes == 0);
4. bleeding-out: the largest eigenvalue is still within BLEEDING_RATIO of the bulk edge, so the
   eigenvalues past it are bleeding out of the bulk rather than separated spikes;
5. bulk-decay: many eigenvalues past the edge (share > DECAY_SPIKE_SHARE) or a tail exponent in
   the weakly heavy-tailed range [HEAVY_TAILED_ALPHA, 6];
6. bulk+spikes: otherwise, a random-like bulk with a few separated spikes.

A layer without the MP metrics (fit not run) gets a phase only through rules 1-2, else None.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from wwaudit.records import finite_or_none, LayerResult

PHASES = ("random-like", "bleeding-out", "bulk+spikes", "bulk-decay", "heavy-tailed", "rank-collapse")
RANK_COLLAPSE_SHARE = 0.25
HEAVY_TAILED_ALPHA = 4.0
WEAK_TAIL_ALPHA = 6.0
BLEEDING_RATIO = 0.5  # bulk_max / lambda_max above this: lambda_max less than twice the bulk edge
DECAY_SPIKE_SHARE = 0.1


def classify(metrics: Mapping[str, Any], status: str = "ok") -> str | None:
    """The phase of one layer from its metrics (keys of results.METRIC_COLUMNS), or None."""
    if status not in ("ok", "fit_failed"):
        return None
    n = finite_or_none(metrics.get("num_evals"))
    loss = finite_or_none(metrics.get("rank_loss"))
    if n and loss is not None and loss / n >= RANK_COLLAPSE_SHARE:
        return "rank-collapse"
    alpha = finite_or_none(metrics.get("alpha")) if status == "ok" else None
    if alpha is not None and alpha < HEAVY_TAILED_ALPHA:
        return "heavy-tailed"
    spikes = finite_or_none(metrics.get("num_spikes"))
    if spikes is None:
        return None
    if spikes == 0:
        return "random-like"
    bulk_max, lam_max = finite_or_none(metrics.get("bulk_max")), finite_or_none(metrics.get("lambda_max"))
    ratio = bulk_max / lam_max if bulk_max is not None and lam_max else finite_or_none(metrics.get("mp_softrank"))
    if ratio is not None and ratio > BLEEDING_RATIO:
        return "bleeding-out"
    if (n and spikes / n > DECAY_SPIKE_SHARE) or (alpha is not None and alpha <= WEAK_TAIL_ALPHA):
        return "bulk-decay"
    return "bulk+spikes"


def assign_phases(layers: Iterable[LayerResult]) -> None:
    """Store each analysed layer's phase as metrics['phase'] (called by core after the analysis)."""
    for layer in layers:
        if layer.analysed:
            layer.metrics["phase"] = classify(layer.metrics, layer.status)
