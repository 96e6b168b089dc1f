"""`wwaudit compare` once its arguments are parsed: check outputs, compare, write, exit code.

cli/main.py owns the parser; this module owns what the command does with it, so the CLI stays free of
comparison logic. Exit codes follow the audit: 0 pass/review, 1 fail, 2 unusable input or output,
3 inconclusive (too few layers compared).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, Callable, Sequence

from wwaudit.errors import exit_code

if TYPE_CHECKING:
    from wwaudit.compare.result import CompareResult


def render_json(result: "CompareResult") -> bytes:
    """The comparison as JSON (schema wwaudit-compare/1): deterministic bytes, no timestamps."""
    return (json.dumps(result.to_dict(), indent=2, allow_nan=False, ensure_ascii=False) + "\n").encode("utf-8")


def _on_audit_shape(renderer: Callable[[Any, Any], bytes]) -> Callable[[Any, Any], bytes]:
    """An audit output format (SARIF, JUnit, Markdown) applied to a comparison (CompareResult.as_audit)."""

    def render(result: Any, ctx: Any) -> bytes:
        return renderer(result.as_audit(), ctx)

    return render


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Run a parsed `wwaudit compare` command; returns the exit code."""
    from wwaudit import formats
    from wwaudit.cli.common import check_counts, command_line, run_date, write_outputs
    from wwaudit.engine import limits
    from wwaudit.options import AuditOptions
    from wwaudit.engine.scheduler import default_workers
    from wwaudit.formats.report import compare as report
    from wwaudit.compare.engine import compare
    from wwaudit.cli.progress import make_progress

    from wwaudit.rules.policy import load_policy

    outputs = []
    if args.json:
        outputs.append((args.json, lambda r, ctx: render_json(r)))
    if args.report:
        outputs.append((args.report, report.renderer(args.report)))
    for fmt in ("sarif", "junit", "markdown"):  # the audit's CI formats, on the comparison's findings
        if getattr(args, fmt):
            outputs.append((getattr(args, fmt), _on_audit_shape(formats.FORMATS[fmt])))
    formats.check_outputs(outputs)
    policy = load_policy(args.policy, fail_on=args.fail_on)
    check_counts(args)
    deadline = limits.Deadline(limits.parse_timeout(args.timeout))
    options = AuditOptions(
        layers=args.layers,
        fast=args.fast,
        seed=args.seed,
        max_evals=args.max_evals,
        workers=args.workers or default_workers(),
        max_memory=limits.parse_size(args.max_memory),
    )
    # the deadline covers both audits and the layer-by-layer comparison; outputs are written after
    staged = formats.StagedOutputs()
    with limits.watchdog(deadline, cleanup=staged.discard):
        result = compare(
            args.base, args.candidate, options, limits.GuardedProgress(make_progress(enabled=not args.quiet), deadline), policy
        )
        deadline.check("at the end of the comparison")
        ctx = formats.RenderContext(
            command=command_line(argv),
            generated=run_date(),
            page_size=args.page_size,
            extra={"model_uri": formats.artifact_uri(args.candidate)},
        )
        write_outputs(outputs, result, ctx, deadline, staged)
    if not args.quiet and not any(path == "-" for path, _ in outputs):
        _print_summary(result)
    elif result.verdict in ("fail", "inconclusive"):
        print(f"wwaudit compare: verdict {result.verdict}: {'; '.join(result.verdict_reasons)}", file=sys.stderr)
    return exit_code(result.verdict)


def _print_summary(result: "CompareResult") -> None:
    from wwaudit.formats.report.document import fmt

    s = result.summary()
    err = sys.stderr
    print(f"compare: {result.base.model.path} -> {result.candidate.model.path}: verdict {result.verdict.upper()}", file=err)
    print(
        f"  {s['pairs']} matched layers ({s['matched_by_name']} by name, {s['matched_by_structure']} by structure), "
        f"unmatched: {s['unmatched_base']} base, {s['unmatched_candidate']} candidate",
        file=err,
    )
    for row in result.model_metrics:
        print(f"  {row['label']}: {fmt(row['base'])} -> {fmt(row['candidate'])} (lower: {row['lower'] or '–'})", file=err)
    for reason in result.verdict_reasons:
        print(f"  {reason}", file=err)
