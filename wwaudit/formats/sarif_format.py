"""SARIF 2.1.0 for a binary model file, shaped for GitHub code scanning and other CI dashboards.

A model is not text: results carry the model's repository-relative path and no `region` (with a
region, upload tools hash lines of the protobuf). The layer and tensor go into
`logicalLocations`, the model's sha-256 into `run.artifacts[].hashes`, and each result gets its own
`partialFingerprints` from rule id + tensor + layer name (never metric values, so a finding keeps
its identity while alpha drifts). Waived findings (policy-ignored layers, baseline) are emitted
with `suppressions`; no `security-severity` (these are quality rules, not security alerts).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from wwaudit import __version__
from wwaudit.rules.findings import RULES
from wwaudit.records import AuditResult, Finding

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
LEVELS = {"info": "note", "warning": "warning", "error": "error"}
FINGERPRINT_KEY = "wwauditFinding/v1"


def fingerprint(finding: Finding) -> str:
    """Stable identity of a finding across runs: rule, tensor and layer name, nothing measured."""
    if finding.layer is None:
        parts = [finding.rule, finding.message if finding.rule == "WW000" else ""]
    else:
        parts = [finding.rule, finding.tensor or "", finding.layer]
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()


def _rules(result: AuditResult) -> list[dict[str, Any]]:
    effective = (result.options.get("policy") or {}).get("rules", {})
    out = []
    for rule in RULES:
        eff = effective.get(rule.id, {})
        thresholds = eff.get("params", dict(rule.params))
        help_text = rule.remedy + (
            " Thresholds: " + ", ".join(f"{k} = {v:g}" for k, v in sorted(thresholds.items())) if thresholds else ""
        )
        out.append(
            {
                "id": rule.id,
                "name": "".join(w.capitalize() for w in rule.title.split("(")[0].replace("-", " ").split()),
                "shortDescription": {"text": rule.title},
                "fullDescription": {"text": rule.rationale},
                "help": {"text": help_text},
                "defaultConfiguration": {
                    "level": LEVELS[eff.get("severity", rule.severity)],
                    "enabled": bool(eff.get("enabled", True)),
                },
                "properties": {"tags": ["model-quality", "weightwatcher"], "scope": rule.scope},
            }
        )
    return out


def _result(f: Finding, uri: str, rule_index: dict[str, int], baseline_used: bool) -> dict[str, Any]:
    location: dict[str, Any] = {"physicalLocation": {"artifactLocation": {"uri": uri, "index": 0}}}
    if f.layer is not None:
        location["logicalLocations"] = [
            {
                "name": f.layer,
                "fullyQualifiedName": f.tensor or f.layer,
                "kind": "variable",
            }
        ]
    out: dict[str, Any] = {
        "ruleId": f.rule,
        "level": LEVELS[f.severity],
        "message": {"text": f.message},
        "locations": [location],
        "partialFingerprints": {FINGERPRINT_KEY: fingerprint(f)},
    }
    if f.rule in rule_index:
        out["ruleIndex"] = rule_index[f.rule]
    if baseline_used and f.suppressed_by != "policy":
        out["baselineState"] = "unchanged" if f.suppressed_by == "baseline" else "new"
    if f.suppressed_by:
        out["suppressions"] = [{"kind": "external", "status": "accepted", "justification": f.justification or f.suppressed_by}]
    props: dict[str, Any] = {"severity": f.severity}
    if f.layer_id is not None:
        props["layerId"] = f.layer_id
    out["properties"] = props
    return out


def render(result: AuditResult, ctx: Any = None) -> bytes:
    """The audit's findings (active, then suppressed) as one SARIF run against the model file."""
    extra = getattr(ctx, "extra", None) or {}
    uri = extra.get("model_uri") or result.model.path
    rules = _rules(result)
    rule_index = {rule["id"]: i for i, rule in enumerate(rules)}
    baseline_used = bool(result.options.get("baseline"))
    policy = result.options.get("policy") or {}
    run: dict[str, Any] = {
        "tool": {
            "driver": {
                "name": "wwaudit",
                "version": __version__,
                "semanticVersion": __version__,
                "rules": rules,
            }
        },
        "invocations": [{"executionSuccessful": True}],
        "artifacts": [
            {
                "location": {"uri": uri},
                "length": result.model.size_bytes,
                "hashes": {"sha-256": result.model.sha256},
            }
        ],
        "results": [_result(f, uri, rule_index, baseline_used) for f in [*result.findings, *result.suppressed]],
        "properties": {
            "verdict": result.verdict,
            "verdictReasons": list(result.verdict_reasons),
            "failOn": policy.get("fail_on", "error"),
            "policySha256": policy.get("sha256"),
            "baseline": result.options.get("baseline"),
        },
    }
    doc = {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}
    return (json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
