"""JSON output (schema wwaudit/1): deterministic bytes for the same input and options."""

from __future__ import annotations

import json

from wwaudit.records import AuditResult


def render(result: AuditResult, ctx: object = None) -> bytes:
    """The audit as JSON; keys keep the contract's order, no timestamps."""
    return (json.dumps(result.to_dict(), indent=2, allow_nan=False, ensure_ascii=False) + "\n").encode("utf-8")
