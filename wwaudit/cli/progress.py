"""Terminal display: a rich progress bar on stderr while layers are analysed, and a summary table.

Kept apart from the analysis: the core only calls start/advance/finish. The bar is shown only
when stderr is a terminal (no escape codes in CI logs); stdout carries machine output only.
"""

from __future__ import annotations

import importlib
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Sequence

from wwaudit.records import AuditResult

if TYPE_CHECKING:
    from wwaudit.engine.scheduler import SilentProgress


class RichProgress:
    """Progress bar with layers done, layers/s and an ETA.

    The bar and the ETA follow estimated work (flops of the eigen work), not layer counts: layers
    differ in size by orders of magnitude and the scheduler starts the largest first, so a count
    based ETA would be wrong in both directions. The count and layers/s are shown beside it.
    """

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("[bold]auditing"),
            BarColumn(),
            TextColumn("{task.fields[count]}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[current]}", style="dim"),
            console=Console(stderr=True),
            transient=True,
        )
        self._task: Any = None  # rich's TaskID once started
        self._done = 0
        self._total = 0
        self._t0 = 0.0

    def start(self, total: int, work: float | None = None) -> None:
        self._total, self._done, self._t0 = total, 0, time.perf_counter()
        self._progress.start()
        self._task = self._progress.add_task(
            "audit", total=work if work else max(total, 1), current="", rate="", count=f"0/{total} layers"
        )

    def advance(self, name: str, work: float = 1.0) -> None:
        self._done += 1
        elapsed = time.perf_counter() - self._t0
        rate = f"{self._done / elapsed:.1f} layers/s" if elapsed > 0 else ""
        self._progress.update(self._task, advance=work, current=_escape(name[:40]), rate=rate,
                              count=f"{self._done}/{self._total} layers")

    def finish(self) -> None:
        self._progress.stop()


class BackgroundImports:
    """A progress display that also imports `modules` in a thread once the analysis has started.

    Why: a PDF report needs WeasyPrint, matplotlib and fontTools (~0.8 s of imports), and while
    the worker processes analyse layers this process only waits for their results. The thread
    starts at the display's `start`, which the scheduler calls after it has forked its workers
    (no fork happens while the thread imports); `join` before anything forks again (the plot
    workers). Everything else is passed to the wrapped display.
    """

    def __init__(self, inner: Any, modules: Sequence[str]) -> None:
        self._inner = inner
        self._modules = tuple(modules)
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        for name in self._modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - the renderer reports a missing library itself, later
                return

    def start(self, total: int, work: float | None = None) -> None:
        if self._thread is None and self._modules:
            self._thread = threading.Thread(target=self._run, name="wwaudit-imports", daemon=True)
            self._thread.start()
        self._inner.start(total, work)

    def advance(self, name: str, work: float = 1.0) -> None:
        self._inner.advance(name, work)

    def finish(self) -> None:
        self._inner.finish()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()


def make_progress(enabled: bool = True) -> "RichProgress | SilentProgress":
    """A bar when enabled and stderr is a terminal, else nothing."""
    if enabled and sys.stderr.isatty():
        return RichProgress()
    from wwaudit.engine.scheduler import SilentProgress

    return SilentProgress()


def _escape(text: str) -> str:
    """Layer names shown in the bar come from the model file: never interpreted as rich markup."""
    from rich.markup import escape

    return escape(text)


def print_summary(result: AuditResult) -> None:
    """Compact summary on stderr: verdict, model metrics and the analysed layers."""
    from rich.console import Console
    from rich.markup import escape  # names come from the model file: never read them as rich markup
    from rich.table import Table

    from wwaudit.formats.report.document import fmt
    from wwaudit.layer_metrics import TERMINAL_METRICS

    console = Console(stderr=True, highlight=False)
    s = result.summary
    colour = {"pass": "green", "review": "yellow", "fail": "red"}[result.verdict]
    table = Table(title=f"{escape(result.model.path)}  ({s['analysed']} analysed, {s['skipped']} skipped)", title_justify="left")
    for col in ("layer", "op", "N×M", *(m.label for m in TERMINAL_METRICS), "status"):
        table.add_column(col, justify="left" if col in ("layer", "op", "status") else "right")
    for layer in result.analysed_layers()[:60]:
        table.add_row(escape(layer.name[:48]), escape(layer.op), f"{layer.N}×{layer.M}",
                      *(fmt(layer.metric(m.name)) for m in TERMINAL_METRICS), layer.status)
    if len(result.analysed_layers()) > 60:
        table.caption = f"… {len(result.analysed_layers()) - 60} more layers in the JSON/report"
    console.print(table)
    console.print(f"mean α {fmt(s.get('alpha_mean'))}   α̂ {fmt(s.get('alpha_weighted_mean'))}   "
                  f"log-norm {fmt(s.get('log_norm_mean'))}   findings {len(result.findings)}")
    console.print(f"verdict: [bold {colour}]{result.verdict.upper()}[/]  " + escape("; ".join(result.verdict_reasons)))
