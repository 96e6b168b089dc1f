"""What a CI log shows: the CLI run as CI runs it (no TTY, COLUMNS=80), read back as text."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
# a layer name as exporters write them: longer than any 80-column table cell
LONG = "/model.22/cv3.2/cv3.2.0/conv/Conv_with_a_name_longer_than_a_terminal_column"


def _collapsed(path: Path) -> Path:
    """One rank-10 256×256 layer under a long name (WW003 on it), one healthy random layer."""
    rng = np.random.default_rng(1)
    low = (rng.standard_normal((256, 10)) @ rng.standard_normal((10, 256)) / 16).astype(np.float32)
    ok = (rng.standard_normal((256, 64)) / 16).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name=LONG), helper.make_node("MatMul", ["h", "w2"], ["y"], name="fc2")],
        "m",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        [numpy_helper.from_array(low, "w1"), numpy_helper.from_array(ok, "w2")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _ci(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """The CLI as a CI job runs it: pipes (no TTY), an 80-column log, no colour."""
    env = {**os.environ, "COLUMNS": "80", "TERM": "dumb", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "wwaudit", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )


def _words(text: str) -> str:
    """Wrapped text as one line (what a reader reassembles)."""
    return " ".join(text.split())


def test_ci_log_shows_each_finding_in_full_and_the_files_written(tmp_path: Path) -> None:
    model = _collapsed(tmp_path / "m.onnx")
    out_json, out_sarif = tmp_path / "a.json", tmp_path / "a.sarif"
    proc = _ci(str(model), "--json", str(out_json), "--sarif", str(out_sarif), "--workers", "1")
    assert proc.returncode in (0, 1), proc.stderr
    import json

    findings = json.loads(out_json.read_text())["findings"]
    assert any(f["rule"] == "WW003" and f["layer"] == LONG for f in findings)
    lines = proc.stderr.splitlines()
    assert lines and max(len(line) for line in lines) <= 80, proc.stderr
    flat = _words(proc.stderr)
    # the long name is folded, never cut with an ellipsis
    assert "…" not in proc.stderr.replace("… ", "")
    assert LONG in proc.stderr.replace("\n", "").replace(" ", "") or LONG in flat.replace(" ", "")
    for f in findings:  # rule, layer and the whole message of each finding
        message = f["message"].removeprefix(f"{f['layer']}: ")
        assert f["rule"] in flat and _words(message) in flat, (f, proc.stderr)
    assert str(out_json) in proc.stderr.replace("\n", "") and str(out_sarif) in proc.stderr.replace("\n", "")
    assert any("findings" in line and "status" in line for line in lines[:6])
    assert "\x1b[" not in proc.stderr  # no escape codes in a log


def test_layer_with_a_warning_never_reads_ok(tmp_path: Path) -> None:
    from wwaudit.cli.progress import print_summary
    from wwaudit.engine.core import audit
    from wwaudit.options import AuditOptions
    from rich.console import Console

    result = audit(str(_collapsed(tmp_path / "m.onnx")), AuditOptions(workers=1, fast=True))
    buffer = io.StringIO()
    print_summary(result, [("x.pdf", "pdf")], console=Console(file=buffer, width=80, highlight=False))
    rows = [line for line in buffer.getvalue().splitlines() if line.startswith("│ /model") or "fc2" in line]
    first = rows[0]
    assert "WW003" in first and " ok " not in first and "warning" in first
    assert "wrote pdf: x.pdf" in buffer.getvalue()


def test_quiet_failing_gate_still_says_why(tmp_path: Path) -> None:
    model = _collapsed(tmp_path / "m.onnx")
    proc = _ci(str(model), "--quiet", "--fail-on", "warning", "--workers", "1", "--fast")
    assert proc.returncode == 1
    assert proc.stderr.startswith("verdict: FAIL") and "WW003" in proc.stderr
    passing = _ci(str(model), "--quiet", "--fail-on", "never", "--workers", "1", "--fast")
    assert passing.returncode == 0 and passing.stderr == ""


def test_help_names_the_commands_and_has_examples() -> None:
    proc = _ci("--help")
    assert proc.returncode == 0
    assert "wwaudit compare BASE CANDIDATE" in proc.stdout and "wwaudit rules" in proc.stdout
    assert "examples:" in proc.stdout and "wwaudit model.onnx --report audit.pdf" in proc.stdout
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80


def test_usage_errors_name_wwaudit_once() -> None:
    for args, where in ((["--bogus"], "wwaudit --help"), (["compare", "only-one.onnx"], "wwaudit compare --help")):
        proc = _ci(*args)
        assert proc.returncode == 2
        assert proc.stderr.count("wwaudit:") == 1 and proc.stderr.startswith("wwaudit: error:"), proc.stderr
        assert where in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_output_on_a_pseudo_file_system_says_why_plainly(tmp_path: Path) -> None:
    proc = _ci(str(REPO / "samples" / "digits_mlp_good.onnx"), "--json", "/proc/wwaudit-x.json")
    assert proc.returncode == 2
    assert "not writable" in proc.stderr and "No such file or directory" not in proc.stderr


def test_heartbeat_in_a_log_while_a_report_renders() -> None:
    from wwaudit.cli.progress import Heartbeat

    stream = io.StringIO()
    with Heartbeat("rendering r.pdf", interval=0.05, stream=stream):
        time.sleep(0.3)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "wwaudit: rendering r.pdf …"
    assert len(lines) >= 3 and all(line.startswith("wwaudit: still rendering r.pdf (") for line in lines[1:])
    quiet = io.StringIO()
    with Heartbeat("rendering r.pdf", enabled=False, interval=0.01, stream=quiet):
        time.sleep(0.05)
    assert quiet.getvalue() == ""


def test_cli_prints_the_heartbeat_for_a_pdf(tmp_path: Path) -> None:
    proc = _ci(str(REPO / "samples" / "digits_mlp_good.onnx"), "--report", str(tmp_path / "r.pdf"), "--fast", "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    assert f"wwaudit: rendering {tmp_path / 'r.pdf'} …" in proc.stderr
