"""Policy file: discovery, precedence (CLI > file > defaults), thresholds, ignores, fail-on, bad policies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gating_models import power_law_matrix, save_model
from wwaudit.rules.policy import Policy, find_policy_file, load_policy
from wwaudit.cli.main import main
from wwaudit.errors import UsageError


@pytest.fixture(scope="module")
def warn_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A healthy layer and a rank-collapsed one (WW003, a warning): exit 0 by default."""
    thin = power_law_matrix(128, 8, 3.0, seed=3) @ power_law_matrix(64, 8, 3.0, seed=4).T
    weights = {"clean": power_law_matrix(128, 64, 3.0), "head.thin": thin}
    return save_model(tmp_path_factory.mktemp("policy") / "warn.onnx", weights)


def _run(args: list[str], tmp_path: Path) -> tuple[int, dict]:
    out = tmp_path / "out.json"
    code = main([*args, "--json", str(out), "--quiet"])
    return code, (json.loads(out.read_text()) if out.exists() else {})


def test_discovery_walks_up_and_prefers_nearest(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (tmp_path / "wwaudit.toml").write_text('fail-on = "warning"\n')
    # a pyproject.toml without [tool.wwaudit] does not stop the walk
    (tmp_path / "a" / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert find_policy_file(str(deep)) == str(tmp_path / "wwaudit.toml")
    (tmp_path / "a" / "b" / "pyproject.toml").write_text('[tool.wwaudit]\nfail-on = "never"\n')
    assert find_policy_file(str(deep)) == str(tmp_path / "a" / "b" / "pyproject.toml")
    policy = load_policy(start=str(deep))
    assert policy.fail_on == "never" and policy.source.endswith("pyproject.toml")
    (tmp_path / "a" / "b" / "wwaudit.toml").write_text('fail-on = "info"\n')
    assert load_policy(start=str(deep)).fail_on == "info"  # wwaudit.toml beats pyproject.toml in one folder


def test_precedence_cli_over_file_over_defaults(warn_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, doc = _run([str(warn_model)], tmp_path)
    assert code == 0 and doc["verdict"]["verdict"] == "review"  # default fail-on error
    assert doc["options"]["policy"]["source"] is None and doc["options"]["policy"]["fail_on"] == "error"
    (tmp_path / "wwaudit.toml").write_text('fail-on = "warning"\n')
    code, doc = _run([str(warn_model)], tmp_path)
    assert code == 1 and doc["verdict"]["verdict"] == "fail"
    assert doc["options"]["policy"]["source"] == "wwaudit.toml"
    code, doc = _run([str(warn_model), "--fail-on", "error"], tmp_path)
    assert code == 0 and doc["options"]["policy"]["fail_on"] == "error"
    # an explicit --policy replaces discovery
    other = tmp_path / "strict.toml"
    other.write_text('[rules.WW003]\nseverity = "error"\n')
    code, doc = _run([str(warn_model), "--policy", str(other)], tmp_path)
    assert code == 1 and doc["findings"][0]["severity"] == "error"


def test_thresholds_disable_and_report_level(warn_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    policy = tmp_path / "wwaudit.toml"
    policy.write_text("[rules.WW003]\nmax-rank-loss-fraction = 0.95\n")
    code, doc = _run([str(warn_model)], tmp_path)
    assert [f for f in doc["findings"] if f["severity"] != "info"] == [] and doc["verdict"]["verdict"] == "pass"
    assert doc["options"]["policy"]["rules"]["WW003"]["params"] == {
        "max_rank_loss_fraction": 0.95,
        "min_rank_loss": 2.0,
        "max_dead_share": 0.5,
    }
    policy.write_text('disable = ["WW003"]\n')
    code, doc = _run([str(warn_model)], tmp_path)
    assert not [f for f in doc["findings"] if f["rule"] == "WW003"]
    assert doc["options"]["policy"]["rules"]["WW003"]["enabled"] is False
    policy.write_text('report-level = "error"\n')
    code, doc = _run([str(warn_model)], tmp_path)
    assert doc["findings"] == [] and code == 0
    policy.write_text("[rules.WW005]\nmax-D = 0.0\n")  # every fitted layer now has a "poor" fit (info)
    code, doc = _run([str(warn_model), "--fail-on", "info"], tmp_path)
    assert code == 1 and {"WW003", "WW005"} <= {f["rule"] for f in doc["findings"]}


def test_ignore_layers_waives_findings(warn_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wwaudit.toml").write_text('fail-on = "warning"\nignore-layers = ["^head\\\\."]\n')
    code, doc = _run([str(warn_model)], tmp_path)
    assert code == 0 and doc["findings"] == []
    waived = [(f["rule"], f["layer"], f["suppressed_by"]) for f in doc["suppressed"]]
    assert ("WW003", "head.thin", "policy") in waived and {layer for _, layer, _ in waived} == {"head.thin"}
    assert doc["summary"]["suppressed_policy"] == len(waived)


def test_effective_policy_is_echoed_deterministically_with_hash(tmp_path: Path) -> None:
    a = Policy(overrides={"WW001": {"alpha_min": 1.5}}, severities={"WW002": "error"})
    b = Policy(severities={"WW002": "error"}, overrides={"WW001": {"alpha_min": 1.5}})
    assert a.to_dict() == b.to_dict() and a.sha256() == b.sha256()
    assert a.sha256() != Policy().sha256()
    # restating a default (an int in the registry) is the same policy as leaving it out
    assert Policy(overrides={"WW004": {"max_traps": 0.0}}).sha256() == Policy().sha256()
    assert json.dumps(a.to_dict()) == json.dumps(b.to_dict())
    assert list(a.to_dict()["rules"]) == sorted(a.to_dict()["rules"])


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("fail-on = \n", "invalid TOML"),
        ('fail_on = "sometimes"\n', "fail-on must be one of"),
        ('colour = "red"\n', "unknown key 'colour'"),
        ('disable = ["WW999"]\n', "unknown rule 'WW999'"),
        ('[rules.WW001]\nseverity = "fatal"\n', "severity must be one of"),
        ('[rules.WW001]\nalpha-min = "two"\n', "must be a number"),
        ("[rules.WW001]\nalpha_max = 3\n", "unknown setting 'alpha_max'"),
        ('ignore-layers = ["(unclosed"]\n', "invalid regular expression"),
    ],
)
def test_bad_policy_is_one_line_exit_2(
    text: str, fragment: str, warn_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "bad.toml"
    policy.write_text(text)
    out = tmp_path / "never.json"
    assert main([str(warn_model), "--policy", str(policy), "--json", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_missing_policy_and_fail_on_never_do_not_hide_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "m.onnx"), "--policy", str(tmp_path / "nope.toml"), "--quiet"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.onnx"), "--fail-on", "never", "--quiet"]) == 2
    (tmp_path / "pyproject.toml").write_text("[tool.other]\n")
    with pytest.raises(UsageError, match="no \\[tool.wwaudit\\] table"):
        load_policy(str(tmp_path / "pyproject.toml"))


def test_readme_policy_example_is_valid() -> None:
    import re
    import tomllib

    from wwaudit.rules.policy import parse_policy

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"### Policy file.*?```toml\n(.*?)```", readme, re.S)
    assert block, "README lost its policy example"
    policy = parse_policy(tomllib.loads(block.group(1)), "README")
    assert policy.fail_on == "warning" and policy.params("WW001")["alpha_min"] == 1.5
    assert not policy.enabled("WW008") and not policy.enabled("WW009") and policy.severity("WW001") == "error"
