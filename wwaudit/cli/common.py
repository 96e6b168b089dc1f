"""Helpers shared by the `audit` and `compare` commands (so neither command imports the other)."""

from __future__ import annotations

import argparse
import shlex
from contextlib import ExitStack, nullcontext
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Sequence

from wwaudit.errors import UsageError

if TYPE_CHECKING:
    from wwaudit.engine.cluster import DaskExecutor
    from wwaudit.options import AuditOptions
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


def write_outputs(
    outputs: Sequence[tuple[str, Callable[[Any, Any], bytes]]],
    result: Any,
    ctx: Any,
    deadline: "Deadline",
    staged: "StagedOutputs",
    heartbeat: Callable[[str, bool], ContextManager[Any]] | None = None,
    folders: Sequence[tuple[str, Callable[["StagedOutputs"], str]]] = (),
) -> list[tuple[str, str]]:
    """Render every output under the deadline into staged temp files, then put them all in place;
    returns (path, format) of the files written (not stdout), for the summary.

    `--timeout` bounds the outputs too: the deadline is checked after each one, and a deadline
    passed (or any error) discards all of them, so a run that stops leaves no output at all, not
    even the ones it had finished. Reports take seconds to render: `heartbeat(label, enabled)`
    (cli.progress.Heartbeat, given by the command) says so on stderr while a PDF or HTML renders.
    `folders` are outputs of many files (--plots-dir): (folder, stage) where `stage(staged)` stages
    the files and returns what the summary says of them; they are staged and committed with the rest.
    """
    written = []
    try:
        for path, renderer in outputs:
            kind = getattr(renderer, "__name__", "").removeprefix("render_").removeprefix("report_").removesuffix("_format")
            slow = kind in ("pdf", "html") and path != "-"
            with heartbeat(f"rendering {path}", slow) if heartbeat is not None else nullcontext():
                staged.add(path, renderer(result, ctx))
            deadline.check(f"while writing {path}")
            if path != "-":
                written.append((path, kind or "output"))
        for folder, stage in folders:
            with heartbeat(f"writing {folder}", True) if heartbeat is not None else nullcontext():
                label = stage(staged)
            deadline.check(f"while writing {folder}")
            written.append((folder, label))
        staged.commit()
    except BaseException:
        staged.discard()
        raise
    return written


def audit_options(args: argparse.Namespace) -> AuditOptions:
    """The analysis options of an `audit` command line (one model or several)."""
    from wwaudit.engine import limits
    from wwaudit.engine.scheduler import default_workers
    from wwaudit.options import AuditOptions

    return AuditOptions(
        layers=args.layers,
        fast=args.fast,
        seed=args.seed,
        max_evals=args.max_evals,
        workers=args.workers or default_workers(),
        precision=args.precision,
        device=args.device,
        max_memory=limits.parse_size(args.max_memory),
        fix_fingers=args.fix_fingers,
        hill=args.hill,
        detx=args.detx,
        ww_extras=args.ww_extras,
        vectors=args.vectors,
        trap_detail=args.trap_detail,
        per_slice=args.per_slice,
    )


def open_cluster(args: argparse.Namespace, stack: ExitStack) -> DaskExecutor | None:
    """The Dask executor `--cluster` asks for (closed with `stack`), or None to run here.

    Opened under the run's watchdog: starting workers and connecting count against --timeout."""
    if not args.cluster:
        return None
    if not args.connect_timeout > 0:
        raise UsageError("--connect-timeout must be a positive number of seconds")
    from wwaudit.engine.cluster import cluster_executor

    return stack.enter_context(cluster_executor(args.cluster, args.connect_timeout))
