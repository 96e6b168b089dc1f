"""The public Python API: wwaudit.audit / wwaudit.compare, result helpers, and the README example."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import wwaudit
from wwaudit.compare.result import CompareResult
from wwaudit.records import AuditResult, Finding, LayerResult, ModelInfo

REPO = Path(__file__).resolve().parents[1]


def _readme_example() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the Python API section has one example"
    return blocks[0]


def test_readme_python_api_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pandas")
    monkeypatch.chdir(REPO)
    namespace: dict = {}
    exec(compile(_readme_example(), "README.md#python-api", "exec"), namespace)
    result, details, diff, pairs = namespace["result"], namespace["details"], namespace["diff"], namespace["pairs"]
    assert isinstance(result, AuditResult) and isinstance(diff, CompareResult)
    # the values the example's comments promise
    assert result.verdict == "pass"
    assert [f.rule for f in result.findings] == ["WW005"]
    assert diff.verdict == "review"
    assert len(details) == len(result.layers) and "alpha" in details.columns
    assert len(pairs) == len(diff.layers) == len(diff.pairs) > 0
    analysed = details[details["status"] == "ok"]
    assert analysed["alpha"].notna().all()


def test_api_matches_the_cli_json(tmp_path: Path) -> None:
    """The API's result is the document the CLI writes: same options, same JSON."""
    from wwaudit.cli.main import main
    from wwaudit.formats.json_format import render

    model = str(REPO / "samples" / "digits_mlp_undertrained.onnx")
    assert main([model, "--json", str(tmp_path / "cli.json"), "--quiet", "--fast", "--workers", "1"]) in (0, 1)
    api = wwaudit.audit(model, fast=True, workers=1)
    assert render(api, None) == (tmp_path / "cli.json").read_bytes()


def test_unknown_option_is_a_type_error_that_lists_the_valid_ones() -> None:
    with pytest.raises(TypeError, match=r"unknown option\(s\) fats; options are: layers, fast"):
        wwaudit.audit("samples/digits_mlp_good.onnx", fats=True)
    with pytest.raises(TypeError, match=r"compare\(\) got unknown option\(s\) nope"):
        wwaudit.compare("a.onnx", "b.onnx", nope=1)


def test_bad_input_raises_the_documented_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(wwaudit.WwauditError) as info:
        wwaudit.audit(str(bad), workers=1)
    assert info.value.exit_code == 2


def _tiny_result() -> AuditResult:
    layer = LayerResult(
        id=0,
        name="<script>alert(1)</script>",
        op="MatMul",
        tensor="w",
        kind="dense",
        N=4,
        M=2,
        metrics={"alpha": 3.25, "D": float("nan")},
    )
    finding = Finding(rule="WW001", severity="warning", message="a <b>bold</b> claim", layer=layer.name, layer_id=0)
    model = ModelInfo(
        path="m&m.onnx",
        sha256="0" * 64,
        size_bytes=1,
        producer="",
        producer_version="",
        opset={},
        ir_version=9,
        parameters=8,
        graph_name="g",
    )
    return AuditResult(
        model=model, layers=[layer], findings=[finding], verdict="review", verdict_reasons=[], options={}, summary={}
    )


def test_repr_html_escapes_what_comes_from_the_model_file() -> None:
    page = _tiny_result()._repr_html_()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<b>bold</b>" not in page and "m&amp;m.onnx" in page
    assert "verdict <b>review</b>" in page and "<td>3.25</td>" in page and "<td>–</td>" in page  # NaN shows as a dash


def test_to_dataframe_without_pandas_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # `import pandas` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'wwaudit\[dataframe\]'"):
        _tiny_result().to_dataframe()


def test_public_names_resolve_and_import_stays_light() -> None:
    for name in wwaudit.__all__:
        assert getattr(wwaudit, name) is not None, name
    assert callable(wwaudit.audit) and callable(wwaudit.compare)
    with pytest.raises(AttributeError):
        wwaudit.no_such_name  # noqa: B018
    # `import wwaudit` (what the CLI's --help pays) loads neither numpy nor onnx
    code = "import sys, wwaudit; print(sorted(m for m in ('numpy', 'onnx', 'wwaudit.engine') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_compare_stays_callable_once_its_package_is_imported() -> None:
    """`wwaudit.compare` is both the package and the function: importing a submodule rebinds the
    name to the package, which must still answer the call."""
    code = (
        "import wwaudit.compare.result, wwaudit; f = wwaudit.compare; "
        "print(callable(f), f.compare.__name__, wwaudit.compare is f)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "compare", "True"]
