"""Helpers shared by the `audit` and `compare` commands (so neither command imports the other)."""

from __future__ import annotations

import argparse
import shlex
from typing import Sequence

from wwaudit.errors import UsageError


def check_counts(args: argparse.Namespace) -> None:
    """Usage errors of the analysis counts shared by `audit` and `compare`."""
    if args.max_evals is not None and args.max_evals < 1:
        raise UsageError("--max-evals must be a positive number")
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be a positive number")


def command_line(argv: Sequence[str]) -> str:
    """The command as a reader can re-run it (shown in the reports' reproducibility block)."""
    return "wwaudit " + " ".join(shlex.quote(a) for a in argv)


def run_date() -> str:
    """The run's date for reports (never in the JSON: it would break byte-identical output)."""
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

