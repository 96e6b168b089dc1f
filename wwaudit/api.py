"""The public Python API: `wwaudit.audit(path, **options)` and `wwaudit.compare(a, b, **options)`.

Notebook users work as with weightwatcher (`details = watcher.analyze()`): one call gives a
result whose `.layers`, `.findings` and `.verdict` are plain Python objects, whose
`.to_dataframe()` is a pandas table, and which Jupyter shows as a summary table. The options are
the CLI's analysis options under their Python names; the results are the same objects the CLI
renders, so a notebook sees exactly what the JSON says.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wwaudit.compare import compare

if TYPE_CHECKING:
    from wwaudit.records import AuditResult

__all__ = ["audit", "compare"]


def audit(
    path: str,
    *,
    policy: str | None = None,
    fail_on: str | None = None,
    baseline: str | None = None,
    reference: str | None = None,
    progress: Any | None = None,
    **options: Any,
) -> AuditResult:
    """Audit one ONNX file and return its AuditResult (the document `wwaudit --json` writes).

    `options` are AuditOptions fields: layers (regex), fast, seed, max_evals, workers (default:
    the usable cores, as the CLI), precision, device, max_memory (bytes, or a size such as "8G",
    or None for no limit), and the opt-in metrics (README, "Optional metrics"): fix_fingers
    ("xmin_peak" or "clip_xmax"), hill, detx, ww_extras, vectors, trap_detail, per_slice. `policy` is a policy file (default: the nearest wwaudit.toml or
    pyproject.toml [tool.wwaudit] from the working directory up, as the CLI); `fail_on` overrides
    its failure level; `baseline` is an earlier JSON output; `reference` the float original of a
    quantized model (adds per-layer quantization damage). Bad input raises wwaudit.errors.WwauditError.
    """
    from wwaudit.engine.core import audit as run_audit
    from wwaudit.engine.settings import audit_options
    from wwaudit.rules.baseline import load_baseline
    from wwaudit.rules.policy import load_policy

    opts = audit_options("audit", options)
    result = run_audit(
        path, opts, progress, policy=load_policy(policy, fail_on=fail_on), baseline=load_baseline(baseline) if baseline else None
    )
    if reference:
        from wwaudit.compare.engine import attach_reference

        attach_reference(result, path, reference, opts, progress)
    return result
