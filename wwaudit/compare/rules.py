"""Rules of a comparison: which changes between base and candidate a reviewer must look at.

Each rule reads one finished PairResult (never matrices), like the audit's rules read one
LayerResult. Thresholds are module constants, documented in the README's compare section.
The verdict follows the audit's convention: fail on any error, review on any warning, else pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from wwaudit.rules.findings import ALPHA_HIGH, ALPHA_LOW
from wwaudit.records import Finding
from wwaudit.compare.result import PairResult

ALPHA_RISE = 1.0  # Δalpha above this: the candidate's ESD moved towards a random matrix's
OVERLAP_MIN = 0.5  # below this the candidate kept less than half of the base's top directions


@dataclass(frozen=True)
class CompareRule:
    """A registered check on one matched pair."""

    id: str
    title: str
    severity: str
    rationale: str
    check: Callable[[PairResult], str | None]


def _in_band(alpha: float | None) -> bool:
    return alpha is not None and ALPHA_LOW <= alpha <= ALPHA_HIGH


def _left_band(p: PairResult) -> str | None:
    a, b = p.base_metrics.get("alpha"), p.candidate_metrics.get("alpha")
    if _in_band(a) and b is not None and not _in_band(b):
        return f"{p.candidate}: alpha {a:.2f} -> {b:.2f} left [{ALPHA_LOW:g}, {ALPHA_HIGH:g}]"
    return None


def _alpha_rise(p: PairResult) -> str | None:
    d = p.delta.get("alpha")
    if d is not None and d > ALPHA_RISE:
        return f"{p.candidate}: alpha rose by {d:.2f} (> {ALPHA_RISE:g}): the layer's spectrum moved towards random"
    return None


def _overlap(p: PairResult) -> str | None:
    o = p.subspace_overlap
    if o is not None and o < OVERLAP_MIN:
        return (f"{p.candidate}: top-{p.subspace_k} singular subspace overlap {o:.2f} < {OVERLAP_MIN:g} "
                f"(unrelated subspaces: {p.subspace_overlap_random:.2f}): the base's learned directions were not kept")
    return None


def _broken(p: PairResult) -> str | None:
    if p.base_metrics.get("status") == "error":  # a base that was already broken is the base audit's finding
        return None
    if p.candidate_metrics.get("status") == "error":
        return f"{p.candidate}: the candidate layer is unusable ({p.candidate_metrics.get('reason')}) while the base's is not"
    if p.status == "error":
        return f"{p.candidate}: cannot be compared: {p.reason}"
    return None


def _rank(p: PairResult) -> str | None:
    a, b = p.base_metrics.get("rank_loss") or 0, p.candidate_metrics.get("rank_loss") or 0
    if b > a:
        return f"{p.candidate}: rank loss rose from {a} to {b} numerically zero singular values"
    return None


RULES: tuple[CompareRule, ...] = (
    CompareRule("CMP001", "Alpha left the [2, 6] band", "warning",
                "The base layer's tail exponent was in the range of well-trained layers; the candidate's is not.",
                _left_band),
    CompareRule("CMP002", "Alpha rose sharply", "warning",
                "A higher alpha means a spectrum closer to a random matrix's: the layer lost learned correlations.",
                _alpha_rise),
    CompareRule("CMP003", "Top singular subspace not kept", "warning",
                "The candidate's dominant directions differ from the base's: the layer was replaced or retrained, "
                "not fine-tuned or quantized.",
                _overlap),
    CompareRule("CMP004", "Layer broken in the candidate", "error",
                "The candidate layer has NaN/Inf or all-zero weights, or its matrices cannot be compared, where the base's are fine.",
                _broken),
    CompareRule("CMP005", "Rank collapse appeared", "warning",
                "The candidate has more numerically zero singular values than the base.",
                _rank),
)
RULES_BY_ID = {rule.id: rule for rule in RULES}
UNMATCHED_RULE = "CMP006"
UNMATCHED_TITLE = "Layers without counterpart"


def evaluate(pairs: list[PairResult], unmatched_base: list[str], unmatched_candidate: list[str]) -> list[Finding]:
    """Findings in pair order then rule order, then one model-level note per side with unmatched layers."""
    found = []
    for p in pairs:
        for rule in RULES:
            message = rule.check(p)
            if message:
                found.append(Finding(rule.id, rule.severity, message, p.candidate, p.candidate_id))
    for side, names in (("base", unmatched_base), ("candidate", unmatched_candidate)):
        if names:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            found.append(Finding(UNMATCHED_RULE, "info", f"{len(names)} {side} layer(s) have no counterpart: {shown}"))
    return found


def verdict(findings: list[Finding]) -> tuple[str, list[str]]:
    """fail on any error, review on any warning, else pass; with the rules that drove it."""
    for severity, label in (("error", "fail"), ("warning", "review")):
        hits = [f for f in findings if f.severity == severity]
        if hits:
            counts: dict[str, int] = {}
            for f in hits:
                counts[f.rule] = counts.get(f.rule, 0) + 1
            return label, [f"{rule} {RULES_BY_ID[rule].title}: {n} layer{'s' if n != 1 else ''}" for rule, n in counts.items()]
    return "pass", ["no layer got worse beyond the thresholds"]
