"""The report's render child (formats/render_process.py): same bytes as rendering in-process,
failures come back as exceptions, and the child never outlives the command."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import wwaudit
from wwaudit import formats
from wwaudit.cli.main import main
from wwaudit.formats import render_process
from wwaudit.formats.report import prepare_html

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "digits_mlp_good.onnx"

pytestmark = pytest.mark.skipif(not render_process.fork_available(), reason="the render child needs fork")


def _gone(pid: int, seconds: float = 10.0) -> bool:
    """Whether process `pid` has ended (and been reaped, or is a zombie) within `seconds`."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().split(") ", 1)[1].startswith("Z"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def result() -> wwaudit.records.AuditResult:
    return wwaudit.audit(str(SAMPLE), workers=1)


def test_child_renders_the_same_bytes_as_this_process_and_ends_on_close(result) -> None:
    ctx = formats.RenderContext(command="wwaudit sample.onnx --report r.html", generated="2026-12-06", plots="all")
    html = formats.FORMATS["html"]
    with render_process.RenderProcess(prepare_html) as child:
        remote = child.renderer(html)
        assert remote.__name__ == html.__name__  # the CLI reads the format (heartbeat, summary) from it
        assert remote(result, ctx) == html(result, ctx)
        assert remote(result, ctx) == html(result, ctx)  # it serves more than one report
        process = child._process
    assert process.exitcode is not None


def test_failures_in_the_child_come_back_as_the_same_exceptions(result) -> None:
    with render_process.RenderProcess() as child:
        with pytest.raises(ValueError, match="plots mode 'sideways'"):
            child.render("report.html", result, formats.RenderContext(plots="sideways"))
        with pytest.raises(ModuleNotFoundError):
            child.render("no_such_format", result, formats.RenderContext())
        assert child.render("json_format", result, formats.RenderContext()) == formats.FORMATS["json"](
            result, formats.RenderContext()
        )


def test_an_exception_that_cannot_travel_comes_back_as_its_text() -> None:
    class Local(Exception):  # defined in a function: pickle cannot find it again
        pass

    sent = render_process._portable(Local("cannot travel"))
    assert isinstance(sent, RuntimeError) and str(sent) == "Local: cannot travel"
    kept = ValueError("travels")
    assert render_process._portable(kept) is kept


def test_a_dead_child_is_one_output_error(result) -> None:
    with render_process.RenderProcess() as child:
        child._process.kill()
        child._process.join()
        with pytest.raises(wwaudit.errors.OutputError, match="report process ended"):
            child.render("report.html", result, formats.RenderContext())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_child_dies_with_its_parent(tmp_path: Path) -> None:
    """The parent ends without any cleanup (as os._exit or a kill would): the kernel ends the child."""
    script = textwrap.dedent(
        """
        import os, sys, time
        from wwaudit.formats.render_process import RenderProcess
        child = RenderProcess(prepare=lambda: time.sleep(0.2))
        print(child._process.pid, flush=True)
        time.sleep(0.5)
        os._exit(0)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert _gone(int(proc.stdout.split()[0]))


def test_the_watchdog_kills_a_render_child_that_overruns(tmp_path: Path) -> None:
    """--timeout ends the whole run, the report's child included."""
    script = textwrap.dedent(
        """
        import time
        from wwaudit.engine.limits import Deadline, watchdog
        from wwaudit.formats.render_process import RenderProcess
        with watchdog(Deadline(0.5)):
            child = RenderProcess(prepare=lambda: time.sleep(120))
            print(child._process.pid, flush=True)
            time.sleep(120)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=100, cwd=tmp_path)
    assert proc.returncode == 2 and "time limit" in proc.stderr and "Traceback" not in proc.stderr
    assert _gone(int(proc.stdout.split()[0]))


def test_the_command_renders_its_report_in_a_child_that_is_gone_after(tmp_path: Path, monkeypatch) -> None:
    started: list[int] = []
    original = render_process.RenderProcess.__init__

    def spy(self, *args, **kwargs) -> None:
        original(self, *args, **kwargs)
        started.append(self._process.pid)

    monkeypatch.setattr(render_process.RenderProcess, "__init__", spy)
    out = tmp_path / "r.pdf"
    assert main([str(SAMPLE), "--report", str(out), "--json", str(tmp_path / "a.json"), "--quiet"]) == 0
    assert out.read_bytes().startswith(b"%PDF-") and len(started) == 1
    assert not multiprocessing.active_children() and _gone(started[0], 1.0)
    # no report, no child
    assert main([str(SAMPLE), "--json", str(tmp_path / "b.json"), "--quiet"]) == 0
    assert len(started) == 1
    assert os.listdir(tmp_path) and not [p for p in os.listdir(tmp_path) if p.startswith(".wwaudit-")]
