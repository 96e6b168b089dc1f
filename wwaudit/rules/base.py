"""What every rule is made of: severities, the context a check reads, and the Rule record.

Kept apart from the registry (rules/findings.py) so that the modules holding groups of checks
(rules/relative.py, rules/integrity.py) can build Rule objects without importing the registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from wwaudit.records import IntegrityIssue, LayerResult

SEVERITIES = ("info", "warning", "error")
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
FAIL_ON_LEVELS = SEVERITIES + ("never",)

Hit = tuple[LayerResult | None, str]


@dataclass(frozen=True)
class RuleContext:
    """What the rules read: the finished layer results and the graph walker's problems."""

    layers: Sequence[LayerResult]
    graph_problems: Sequence[str] = ()
    integrity_problems: Sequence[IntegrityIssue] = ()  # payload ambiguities found at load (rules/integrity.py)


Check = Callable[[Any, Mapping[str, float]], Iterable[Hit]]  # RuleContext, or CompareContext for CMP rules


@dataclass(frozen=True)
class Rule:
    """A registered check. `scope` is 'layer' (one finding per layer) or 'model' (layer is None).

    `enabled` is the default (a policy can switch any rule on or off); `params` are the
    thresholds a policy can move, each explained in `param_help` with the measurement behind it.
    """

    id: str
    title: str
    severity: str
    scope: str
    rationale: str
    remedy: str
    check: Check = field(repr=False, compare=False)
    params: Mapping[str, float] = field(default_factory=dict)
    param_help: Mapping[str, str] = field(default_factory=dict)
    enabled: bool = True
    target: str = "audit"  # "audit" (WW rules, read layers) or "compare" (CMP rules, read matched pairs)

    def describe(self) -> dict[str, Any]:
        """The rule as plain data (for `wwaudit rules --format json`, SARIF and the report)."""
        return {
            "id": self.id,
            "title": self.title,
            "severity": self.severity,
            "scope": self.scope,
            "enabled": self.enabled,
            "target": self.target,
            "rationale": self.rationale,
            "remedy": self.remedy,
            "params": {k: self.params[k] for k in sorted(self.params)},
            "param_help": {k: self.param_help[k] for k in sorted(self.param_help)},
        }


def per_layer(fn: Callable[[LayerResult, Mapping[str, float]], str | None]) -> Check:
    """Lift a one-layer check into a rule check over all layers, in layer order."""

    def check(ctx: RuleContext, params: Mapping[str, float]) -> Iterable[Hit]:
        for layer in ctx.layers:
            message = fn(layer, params)
            if message:
                yield layer, message

    return check
