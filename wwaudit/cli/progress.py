"""Terminal display: a rich progress bar on stderr while layers are analysed, and a summary table.

Kept apart from the analysis: the core only calls start/advance/finish. The bar is shown only
when stderr is a terminal (no escape codes in CI logs); stdout carries machine output only.
"""

from __future__ import annotations

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
        self._progress.update(
            self._task, advance=work, current=_escape(name[:40]), rate=rate, count=f"{self._done}/{self._total} layers"
        )

    def finish(self) -> None:
        self._progress.stop()


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


# Below this console width the layer table keeps α and the rank loss only, so the columns that a
# CI log must show in full (layer name, findings) keep their room; 80 columns is the usual log width.
_NARROW = 110
_NARROW_METRICS = ("alpha", "rank_loss")
_SEVERITY_ORDER = {"info": 0, "warning": 1, "error": 2}


def print_summary(result: AuditResult, written: Sequence[tuple[str, str]] = (), console: Any = None) -> None:
    """Summary on stderr: the layers, every finding in full, the files written, the verdict.

    Why in this shape: CI logs are not terminals and are read at 80 columns, where a wide table
    is cut. So layer names fold instead of being cut, each finding is its own wrapped paragraph
    (rule, layer, message), and the output paths are listed: the log alone says what failed and
    where the evidence is. `written` is (path, format) per output file.
    """
    from rich.console import Console
    from rich.markup import escape  # names come from the model file: never read them as rich markup
    from rich.padding import Padding
    from rich.text import Text

    from wwaudit.formats.report.document import fmt

    console = console or Console(stderr=True, highlight=False)
    s = result.summary
    console.print(_layer_table(result, console.width))
    console.print(
        f"mean α {fmt(s.get('alpha_mean'))}   α̂ {fmt(s.get('alpha_weighted_mean'))}   "
        f"log-norm {fmt(s.get('log_norm_mean'))}   findings {len(result.findings)}"
        + (f"   suppressed {len(result.suppressed)}" if result.suppressed else "")
    )
    if result.findings:
        console.print("[bold]findings[/]")
    for f in result.findings:
        message = f.message.removeprefix(f"{f.layer}: ") if f.layer else f.message
        console.print(f"  {f.rule} {f.severity}  {escape(f.layer) if f.layer else '(whole model)'}", overflow="fold")
        console.print(Padding(Text(message), (0, 0, 0, 6), expand=False), overflow="fold")
    for path, kind in written:
        console.print(f"wrote {kind}: {escape(path)}", overflow="fold")
    share = s.get("coverage")
    console.print(
        f"weights analysed: {s.get('weights_analysed')} of {s.get('weights')}"
        + (f" ({share:.1%} of their parameters)" if isinstance(share, (int, float)) else "")
    )
    print_verdict(result, console)


def print_verdict(result: AuditResult, console: Any = None) -> None:
    """The verdict line alone: also printed with --quiet when the gate fails, so a failing CI job
    never ends without saying why."""
    from rich.console import Console
    from rich.markup import escape

    from wwaudit.formats.report.document import gate_note

    console = console or Console(stderr=True, highlight=False)
    colour = {"pass": "green", "review": "yellow", "inconclusive": "magenta", "fail": "red"}[result.verdict]
    console.print(f"verdict: [bold {colour}]{result.verdict.upper()}[/]  " + escape("; ".join(result.verdict_reasons)))
    console.print(escape(gate_note(result)), overflow="fold")


def _layer_table(result: AuditResult, width: int) -> Any:
    """The analysed layers (first 60) with their metrics, findings and worst severity."""
    from rich.markup import escape
    from rich.table import Table

    from wwaudit.formats.report.document import fmt
    from wwaudit.layer_metrics import TERMINAL_METRICS

    metrics = [m for m in TERMINAL_METRICS if width >= _NARROW or m.name in _NARROW_METRICS]
    by_layer: dict[int | None, list[Any]] = {}
    for f in result.findings:
        by_layer.setdefault(f.layer_id, []).append(f)
    s = result.summary
    table = Table(title=f"{escape(result.model.path)}  ({s['analysed']} analysed, {s['skipped']} skipped)", title_justify="left")
    table.add_column("layer", overflow="fold", ratio=1, min_width=12)
    table.add_column("N×M", justify="right", no_wrap=True)
    for m in metrics:
        table.add_column(m.label, justify="right", no_wrap=True)
    table.add_column("findings", overflow="fold", max_width=18)
    table.add_column("status", no_wrap=True)
    layers = result.analysed_layers()
    for layer in layers[:60]:
        found = by_layer.get(layer.id, [])
        rules = " ".join(sorted({f.rule for f in found}))
        worst = max((f.severity for f in found), key=_SEVERITY_ORDER.__getitem__, default=None)
        status = worst if worst and layer.status == "ok" else layer.status
        table.add_row(
            escape(layer.name), f"{layer.N}×{layer.M}", *(fmt(layer.metric(m.name)) for m in metrics), rules or "–", status
        )
    if len(layers) > 60:
        table.caption = f"… {len(layers) - 60} more layers in the JSON/report"
    return table


class Heartbeat:
    """Says that a slow output (a PDF or HTML report) is being written, and keeps saying it.

    Why: rendering a report takes seconds after the bar has gone, and a CI log that stays silent
    looks hung. On a terminal a rich spinner shows; elsewhere one line at the start and one every
    `interval` seconds (plain text, no escape codes). Disabled: does nothing.
    """

    def __init__(self, label: str, enabled: bool = True, interval: float = 5.0, stream: Any = None) -> None:
        self._label, self._enabled, self._interval = label, enabled, interval
        self._stream = stream or sys.stderr
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._status: Any = None
        self._t0 = 0.0

    def __enter__(self) -> "Heartbeat":
        self._t0 = time.perf_counter()
        if not self._enabled:
            return self
        if self._stream.isatty():
            from rich.console import Console

            self._status = Console(file=self._stream).status(_escape(self._label))
            self._status.start()
            return self
        print(f"wwaudit: {self._label} …", file=self._stream, flush=True)
        self._thread = threading.Thread(target=self._beat, name="wwaudit-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            elapsed = time.perf_counter() - self._t0
            print(f"wwaudit: still {self._label} ({elapsed:.0f} s)", file=self._stream, flush=True)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._status is not None:
            self._status.stop()
