"""Terminal display: a rich progress bar on stderr while layers are analysed, and a summary table.

Kept apart from the analysis: the core only calls start/advance/finish. The bar is shown only
when stderr is a terminal (no escape codes in CI logs); stdout carries machine output only.
"""

from __future__ import annotations

import sys

from wwaudit.auditor.results import AuditResult


class RichProgress:
    """Progress bar with layers/s and ETA."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("[bold]auditing"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[current]}", style="dim"),
            console=Console(stderr=True),
            transient=True,
        )
        self._task = None

    def start(self, total: int) -> None:
        self._progress.start()
        self._task = self._progress.add_task("audit", total=total, current="", rate="")

    def advance(self, name: str) -> None:
        task = self._progress.tasks[0]
        speed = task.speed
        self._progress.update(self._task, advance=1, current=name[:40], rate=f"{speed:.1f} layers/s" if speed else "")

    def finish(self) -> None:
        self._progress.stop()


class SilentProgress:
    def start(self, total: int) -> None:
        pass

    def advance(self, name: str) -> None:
        pass

    def finish(self) -> None:
        pass


def make_progress(enabled: bool = True):
    """A bar when enabled and stderr is a terminal, else nothing."""
    if enabled and sys.stderr.isatty():
        return RichProgress()
    return SilentProgress()


def print_summary(result: AuditResult) -> None:
    """Compact summary on stderr: verdict, model metrics and the analysed layers."""
    from rich.console import Console
    from rich.table import Table

    from wwaudit.formats.document import fmt

    console = Console(stderr=True, highlight=False)
    s = result.summary
    colour = {"pass": "green", "review": "yellow", "fail": "red"}[result.verdict]
    table = Table(title=f"{result.model.path}  ({s['analysed']} analysed, {s['skipped']} skipped)", title_justify="left")
    for col in ("layer", "op", "N×M", "α", "α̂", "log‖W‖²", "log λmax", "rank loss", "status"):
        table.add_column(col, justify="left" if col in ("layer", "op", "status") else "right")
    for layer in result.analysed_layers()[:60]:
        table.add_row(layer.name[:48], layer.op, f"{layer.N}×{layer.M}", fmt(layer.metric("alpha")),
                      fmt(layer.metric("alpha_weighted")), fmt(layer.metric("log_norm")),
                      fmt(layer.metric("log_spectral_norm")), fmt(layer.metric("rank_loss")), layer.status)
    if len(result.analysed_layers()) > 60:
        table.caption = f"… {len(result.analysed_layers()) - 60} more layers in the JSON/report"
    console.print(table)
    console.print(f"mean α {fmt(s.get('alpha_mean'))}   α̂ {fmt(s.get('alpha_weighted_mean'))}   "
                  f"log-norm {fmt(s.get('log_norm_mean'))}   findings {len(result.findings)}")
    console.print(f"verdict: [bold {colour}]{result.verdict.upper()}[/]  " + "; ".join(result.verdict_reasons))
