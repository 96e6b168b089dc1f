"""Markdown summary for pull-request comments: the verdict first, then the findings that count.

Layer names and messages come from the (untrusted) model: every such text is escaped so that it
cannot inject links, images or HTML into the comment, and the findings table is capped so that
a model with thousands of findings still fits a comment (GitHub's limit is 65,536 characters).
"""

from __future__ import annotations

import html
import re
from typing import Any

from wwaudit.rules.findings import RULES_BY_ID
from wwaudit.records import AuditResult, Finding

MAX_ROWS = 50
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~>-])")
BADGES = {"pass": "✅ PASS", "review": "⚠️ REVIEW", "inconclusive": "❔ INCONCLUSIVE", "fail": "❌ FAIL"}


def escape(text: str) -> str:
    """Plain text safe inside a Markdown table cell: no HTML, no Markdown syntax, one line."""
    text = " ".join(str(text).split())
    return _MD_SPECIAL.sub(r"\\\1", html.escape(text, quote=False))


def _table(findings: list[Finding], with_reason: bool = False) -> list[str]:
    head = "| rule | severity | layer | message |" + (" waived because |" if with_reason else "")
    rule = "| --- | --- | --- | --- |" + (" --- |" if with_reason else "")
    lines = [head, rule]
    for f in findings[:MAX_ROWS]:
        title = RULES_BY_ID[f.rule].title if f.rule in RULES_BY_ID else f.rule
        row = f"| {f.rule} {escape(title)} | {f.severity} | {escape(f.layer) if f.layer else '(model)'} | {escape(f.message)} |"
        if with_reason:
            row += f" {escape(f.justification or f.suppressed_by or '')} |"
        lines.append(row)
    if len(findings) > MAX_ROWS:
        lines.append(f"\n… and {len(findings) - MAX_ROWS} more (see the JSON or SARIF output).")
    return lines


def render(result: AuditResult, ctx: Any = None) -> bytes:
    """The summary as UTF-8 Markdown."""
    s = result.summary
    policy = result.options.get("policy") or {}
    counts = {sev: sum(1 for f in result.findings if f.severity == sev) for sev in ("error", "warning", "info")}
    lines = [
        f"## wwaudit: {BADGES.get(result.verdict, result.verdict.upper())} — {escape(result.model.path)}",
        "",
        f"**Verdict: {result.verdict}** (fails on: {policy.get('fail_on', 'error')})",
        "",
        *[f"- {escape(reason)}" for reason in result.verdict_reasons],
        "",
        "| model sha-256 | layers analysed | skipped | errors | findings (error / warning / info) | mean alpha |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| `{result.model.sha256[:16]}…` | {s.get('analysed')} | {s.get('skipped')} | {s.get('errors')} "
        f"| {counts['error']} / {counts['warning']} / {counts['info']} "
        f"| {'n/a' if s.get('alpha_mean') is None else format(s['alpha_mean'], '.2f')} |",
        "",
    ]
    if result.findings:
        lines += ["### Findings", "", *_table(result.findings), ""]
    else:
        lines += ["No findings.", ""]
    if result.suppressed:
        n_base = sum(1 for f in result.suppressed if f.suppressed_by == "baseline")
        n_policy = len(result.suppressed) - n_base
        lines += [
            f"<details><summary>{len(result.suppressed)} waived finding(s): {n_base} in the baseline, "
            f"{n_policy} on layers the policy ignores</summary>",
            "",
            *_table(result.suppressed, True),
            "",
            "</details>",
            "",
        ]
    source = policy.get("source") or "defaults"
    sha = (policy.get("sha256") or "")[:12]
    lines.append(
        f"<sub>wwaudit · policy {escape(source)} (sha-256 {sha}) · baseline "
        f"{escape(result.options.get('baseline') or 'none')}</sub>"
    )
    return ("\n".join(lines) + "\n").encode("utf-8")
