"""An in-toto Statement (v1) about the audited model: what was judged, by which rules, with what result.

Why: a reviewer's sign-off should be checkable later without re-running the audit. The subject is
the model file by its sha-256 (the artifact a deployment pulls), the predicate holds the verdict,
the reasons, the policy's hash (same hash, same rules), the tool version and options, and the
sha-256 of the JSON result this run writes, so the full audit can be matched to the statement.
The statement is unsigned: sign it with the team's tooling (cosign attest-blob, in-toto, gh
attestation) to bind it to an identity.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from wwaudit import __version__
from wwaudit.formats import json_format
from wwaudit.records import AuditResult

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://wwaudit.dev/attestation/audit/v1"


def statement(result: AuditResult, ctx: Any = None) -> dict[str, Any]:
    """The statement as a dict (render() writes it as JSON)."""
    result_bytes = json_format.render(result, ctx)
    policy = result.options.get("policy") or {}
    counts = {level: sum(1 for f in result.findings if f.severity == level) for level in ("error", "warning", "info")}
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": os.path.basename(result.model.path), "digest": {"sha256": result.model.sha256}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "verdict": result.verdict,
            "reasons": list(result.verdict_reasons),
            "findings": counts,
            "suppressed": len(result.suppressed),
            "policy": {"sha256": policy.get("sha256"), "source": policy.get("source"), "fail_on": policy.get("fail_on")},
            "tool": {"name": "wwaudit", "version": __version__},
            "options": {k: v for k, v in result.options.items() if k != "policy"},
            "result": {
                "mediaType": "application/json",
                "schema": json.loads(result_bytes)["schema"],
                "digest": {"sha256": hashlib.sha256(result_bytes).hexdigest()},
            },
        },
    }


def render(result: AuditResult, ctx: Any = None) -> bytes:
    """The statement as JSON; deterministic for the same audit (no timestamps)."""
    return (json.dumps(statement(result, ctx), indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
