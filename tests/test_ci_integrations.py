"""CI integrations: rule selection, waivers, --show-policy, GitHub annotations, attestations,
plot files, and the pre-commit hook and GitHub Action run the way pre-commit and GitHub run them."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from wwaudit.cli.main import main

REPO = Path(__file__).resolve().parents[1]
COLLAPSED = str(REPO / "samples" / "digits_mlp_collapsed.onnx")
GOOD = str(REPO / "samples" / "digits_mlp_good.onnx")
FAST = ["--fast", "--workers", "1", "--quiet"]
WAIVER = """
[[waivers]]
rule = "WW003"
layer = "^fc[12]$"
reason = "pruned on purpose, see ML-123"
owner = "alice@example.com"
"""


def _audit(tmp_path: Path, *args: str, model: str = COLLAPSED) -> dict:
    out = tmp_path / "a.json"
    assert main([model, "--json", str(out), *FAST, *args]) in (0, 1)
    return json.loads(out.read_text())


def test_select_and_ignore_take_ids_and_prefixes(tmp_path: Path) -> None:
    every = {f["rule"] for f in _audit(tmp_path)["findings"]}
    assert {"WW001", "WW003"} <= every
    only = {f["rule"] for f in _audit(tmp_path, "--select", "WW003")["findings"]}
    assert only == {"WW003"}
    rest = {f["rule"] for f in _audit(tmp_path, "--select", "WW00", "--ignore", "WW001,WW005")["findings"]}
    assert rest and not rest & {"WW001", "WW005"} and all(r.startswith("WW00") for r in rest)


def test_unknown_rule_code_is_a_usage_error(tmp_path: Path, capsys) -> None:
    assert main([COLLAPSED, "--ignore", "WW9", *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--ignore: WW9 names no rule" in err[0]


def test_report_level_drops_lower_findings(tmp_path: Path) -> None:
    assert any(f["severity"] == "info" for f in _audit(tmp_path)["findings"])
    doc = _audit(tmp_path, "--report-level", "warning")
    assert doc["findings"] and all(f["severity"] != "info" for f in doc["findings"])


def test_waiver_moves_matching_findings_to_suppressed_with_reason_and_owner(tmp_path: Path) -> None:
    policy = tmp_path / "wwaudit.toml"
    policy.write_text(WAIVER)
    doc = _audit(tmp_path, "--policy", str(policy))
    waived = [f for f in doc["suppressed"] if f["rule"] == "WW003"]
    assert sorted(f["layer"] for f in waived) == ["fc1", "fc2"]
    assert all(
        f["suppressed_by"] == "policy" and "ML-123" in f["justification"] and "alice@example.com" in f["justification"]
        for f in waived
    )
    # the waiver is per layer: fc3's rank collapse is still a finding
    assert [f["layer"] for f in doc["findings"] if f["rule"] == "WW003"] == ["fc3"]
    assert doc["options"]["policy"]["waivers"][0]["owner"] == "alice@example.com"


@pytest.mark.parametrize(
    "text, words",
    [
        ('[[waivers]]\nrule = "WW003"\nreason = "x"\n', "owner is required"),
        ('[[waivers]]\nrule = "WW003"\nowner = "bob"\nreason = "  "\n', "reason is required"),
        ('[[waivers]]\nrule = "WW77"\nowner = "bob"\nreason = "r"\n', "names no rule"),
        ('[[waivers]]\nrule = "WW003"\nowner = "bob"\nreason = "r"\nlayer = "("\n', "invalid regular expression"),
        ('[[waivers]]\nrule = "WW003"\nowner = "bob"\nreason = "r"\nuntil = "never"\n', "unknown key 'until'"),
    ],
)
def test_bad_waivers_stop_the_run(tmp_path: Path, capsys, text: str, words: str) -> None:
    policy = tmp_path / "p.toml"
    policy.write_text(text)
    assert main([COLLAPSED, "--policy", str(policy), *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err


def test_show_policy_prints_a_policy_file_that_reads_back_to_the_same_hash(tmp_path: Path, capsys) -> None:
    from wwaudit.rules.policy import load_policy, parse_policy

    policy = tmp_path / "wwaudit.toml"
    policy.write_text('fail-on = "warning"\n[rules.WW001]\nalpha-min = 1.5\n' + WAIVER)
    assert main(["--show-policy", "--policy", str(policy), "--ignore", "WW004"]) == 0
    text = capsys.readouterr().out
    effective = load_policy(str(policy), ignore=["WW004"])
    assert f"# sha256: {effective.sha256()}" in text
    reread = parse_policy(tomllib.loads(text), "(printed)")
    assert reread.sha256() == effective.sha256()
    assert "alpha-min = 1.5" in text and "[[waivers]]" in text and 'owner = "alice@example.com"' in text
    assert reread.enabled("WW004") is False and reread.fail_on == "warning"


def test_github_annotations_on_stdout(tmp_path: Path, capsys) -> None:
    assert main([COLLAPSED, "--github", "--workers", "1", "--fast", "--quiet", "--fail-on", "warning"]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    pattern = re.compile(r"^::(error|warning|notice) file=[^,:]+,title=[^:,]+::\S.*$")
    assert lines and all(pattern.match(line) for line in lines), lines
    assert any(line.startswith("::warning ") and "WW003 Rank collapse (fc1)" in line for line in lines)
    assert lines[-1].startswith("::error ") and "wwaudit FAIL" in lines[-1]


def test_format_github_is_ruffs_output_format_spelling(capsys) -> None:
    args = [COLLAPSED, "--workers", "1", "--fast", "--quiet", "--fail-on", "warning"]
    assert main([*args, "--github"]) == 1
    expected = capsys.readouterr().out
    assert expected.count("::") > 4
    for spelling in (["--format", "github"], ["--output-format", "github"], ["--format=github"]):
        assert main([*args, *spelling]) == 1
        assert capsys.readouterr().out == expected, spelling
    assert main([*args, "--format", "json"]) == 1
    assert json.loads(capsys.readouterr().out)["verdict"]["verdict"] == "fail"


def test_format_and_the_same_output_to_a_file_is_a_usage_error(tmp_path: Path, capsys) -> None:
    assert main([COLLAPSED, *FAST, "--format", "github", "--github", str(tmp_path / "a.txt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--format github" in err[0] and not list(tmp_path.iterdir())
    assert main([COLLAPSED, *FAST, "--format", "sarif", "--json", "-"]) == 2  # two outputs on stdout
    assert "stdout" in capsys.readouterr().err


def test_github_escaping_keeps_one_command_per_line() -> None:
    from wwaudit.formats.github_format import escape_data, escape_property

    assert escape_data("a%b\nc\rd") == "a%25b%0Ac%0Dd"
    assert escape_property("x: y, z") == "x%3A y%2C z"


def test_attestation_is_an_in_toto_statement_about_the_model(tmp_path: Path) -> None:
    att, out = tmp_path / "audit.intoto.json", tmp_path / "a.json"
    assert main([COLLAPSED, "--attestation", str(att), "--json", str(out), *FAST]) in (0, 1)
    statement = json.loads(att.read_text())
    doc = json.loads(out.read_text())
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["subject"] == [
        {"name": "digits_mlp_collapsed.onnx", "digest": {"sha256": hashlib.sha256(Path(COLLAPSED).read_bytes()).hexdigest()}}
    ]
    assert statement["predicateType"].startswith("https://") and "wwaudit" in statement["predicateType"]
    predicate = statement["predicate"]
    assert predicate["verdict"] == doc["verdict"]["verdict"] and predicate["reasons"] == doc["verdict"]["reasons"]
    assert predicate["policy"]["sha256"] == doc["options"]["policy"]["sha256"]
    assert predicate["result"]["digest"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    from wwaudit import __version__

    assert predicate["tool"] == {"name": "wwaudit", "version": __version__}
    assert predicate["options"]["fast"] is True and "policy" not in predicate["options"]


@pytest.mark.parametrize("fmt, magic", [("png", b"\x89PNG\r\n"), ("svg", b"<?xml")])
def test_plots_dir_writes_one_file_per_analysed_layer(tmp_path: Path, fmt: str, magic: bytes) -> None:
    folder = tmp_path / "plots"
    doc = _audit(tmp_path, "--plots-dir", str(folder), "--plots-format", fmt)
    analysed = [layer for layer in doc["layers"] if layer["status"] == "ok"]
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == sorted(f"{layer['id']:04d}_{layer['name']}.{fmt}" for layer in analysed)
    assert all(f.read_bytes().startswith(magic) and f.stat().st_size > 5000 for f in files)


def test_plots_dir_is_staged_under_the_timeout(tmp_path: Path, monkeypatch, capsys) -> None:
    """The plots overrun --timeout: no plot file, no plots folder and no other output is left."""
    import time

    from wwaudit.formats.report import plots

    real, calls = plots.layer_plot, []

    def slow_plot(job):
        calls.append(job.key)
        if len(calls) == 2:
            time.sleep(2.5)
        return real(job)

    monkeypatch.setattr(plots, "layer_plot", slow_plot)
    folder, out = tmp_path / "new" / "plots", tmp_path / "a.json"
    assert main([COLLAPSED, *FAST, "--json", str(out), "--plots-dir", str(folder), "--timeout", "2"]) == 2
    assert "while writing" in capsys.readouterr().err and len(calls) >= 2
    assert list(tmp_path.iterdir()) == []  # the folders it created are gone too


def test_staged_folder_is_removed_only_when_created_and_empty(tmp_path: Path) -> None:
    from wwaudit.formats import StagedOutputs

    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "mine.txt").write_text("x")
    staged = StagedOutputs()
    staged.add_folder(str(kept))
    staged.add_folder(str(tmp_path / "a" / "b"))
    staged.add(str(tmp_path / "a" / "b" / "p.png"), b"png")
    staged.add(str(kept / "p.png"), b"png")
    staged.commit()
    assert (tmp_path / "a" / "b" / "p.png").read_bytes() == b"png" and (kept / "p.png").exists()
    staged.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"] and [p.name for p in kept.iterdir()] == ["mine.txt"]


def test_plot_file_names_are_safe() -> None:
    from wwaudit.formats.report.plot_files import file_name

    assert file_name(3, "../../etc/passwd", "png") == "0003_etc_passwd.png"
    assert file_name(12, "/model.22/cv3/Conv", "svg") == "0012_model.22_cv3_Conv.svg"


def _venv_env(tmp_path: Path) -> dict[str, str]:
    """PATH and PYTHONPATH as a hook or Action environment would give them: `python` and a
    `wwaudit` console script that run this checkout."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, tail in (("python", ""), ("wwaudit", " -m wwaudit")):
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)}{tail} "$@"\n')
        shim.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(REPO), "COLUMNS": "80"}


def test_pre_commit_hook_runs_as_pre_commit_runs_it(tmp_path: Path) -> None:
    from pre_commit.clientlib import load_manifest

    (hook,) = load_manifest(str(REPO / ".pre-commit-hooks.yaml"))  # pre-commit's own schema check
    staged = [COLLAPSED, GOOD, str(REPO / "samples" / "README.md")]
    files = [f for f in staged if re.search(hook["files"], f)]  # what pre-commit passes
    assert files == [COLLAPSED, GOOD]
    command = [*shlex.split(hook["entry"]), *hook["args"], "--fast", "--workers", "1", "--fail-on", "warning", *files]
    proc = subprocess.run(command, capture_output=True, text=True, env=_venv_env(tmp_path), cwd=tmp_path, timeout=300)
    assert proc.returncode == 1, proc.stderr  # the collapsed model fails the commit
    assert f"wwaudit: {COLLAPSED}" in proc.stderr and f"wwaudit: {GOOD}" in proc.stderr  # both audited
    assert "verdict: FAIL" in proc.stderr and "verdict: PASS" in proc.stderr
    good = subprocess.run(
        [*shlex.split(hook["entry"]), "--fast", "--workers", "1", GOOD],
        capture_output=True,
        text=True,
        env=_venv_env(tmp_path),
        cwd=tmp_path,
        timeout=300,
    )
    assert good.returncode == 0, good.stderr


def _action_step_script(step: dict, inputs: dict[str, str]) -> tuple[str, dict[str, str]]:
    """A composite step's `run` and `env` with ${{ inputs.* }} filled in, as the runner does."""

    def fill(text: str) -> str:
        return re.sub(r"\$\{\{\s*inputs\.([\w-]+)\s*\}\}", lambda m: inputs[m.group(1)], text)

    return fill(step["run"]), {k: fill(str(v)) for k, v in step.get("env", {}).items()}


def test_github_action_steps_run_as_the_runner_runs_them(tmp_path: Path) -> None:
    import yaml

    action = yaml.safe_load((REPO / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    steps = {step["name"]: step for step in action["runs"]["steps"]}
    # the install step installs the action's own checkout (not run here: tests never pip install)
    assert '"${WWAUDIT_INSTALL:-$GITHUB_ACTION_PATH}"' in steps["Install wwaudit"]["run"]
    assert steps["Upload SARIF"]["uses"].startswith("github/codeql-action/upload-sarif@")
    inputs = {name: spec.get("default", "") for name, spec in action["inputs"].items()}
    inputs.update(
        models="samples/digits_mlp_*.onnx", args="--fast --workers 1 --fail-on warning", **{"output-dir": str(tmp_path / "out")}
    )
    gh = {name: tmp_path / name for name in ("summary.md", "output.txt")}
    for f in gh.values():
        f.write_text("")
    env = {
        **_venv_env(tmp_path),
        "GITHUB_STEP_SUMMARY": str(gh["summary.md"]),
        "GITHUB_OUTPUT": str(gh["output.txt"]),
        "GITHUB_ACTION_PATH": str(REPO),
    }
    script, step_env = _action_step_script(steps["Audit the models"], inputs)
    (tmp_path / "audit.sh").write_text(script)
    proc = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(tmp_path / "audit.sh")],
        capture_output=True,
        text=True,
        env={**env, **step_env},
        cwd=REPO,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr  # the step records the exit code; the Gate step fails
    outputs = dict(line.split("=", 1) for line in gh["output.txt"].read_text().splitlines())
    n = len(list((REPO / "samples").glob("digits_mlp_*.onnx")))
    assert outputs["exit-code"] == "1" and outputs["count"] == str(n) and n >= 2
    sarifs = sorted(Path(outputs["sarif-dir"]).glob("*.sarif"))
    assert len(sarifs) == n and all(json.loads(s.read_text())["version"] == "2.1.0" for s in sarifs)
    summary = gh["summary.md"].read_text()
    assert summary.count("wwaudit") >= n and "FAIL" in summary and "PASS" in summary
    assert any(line.startswith("::warning file=samples/digits_mlp_collapsed.onnx,") for line in proc.stdout.splitlines())
    assert len(list((tmp_path / "out").glob("*.intoto.json"))) == n
    gate, gate_env = _action_step_script(steps["Gate"], inputs)
    gate_env = {k: v.replace("${{ steps.audit.outputs.exit-code }}", outputs["exit-code"]) for k, v in gate_env.items()}
    assert subprocess.run(["bash", "-c", gate], env={**env, **gate_env}).returncode == 1
