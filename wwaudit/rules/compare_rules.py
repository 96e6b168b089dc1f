"""Rules of a comparison (CMP): which changes between base and candidate a reviewer must look at.

They live in the one registry with the audit's rules (rules/findings.RULES: `wwaudit rules` lists
them, the policy file sets their severity, thresholds and on/off, SARIF describes them). Each
check reads the finished pairs of a comparison (never matrices), like the audit's rules read
finished layers; the pairs come from compare/ and are read by attribute only, so this package
does not import the comparison code above it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from wwaudit.rules.base import Hit, Rule

ALPHA_LOW, ALPHA_HIGH = 2.0, 6.0


@dataclass(frozen=True)
class CompareContext:
    """What the CMP rules read: matched pairs (compare.result.PairResult) and the unmatched names."""

    pairs: Sequence[Any]
    unmatched_base: Sequence[str] = ()
    unmatched_candidate: Sequence[str] = ()
    layers: Sequence[Any] = field(default=())  # candidate layers, for the policy's ignore-layers


class _PairLayer:
    """The candidate side of a pair as the registry's findings name it (layer name, id, tensor)."""

    def __init__(self, pair: Any) -> None:
        self.name, self.id, self.tensor = pair.candidate, pair.candidate_id, pair.candidate_tensor


def _per_pair(fn: Any) -> Any:
    def check(ctx: CompareContext, params: Mapping[str, float]) -> Iterable[Hit]:
        for pair in ctx.pairs:
            message = fn(pair, params)
            if message:
                yield _PairLayer(pair), message  # type: ignore[misc]

    return check


def _in_band(alpha: float | None, p: Mapping[str, float]) -> bool:
    return alpha is not None and p["alpha_min"] <= alpha <= p["alpha_max"]


def _left_band(pair: Any, p: Mapping[str, float]) -> str | None:
    a, b = pair.base_metrics.get("alpha"), pair.candidate_metrics.get("alpha")
    if _in_band(a, p) and b is not None and not _in_band(b, p):
        return f"{pair.candidate}: alpha {a:.2f} -> {b:.2f} left [{p['alpha_min']:g}, {p['alpha_max']:g}]"
    return None


def _alpha_rise(pair: Any, p: Mapping[str, float]) -> str | None:
    d = pair.delta.get("alpha")
    if d is not None and d > p["max_alpha_rise"]:
        return f"{pair.candidate}: alpha rose by {d:.2f} (> {p['max_alpha_rise']:g}): the layer's spectrum moved towards random"
    return None


def _overlap(pair: Any, p: Mapping[str, float]) -> str | None:
    o = pair.subspace_overlap
    if o is not None and o < p["min_overlap"]:
        return (
            f"{pair.candidate}: top-{pair.subspace_k} singular subspace overlap {o:.2f} < {p['min_overlap']:g} "
            f"(unrelated subspaces: {pair.subspace_overlap_random:.2f}): the base's learned directions were not kept"
        )
    return None


def _broken(pair: Any, p: Mapping[str, float]) -> str | None:
    if pair.base_metrics.get("status") == "error":  # a base that was already broken is the base audit's finding
        return None
    if pair.candidate_metrics.get("status") == "error":
        return (
            f"{pair.candidate}: the candidate layer is unusable ({pair.candidate_metrics.get('reason')}) while the base's is not"
        )
    if pair.status == "error":
        return f"{pair.candidate}: cannot be compared: {pair.reason}"
    return None


def _rank(pair: Any, p: Mapping[str, float]) -> str | None:
    a, b = pair.base_metrics.get("rank_loss") or 0, pair.candidate_metrics.get("rank_loss") or 0
    if b - a >= p["min_rank_loss_rise"]:
        return f"{pair.candidate}: rank loss rose from {a} to {b} numerically zero singular values"
    return None


def _unmatched(ctx: CompareContext, p: Mapping[str, float]) -> Iterable[Hit]:
    for side, names in (("base", ctx.unmatched_base), ("candidate", ctx.unmatched_candidate)):
        if names:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            yield None, f"{len(names)} {side} layer(s) have no counterpart: {shown}"


_BAND = {"alpha_min": ALPHA_LOW, "alpha_max": ALPHA_HIGH}
_BAND_HELP = {"alpha_min": "lower end of the band", "alpha_max": "upper end of the band"}

COMPARE_RULES: tuple[Rule, ...] = (
    Rule(
        "CMP001",
        "Alpha left the [2, 6] band",
        "warning",
        "layer",
        "The base layer's tail exponent was in the articles' range of well-trained layers; the candidate's is not.",
        "Look at the layer's ESD in both models; check what changed it (quantization, fine-tuning, merge).",
        _per_pair(_left_band),
        dict(_BAND),
        dict(_BAND_HELP),
        target="compare",
    ),
    Rule(
        "CMP002",
        "Alpha rose sharply",
        "warning",
        "layer",
        "A higher alpha means a spectrum closer to a random matrix's: the layer lost learned correlations.",
        "Check the candidate layer for noise, re-initialisation or heavy quantization.",
        _per_pair(_alpha_rise),
        {"max_alpha_rise": 1.0},
        {"max_alpha_rise": "fires when alpha rose by more than this"},
        target="compare",
    ),
    Rule(
        "CMP003",
        "Top singular subspace not kept",
        "warning",
        "layer",
        "The candidate's dominant directions differ from the base's: the layer was replaced or retrained, "
        "not fine-tuned or quantized.",
        "Confirm that the candidate was derived from the base; compare the layer's weights directly.",
        _per_pair(_overlap),
        {"min_overlap": 0.5},
        {"min_overlap": "fires when the top-k subspace overlap is below this"},
        target="compare",
    ),
    Rule(
        "CMP004",
        "Layer broken in the candidate",
        "error",
        "layer",
        "The candidate layer has NaN/Inf or all-zero weights, or its matrices cannot be compared, where the base's are fine.",
        "Re-export the candidate; the base shows the layer is fine.",
        _per_pair(_broken),
        target="compare",
    ),
    Rule(
        "CMP005",
        "Rank collapse appeared",
        "warning",
        "layer",
        "The candidate has more numerically zero singular values than the base.",
        "Check the candidate for truncation, pruning or copied rows.",
        _per_pair(_rank),
        {"min_rank_loss_rise": 1},
        {"min_rank_loss_rise": "fires when rank_loss rose by at least this"},
        target="compare",
    ),
    Rule(
        "CMP006",
        "Layers without counterpart",
        "info",
        "model",
        "Layers of one model that have no counterpart in the other were not compared.",
        "Check that both files are the same architecture; rename layers consistently.",
        _unmatched,
        target="compare",
    ),
)
