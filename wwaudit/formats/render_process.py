"""Reports rendered in a process forked at the start of the run.

Why: before an HTML or PDF report can start, its process imports WeasyPrint, matplotlib, fontTools
and jinja2 and subsets the report fonts (~1.5 s of CPU on a 2-core machine). In the first second of
a run the command only loads the model, on one core; during the analysis the layer workers take
every core. A child forked before the model is loaded does that preparation on the idle core, then
waits without using any CPU until the audit is done, and renders the report there. Measured on the
200-entry detector of issue 21 (README, "Report time").

The child is a plain fork with a pipe: the parent sends (format module, AuditResult, RenderContext)
and gets the bytes back, or the exception the renderer raised. Ctrl-C is the parent's to handle;
the child ignores it and ends when the pipe closes, when the parent kills it (the watchdog of
--timeout kills every child) or, on Linux, when the parent process ends at all.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import pickle
import signal
import sys
from typing import Any, Callable

from wwaudit.errors import OutputError


def fork_available() -> bool:
    """Whether this platform can fork (Linux and the BSDs; not Windows)."""
    return "fork" in multiprocessing.get_all_start_methods()


def die_with_parent() -> None:
    """Linux: have the kernel kill this process when its parent ends (prctl PR_SET_PDEATHSIG), so
    a render child or a plot worker never outlives a run that was killed. Elsewhere: nothing."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return


def _portable(exc: BaseException) -> BaseException:
    """The exception itself when it survives pickling (the CLI then handles it as if raised in
    the parent: one line, its exit code), else a RuntimeError with the same text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any failure to pickle means: send the text instead
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _serve(conn: Any, prepare: Callable[[], None] | None, parent: int) -> None:
    """The child: prepare, then render each job received until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()
    if os.getppid() != parent:  # the parent ended before prctl took effect
        return
    try:
        if prepare is not None:
            prepare()
    except Exception:  # noqa: BLE001 - a missing library is reported by the renderer itself, when it runs
        pass
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        module, result, ctx = job
        try:
            reply: tuple[str, Any] = ("ok", importlib.import_module(f"wwaudit.formats.{module}").render(result, ctx))
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent, which decides
            reply = ("error", _portable(exc))
        conn.send(reply)


class RenderProcess:
    """A forked child that runs `prepare` at once (formats.report.PREPARE: imports, template, font
    subsets), then renders reports on request.

    Use as a context manager around the whole run; leaving it ends the child. `renderer(r)` gives
    a renderer with r's name that renders in the child; r must be one of formats.FORMATS'
    renderers.
    """

    def __init__(self, prepare: Callable[[], None] | None = None) -> None:
        context = multiprocessing.get_context("fork")
        self._conn, child = context.Pipe()
        # not a daemon: a daemonic process may not start the plot workers
        self._process = context.Process(target=_serve, args=(child, prepare, os.getpid()), name="wwaudit-render", daemon=False)
        self._process.start()
        child.close()

    def render(self, module: str, result: Any, ctx: Any) -> bytes:
        """The bytes that formats.<module>.render(result, ctx) gives, rendered in the child; its
        exception, re-raised here, where it fails."""
        try:
            self._conn.send((module, result, ctx))
            status, payload = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise OutputError(
                f"the report process ended before the report was written (exit code {self._process.exitcode}): {exc}"
            ) from None
        if status == "error":
            raise payload
        return bytes(payload)

    def renderer(self, renderer: Callable[[Any, Any], bytes]) -> Callable[[Any, Any], bytes]:
        """`renderer`, run in the child (same __name__: the CLI reads the format from it)."""
        from wwaudit.formats import module_of

        module = module_of(renderer)

        def render(result: Any, ctx: Any) -> bytes:
            return self.render(module, result, ctx)

        render.__name__ = renderer.__name__
        return render

    def close(self) -> None:
        """End the child now: a report it was preparing for is no longer wanted."""
        self._conn.close()
        if self._process.is_alive():
            self._process.kill()
        self._process.join()

    def __enter__(self) -> "RenderProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
