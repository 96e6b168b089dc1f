"""GitHub Actions workflow annotations: one `::error` / `::warning` / `::notice` line per finding.

Why: printed to a job's stdout, these lines become annotations on the run and on the pull request's
changed files, without uploading anything (the SARIF output needs code scanning). The file is the
model's path relative to the working directory (run from the repository root), so GitHub attaches
the annotation to the model file. Waived findings are left out: annotations are what needs action.
"""

from __future__ import annotations

from urllib.parse import unquote

from wwaudit.records import AuditResult
from wwaudit.rules.findings import RULES_BY_ID

LEVELS = {"error": "error", "warning": "warning", "info": "notice"}


def escape_data(text: str) -> str:
    """A workflow command's message: %, CR and LF are encoded (GitHub's escaping rules)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A property value (file, title): also ':' and ',' are encoded, they separate properties."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def render(result: AuditResult, ctx: object = None) -> bytes:
    """The annotations, then a `::notice` with the verdict, so the run's page says how it ended."""
    extra = getattr(ctx, "extra", {}) or {}
    uri = str(extra.get("model_uri") or result.model.path)
    path = result.model.path if uri.startswith("file:") else unquote(uri)
    lines = []
    for f in result.findings:
        rule = RULES_BY_ID.get(f.rule)
        title = f"{f.rule} {rule.title if rule else ''}".strip() + (f" ({f.layer})" if f.layer else "")
        lines.append(
            f"::{LEVELS.get(f.severity, 'warning')} file={escape_property(path)},"
            f"title={escape_property(title)}::{escape_data(f.message)}"
        )
    summary = f"wwaudit {result.verdict.upper()}: " + "; ".join(result.verdict_reasons)
    level = "error" if result.verdict == "fail" else "notice"
    lines.append(f"::{level} file={escape_property(path)},title={escape_property('wwaudit verdict')}::{escape_data(summary)}")
    return ("\n".join(lines) + "\n").encode("utf-8")
