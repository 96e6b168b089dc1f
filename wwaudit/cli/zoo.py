"""`wwaudit audit MODEL… --out-dir DIR`: several models in one run (engine/zoo.py does the work).

Outputs go into one folder: NAME.json per audited model (byte-identical to `wwaudit MODEL
--json`), NAME.html|pdf with --reports, and summary.csv + summary.html (+ summary.pdf) with one row
per model. All of them are staged and put in place together at the end, under --timeout, as for
one model. The exit code is the worst verdict's (engine.zoo.VERDICT_ORDER).
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import ExitStack
from typing import TYPE_CHECKING, Sequence

from wwaudit import __version__
from wwaudit.cli.common import audit_options, check_counts, command_line, open_cluster, run_date
from wwaudit.errors import OutputError, UsageError

if TYPE_CHECKING:
    from wwaudit.engine.limits import Deadline
    from wwaudit.formats import RenderContext, StagedOutputs
    from wwaudit.records import ZooEntry
    from wwaudit.rules.policy import Policy

# Single-model outputs and options that have no meaning for several models at once.
_SINGLE_ONLY = (
    "json",
    "csv",
    "report",
    "sarif",
    "junit",
    "markdown",
    "github",
    "attestation",
    "plots_dir",
    "reference",
    "baseline",
    "stdout_format",
)
_FLAGS = {"stdout_format": "format"}  # dest -> the option's name where they differ


def _check(args: argparse.Namespace) -> None:
    if args.out_dir is None:
        raise UsageError("several models (or a folder) need --out-dir DIR for their outputs")
    given = [f"--{_FLAGS.get(name, name.replace('_', '-'))}" for name in _SINGLE_ONLY if getattr(args, name)]
    if given:
        raise UsageError(f"{', '.join(given)}: one model's option; with --out-dir use --reports and --summary-pdf")
    if not args.model:
        raise UsageError("--out-dir: no model given")
    if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
        raise UsageError(f"--out-dir {args.out_dir}: not a folder")
    check_counts(args)
    try:
        os.makedirs(args.out_dir, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"--out-dir {args.out_dir}: cannot create: {exc.strerror}") from None


def _write(
    entries: list[ZooEntry], args: argparse.Namespace, ctx: RenderContext, staged: StagedOutputs, deadline: Deadline
) -> list[str]:
    """Stage every output (per model, then the summary), checking the deadline after each; the
    paths written, for the closing lines."""
    from wwaudit import formats
    from wwaudit.formats import zoo

    files: list[str] = []

    def add(name: str, data: bytes) -> None:
        path = os.path.join(args.out_dir, name)
        staged.add(path, data)
        deadline.check(f"while writing {path}")
        files.append(path)

    for entry in entries:
        if entry.result is None:
            continue
        add(f"{entry.name}.json", formats.FORMATS["json"](entry.result, ctx))
        if args.reports:
            extra = {**ctx.extra, "model_uri": formats.artifact_uri(entry.path)}
            model_ctx = formats.RenderContext(ctx.command, ctx.generated, ctx.page_size, args.plots, args.max_plots, extra)
            add(f"{entry.name}.{args.reports}", formats.FORMATS[args.reports](entry.result, model_ctx))
    add("summary.csv", zoo.render_csv(entries))
    add("summary.html", zoo.render_html(entries, ctx).encode("utf-8"))
    if args.summary_pdf:
        add("summary.pdf", zoo.render_pdf(entries, ctx))
    staged.commit()
    return files


def _print_rows(entries: list[ZooEntry], files: list[str], worst: str, quiet: bool) -> None:
    """One line per model on stderr (verdict, α̂, why), the files, the worst verdict; with --quiet
    only the last line, and only when it stops a gate."""
    if not quiet:
        for entry in entries:
            alpha_hat = entry.result.summary.get("alpha_weighted_mean") if entry.result is not None else None
            shown = f"{alpha_hat:.3f}" if alpha_hat is not None else "-"
            why = entry.error or ("; ".join(entry.result.verdict_reasons) if entry.result is not None else "")
            print(f"{entry.verdict.upper():<13} α̂ {shown:>7}  {entry.name}  {why}"[:400], file=sys.stderr)
        print(f"wrote {len(files)} files into {os.path.dirname(files[-1]) or '.'}", file=sys.stderr)
    if not quiet or worst in ("error", "fail", "inconclusive"):
        print(f"worst verdict: {worst.upper()} over {len(entries)} models", file=sys.stderr)


def run_zoo(args: argparse.Namespace, argv: Sequence[str], policy: Policy) -> int:
    """Audit several models into --out-dir; the exit code is the worst verdict's (2 for a model
    that could not be audited, then 1 fail, 3 inconclusive, 0)."""
    _check(args)
    from wwaudit import formats
    from wwaudit.cli.progress import make_progress
    from wwaudit.engine import limits
    from wwaudit.engine.zoo import audit_many, model_paths, worst_verdict, zoo_exit_code

    deadline = limits.Deadline(limits.parse_timeout(args.timeout))
    paths = model_paths(args.model)
    options = audit_options(args)
    progress = limits.GuardedProgress(make_progress(enabled=not args.quiet), deadline)
    staged = formats.StagedOutputs()
    with limits.watchdog(deadline, cleanup=staged.discard), ExitStack() as stack:
        executor = open_cluster(args, stack)
        entries = audit_many(paths, options, progress, executor, policy)
        deadline.check("at the end of the analysis")
        worst = worst_verdict(entries)
        ctx = formats.RenderContext(
            command=command_line(argv),
            generated=run_date(),
            page_size=args.page_size,
            extra={"worst": worst, "version": __version__, "workers": executor.workers if executor else options.workers},
        )
        files = _write(entries, args, ctx, staged, deadline)
    _print_rows(entries, files, worst, args.quiet)
    return zoo_exit_code(entries)
