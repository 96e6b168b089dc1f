"""The judgement: the registry's rules under the policy, then the baseline, then the verdict.

Apart from the rule registry (findings.py) so that the registry, which the policy validates
against, imports neither the policy nor the baseline: findings <- policy <- judge, no cycle.
The audit and the comparison share it: `settle` applies the policy and the baseline to any
findings and gives the verdict, which also says `inconclusive` when the audit did not cover the
weights (records.Coverage) or the comparison compared too little.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from wwaudit.records import Coverage, Finding, IntegrityIssue, LayerResult
from wwaudit.rules.baseline import Baseline
from wwaudit.rules.compare_rules import CompareContext
from wwaudit.rules.findings import RULES, RULES_BY_ID, SEVERITY_RANK, RuleContext
from wwaudit.rules.policy import Policy, waiver_for


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


def _run_rules(target: str, ctx: object, policy: Policy | None) -> list[Finding]:
    """Findings of the enabled rules of one target, rule by rule in registry order."""
    found: list[Finding] = []
    for rule in RULES:
        if rule.target != target or not (policy.enabled(rule.id) if policy is not None else rule.enabled):
            continue
        params = policy.params(rule.id) if policy is not None else dict(rule.params)
        severity = policy.severity(rule.id) if policy is not None else rule.severity
        for layer, message in rule.check(ctx, params):
            found.append(
                Finding(
                    rule.id,
                    severity,
                    message,
                    layer.name if layer else None,
                    layer.id if layer else None,
                    tensor=layer.tensor if layer else None,
                )
            )
    found.sort(key=lambda f: (f.layer_id is not None, f.layer_id if f.layer_id is not None else -1))
    return found


def evaluate(
    layers: Iterable[LayerResult],
    graph_problems: Sequence[str] = (),
    policy: Policy | None = None,
    integrity_problems: Sequence[IntegrityIssue] = (),
) -> list[Finding]:
    """All findings of the enabled audit rules, rule by rule in registry order, each in layer order."""
    return _run_rules("audit", RuleContext(list(layers), tuple(graph_problems), tuple(integrity_problems)), policy)


def evaluate_compare(ctx: CompareContext, policy: Policy | None = None) -> list[Finding]:
    """All findings of the enabled comparison (CMP) rules."""
    return _run_rules("compare", ctx, policy)


def judge(
    layers: Sequence[LayerResult],
    graph_problems: Sequence[str] = (),
    policy: Policy | None = None,
    baseline: Baseline | None = None,
    coverage: Coverage | None = None,
    integrity_problems: Sequence[IntegrityIssue] = (),
) -> Judgement:
    """Evaluate the audit rules, then apply the policy and the baseline, and give the verdict.

    `coverage` says what share of the file's weights was analysed: an audit that checked nothing,
    or left weights out for a limit, is `inconclusive` (see `verdict`).
    """
    allow = policy.allow_incomplete if policy is not None else False
    incomplete = coverage.incomplete_reasons(allow) if coverage is not None else []
    return settle(evaluate(layers, graph_problems, policy, integrity_problems), layers, policy, baseline, incomplete)


def settle(
    found: list[Finding],
    layers: Sequence[LayerResult],
    policy: Policy | None = None,
    baseline: Baseline | None = None,
    incomplete: Sequence[str] = (),
) -> Judgement:
    """Apply the policy (report level, ignored layers) and the baseline to findings; the verdict.

    Shared by the audit and the comparison. Order matters: a finding on an ignored layer is waived
    by the policy before the baseline is consulted, so the baseline counts only findings the
    policy would have reported.
    """
    report_level = policy.report_level if policy is not None else "info"
    fail_on = policy.fail_on if policy is not None else "error"
    ignore = [re.compile(p) for p in policy.ignore_layers] if policy is not None else []
    by_id = {layer.id: layer for layer in layers}
    active: list[Finding] = []
    suppressed: list[Finding] = []
    for f in found:
        if SEVERITY_RANK[f.severity] < SEVERITY_RANK[report_level]:
            continue
        layer = by_id.get(f.layer_id) if f.layer_id is not None else None
        pattern = next((p for p in ignore if layer is not None and (p.search(layer.name) or p.search(layer.tensor))), None)
        if pattern is not None:
            f.suppressed_by, f.justification = "policy", f"layer ignored by policy pattern {pattern.pattern!r}"
            suppressed.append(f)
        elif (waiver := waiver_for(policy, f)) is not None:
            f.suppressed_by, f.justification = "policy", waiver.justification()
            suppressed.append(f)
        elif baseline is not None and baseline.contains(f):
            f.suppressed_by, f.justification = "baseline", f"present in baseline {baseline.name}"
            suppressed.append(f)
        else:
            active.append(f)
    verdict_name, reasons = verdict(active, fail_on, incomplete)
    n_base = sum(1 for f in suppressed if f.suppressed_by == "baseline")
    if n_base:
        reasons.append(f"{n_base} finding{'s' if n_base != 1 else ''} already in the baseline, not counted")
    return Judgement(active, suppressed, verdict_name, reasons)


VERDICTS = ("pass", "review", "inconclusive", "fail")


def verdict(findings: list[Finding], fail_on: str = "error", incomplete: Sequence[str] = ()) -> tuple[str, list[str]]:
    """The verdict and the reasons that drove it.

    `fail`: a finding at or above `fail_on`. `inconclusive`: otherwise, when the audit did not
    cover the weights it had to (`incomplete` says why; pip-audit's --strict, model scanners'
    "inconclusive"): it can neither pass nor be read as a review of the whole model. `review`: a
    warning or error remains (below `fail_on`). `pass`: nothing a reviewer must look at.
    """
    if fail_on != "never":
        failing = [f for f in findings if SEVERITY_RANK[f.severity] >= SEVERITY_RANK[fail_on]]
        if failing:
            return "fail", _reasons(failing) + list(incomplete)
    if incomplete:
        return "inconclusive", list(incomplete)
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
