"""Command line: parses arguments, calls the core, hands the result to the output formats.

Heavy libraries (numpy, onnx, weasyprint...) are imported only once a command runs, so `--help`,
`--version` and usage errors answer at once. Errors the user can act on become one line on
stderr and exit code 2; nothing here computes.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Sequence

from wwaudit import __version__
from wwaudit.errors import EXIT_ERROR, EXIT_FINDINGS, EXIT_OK, UsageError, WwauditError

SUBCOMMANDS = ("audit", "rules")


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so usage errors follow the one-line contract."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="wwaudit",
        description="Audit the weights of an ONNX model without data: per-layer spectral diagnosis "
        "(power-law alpha, norms, rank collapse) and a report a reviewer can sign.",
        epilog="Exit codes: 0 audit done, no finding at or above the failure level; 1 findings at or "
        "above it; 2 unusable input, usage or I/O error. `wwaudit rules` lists the rules.",
    )
    parser.add_argument("model", help="path to the .onnx file (external data is read from its folder)")
    parser.add_argument("--version", action="version", version=f"wwaudit {__version__}")
    out = parser.add_argument_group("outputs (several may be given in one run)")
    out.add_argument("--json", metavar="PATH", help="write the audit as JSON (schema wwaudit/1); '-' for stdout")
    out.add_argument("--csv", metavar="PATH", help="write one row per layer as CSV")
    out.add_argument("--report", metavar="PATH", help="write the audit report, .html or .pdf")
    out.add_argument("--page-size", choices=("A4", "Letter"), default="A4", help="PDF page size (default A4)")
    ana = parser.add_argument_group("analysis")
    ana.add_argument("--layers", metavar="REGEX", help="analyse only layers whose name or tensor matches")
    ana.add_argument("--fast", action="store_true", help="reference metric set only (no traps, no distribution comparison)")
    ana.add_argument("--seed", type=int, default=0, help="seed of the shuffled copies for correlation traps (default 0)")
    ana.add_argument("--max-evals", type=int, metavar="N", help="skip layers with more than N eigenvalues (default: no limit)")
    ui = parser.add_argument_group("display")
    ui.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary table")
    return parser


def _run_rules(argv: Sequence[str]) -> int:
    parser = _Parser(prog="wwaudit rules", description="List the audit rules with their rationale.")
    parser.parse_args(list(argv))
    from wwaudit.auditor.findings import RULES

    for rule in RULES:
        print(f"{rule.id}  [{rule.severity}]  {rule.title}")
        print(f"    why:  {rule.rationale}")
        print(f"    do:   {rule.remedy}")
    return EXIT_OK


def _run_audit(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    from datetime import datetime, timezone

    from wwaudit import formats
    from wwaudit.auditor.core import audit
    from wwaudit.auditor.options import AuditOptions
    from wwaudit.progress import make_progress, print_summary

    outputs: list[tuple[str, formats.Renderer]] = []
    if args.json:
        outputs.append((args.json, formats.FORMATS["json"]))
    if args.csv:
        outputs.append((args.csv, formats.FORMATS["csv"]))
    if args.report:
        outputs.append((args.report, formats.report_renderer(args.report)))
    if sum(1 for path, _ in outputs if path == "-") > 1:
        raise UsageError("only one output can go to stdout ('-')")
    for path, _ in outputs:
        formats.check_writable(path)
    if args.max_evals is not None and args.max_evals < 1:
        raise UsageError("--max-evals must be a positive number")

    options = AuditOptions(layers=args.layers, fast=args.fast, seed=args.seed, max_evals=args.max_evals)
    progress = make_progress(enabled=not args.quiet)
    result = audit(args.model, options, progress)

    ctx = formats.RenderContext(
        command="wwaudit " + " ".join(shlex.quote(a) for a in argv),
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        page_size=args.page_size,
    )
    for path, renderer in outputs:
        formats.write_atomic(path, renderer(result, ctx))
    if not args.quiet and not any(path == "-" for path, _ in outputs):
        print_summary(result)
    return EXIT_FINDINGS if result.verdict == "fail" else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `wwaudit` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "rules":
            return _run_rules(argv[1:])
        if argv and argv[0] == "audit":
            argv = argv[1:]
        return _run_audit(argv)
    except WwauditError as exc:
        print(f"wwaudit: error: {_one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("wwaudit: interrupted", file=sys.stderr)
        return EXIT_ERROR
    except MemoryError:
        print("wwaudit: error: out of memory while auditing (try --max-evals or --layers)", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # last resort: never a traceback for a user, but say it is our bug
        if os.environ.get("WWAUDIT_DEBUG"):
            raise
        print(f"wwaudit: internal error: {type(exc).__name__}: {_one_line(str(exc))} "
              "(set WWAUDIT_DEBUG=1 for a traceback)", file=sys.stderr)
        return EXIT_ERROR


def _one_line(text: str) -> str:
    return " ".join(text.split())[:1000]
