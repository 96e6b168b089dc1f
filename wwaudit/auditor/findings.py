"""Rules: each with an id, a default severity, why it matters and what to do; and the verdict.

The registry is the single list every output shows (`wwaudit rules`, SARIF rules, the report's
findings section). A rule's `check` reads finished layer results only; it never computes metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from wwaudit.auditor.results import Finding, LayerResult

SEVERITIES = ("info", "warning", "error")
ALPHA_LOW = 2.0
ALPHA_HIGH = 6.0


@dataclass(frozen=True)
class Rule:
    """A registered check on one layer."""

    id: str
    title: str
    severity: str
    rationale: str
    remedy: str
    check: Callable[[LayerResult], str | None]


def _nan_inf(layer: LayerResult) -> str | None:
    if layer.status == "error" and layer.reason and "NaN" in layer.reason:
        return f"{layer.name}: {layer.reason}; the layer cannot be analysed"
    return None


def _dead(layer: LayerResult) -> str | None:
    if layer.status == "error" and layer.reason and "zero" in layer.reason:
        return f"{layer.name}: {layer.reason}"
    return None


def _rank_collapse(layer: LayerResult) -> str | None:
    loss = layer.metric("rank_loss")
    n = layer.metric("num_evals")
    if layer.analysed and loss and n and loss > 0:
        return f"{layer.name}: {loss} of {n} singular values are numerically zero (rank collapse)"
    return None


def _over_trained(layer: LayerResult) -> str | None:
    alpha = layer.metric("alpha")
    if layer.status == "ok" and alpha is not None and alpha < ALPHA_LOW:
        return f"{layer.name}: alpha = {alpha:.2f} < {ALPHA_LOW:g} (very heavy-tailed ESD: possibly over-trained)"
    return None


def _under_trained(layer: LayerResult) -> str | None:
    alpha = layer.metric("alpha")
    if layer.status == "ok" and alpha is not None and alpha > ALPHA_HIGH:
        return f"{layer.name}: alpha = {alpha:.2f} > {ALPHA_HIGH:g} (ESD close to random: possibly under-trained)"
    return None


RULES: tuple[Rule, ...] = (
    Rule("WW001", "Over-trained layer (alpha < 2)", "warning",
         "An ESD tail exponent below 2 means a very heavy-tailed spectrum: a few directions dominate, "
         "typical of over-fitting or of correlation traps.",
         "Check training length, learning rate and regularisation of this layer; compare with earlier checkpoints.",
         _over_trained),
    Rule("WW002", "Under-trained layer (alpha > 6)", "warning",
         "An ESD tail exponent above 6 means the spectrum is close to that of a random matrix: the layer "
         "has learned little structure.",
         "Train longer, or check that this layer receives gradient (frozen, dead or mis-initialised layers look like this).",
         _under_trained),
    Rule("WW003", "Rank collapse", "warning",
         "Singular values that are numerically zero mean the layer maps onto a lower-dimensional space; "
         "Martin & Mahoney observe this in over-regularised models, never in well-trained ones.",
         "Reduce weight decay or norm constraints; check for pruning or dead units.",
         _rank_collapse),
    Rule("WW006", "NaN or Inf weights", "error",
         "Weights with NaN or Inf make every output of the model undefined.",
         "Re-export the model from a checkpoint taken before the divergence; check the exporter's dtype casts.",
         _nan_inf),
    Rule("WW007", "Dead layer (all-zero weights)", "error",
         "A weight matrix that is all zero passes no signal: the layer is dead.",
         "Check the export (weights not copied) and the training (collapsed layer).",
         _dead),
)

RULES_BY_ID = {rule.id: rule for rule in RULES}


def evaluate(layers: Iterable[LayerResult]) -> list[Finding]:
    """All findings, in layer order then rule order."""
    findings = []
    for layer in layers:
        for rule in RULES:
            message = rule.check(layer)
            if message:
                findings.append(Finding(rule.id, rule.severity, message, layer.name, layer.id))
    return findings


def verdict(findings: list[Finding]) -> tuple[str, list[str]]:
    """fail on any error, review on any warning, else pass; with the reasons that drove it."""
    errors = [f for f in findings if f.severity == "error"]
    warnings = [f for f in findings if f.severity == "warning"]
    if errors:
        return "fail", _reasons(errors)
    if warnings:
        return "review", _reasons(warnings)
    return "pass", ["no finding at warning or error level"]


def _reasons(findings: list[Finding]) -> list[str]:
    counts: dict[str, int] = {}
    for f in findings:
        counts[f.rule] = counts.get(f.rule, 0) + 1
    return [f"{rule} {RULES_BY_ID[rule].title}: {n} layer{'s' if n != 1 else ''}" for rule, n in counts.items()]
