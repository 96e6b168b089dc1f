"""The judgement: the registry's rules under the policy, then the baseline, then the verdict.

Apart from the rule registry (findings.py) so that the registry, which the policy validates
against, imports neither the policy nor the baseline: findings <- policy <- judge, no cycle.
The verdict follows the policy's `fail-on` level.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from wwaudit.records import Finding, IntegrityIssue, LayerResult
from wwaudit.rules.baseline import Baseline
from wwaudit.rules.findings import RULES, RULES_BY_ID, SEVERITY_RANK, RuleContext
from wwaudit.rules.policy import Policy


@dataclass
class Judgement:
    """Findings after policy and baseline, and the verdict they give."""

    findings: list[Finding]
    suppressed: list[Finding]
    verdict: str
    reasons: list[str]

    def counts(self) -> dict[str, int]:
        """Counts for the summary block: active findings, and those waived by policy or baseline."""
        return {
            "findings": len(self.findings),
            "suppressed_policy": sum(1 for f in self.suppressed if f.suppressed_by == "policy"),
            "suppressed_baseline": sum(1 for f in self.suppressed if f.suppressed_by == "baseline"),
        }


def evaluate(layers: Iterable[LayerResult], graph_problems: Sequence[str] = (), policy: Policy | None = None,
             integrity_problems: Sequence[IntegrityIssue] = ()) -> list[Finding]:
    """All findings of the enabled rules, rule by rule in registry order, each in layer order."""
    ctx = RuleContext(list(layers), tuple(graph_problems), tuple(integrity_problems))
    found: list[Finding] = []
    for rule in RULES:
        if policy is not None and not policy.enabled(rule.id):
            continue
        params = policy.params(rule.id) if policy is not None else dict(rule.params)
        severity = policy.severity(rule.id) if policy is not None else rule.severity
        for layer, message in rule.check(ctx, params):
            found.append(Finding(rule.id, severity, message,
                                 layer.name if layer else None, layer.id if layer else None,
                                 tensor=layer.tensor if layer else None))
    found.sort(key=lambda f: (f.layer_id is not None, f.layer_id if f.layer_id is not None else -1))
    return found


def judge(layers: Sequence[LayerResult], graph_problems: Sequence[str] = (), policy: Policy | None = None,
          baseline: Baseline | None = None, integrity_problems: Sequence[IntegrityIssue] = ()) -> Judgement:
    """Evaluate the rules, then apply the policy (report level, ignored layers) and the baseline.

    Order matters: a finding on an ignored layer is waived by the policy before the baseline is
    consulted, so the baseline counts only findings the policy would have reported.
    """
    report_level = policy.report_level if policy is not None else "info"
    fail_on = policy.fail_on if policy is not None else "error"
    ignore = [re.compile(p) for p in policy.ignore_layers] if policy is not None else []
    by_id = {layer.id: layer for layer in layers}
    active: list[Finding] = []
    suppressed: list[Finding] = []
    for f in evaluate(layers, graph_problems, policy, integrity_problems):
        if SEVERITY_RANK[f.severity] < SEVERITY_RANK[report_level]:
            continue
        layer = by_id.get(f.layer_id) if f.layer_id is not None else None
        pattern = next((p for p in ignore if layer is not None and (p.search(layer.name) or p.search(layer.tensor))), None)
        if pattern is not None:
            f.suppressed_by, f.justification = "policy", f"layer ignored by policy pattern {pattern.pattern!r}"
            suppressed.append(f)
        elif baseline is not None and baseline.contains(f):
            f.suppressed_by, f.justification = "baseline", f"present in baseline {baseline.name}"
            suppressed.append(f)
        else:
            active.append(f)
    verdict_name, reasons = verdict(active, fail_on)
    n_base = sum(1 for f in suppressed if f.suppressed_by == "baseline")
    if n_base:
        reasons.append(f"{n_base} finding{'s' if n_base != 1 else ''} already in the baseline, not counted")
    return Judgement(active, suppressed, verdict_name, reasons)


def verdict(findings: list[Finding], fail_on: str = "error") -> tuple[str, list[str]]:
    """fail on any finding at or above `fail_on`, review on any warning or error left, else pass."""
    if fail_on != "never":
        failing = [f for f in findings if SEVERITY_RANK[f.severity] >= SEVERITY_RANK[fail_on]]
        if failing:
            return "fail", _reasons(failing)
    notable = [f for f in findings if SEVERITY_RANK[f.severity] >= SEVERITY_RANK["warning"]]
    if notable:
        return "review", _reasons(notable)
    return "pass", ["no finding at warning or error level" + (" (fail-on never)" if fail_on == "never" else "")]


def _reasons(findings: list[Finding]) -> list[str]:
    counts: dict[str, int] = {}
    for f in findings:
        counts[f.rule] = counts.get(f.rule, 0) + 1
    out = []
    for rule, n in counts.items():
        title = RULES_BY_ID[rule].title if rule in RULES_BY_ID else rule
        unit = "layer" if RULES_BY_ID.get(rule) and RULES_BY_ID[rule].scope == "layer" else "finding"
        out.append(f"{rule} {title}: {n} {unit}{'s' if n != 1 else ''}")
    return out
