"""Helpers shared by the `audit` and `compare` commands (so neither command imports the other)."""

from __future__ import annotations

import argparse
import shlex
from typing import TYPE_CHECKING, Any, Callable, Sequence

from wwaudit.errors import UsageError

if TYPE_CHECKING:
    from wwaudit.engine.limits import Deadline
    from wwaudit.formats import StagedOutputs


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



def write_outputs(outputs: Sequence[tuple[str, Callable[[Any, Any], bytes]]], result: Any, ctx: Any,
                  deadline: "Deadline", staged: "StagedOutputs") -> None:
    """Render every output under the deadline into staged temp files, then put them all in place.

    `--timeout` bounds the outputs too: the deadline is checked after each one, and a deadline
    passed (or any error) discards all of them, so a run that stops leaves no output at all, not
    even the ones it had finished.
    """
    try:
        for path, renderer in outputs:
            staged.add(path, renderer(result, ctx))
            deadline.check(f"while writing {path}")
        staged.commit()
    except BaseException:
        staged.discard()
        raise
