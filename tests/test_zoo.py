"""Several models in one run (`wwaudit audit MODEL… --out-dir DIR`): one JSON per model, identical
to the single-model run; a summary row per model; a broken model is a row, not the end of the run;
the layer tasks of all models are scheduled together, largest first; exit code = worst verdict."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from types import SimpleNamespace

import pytest
from pypdf import PdfReader

from chain_models import matmul_chain

from wwaudit.cli.main import main
from wwaudit.engine.zoo import audit_many, model_paths, unique_names, worst_verdict, zoo_exit_code
from wwaudit.options import AuditOptions
from wwaudit.records import ZooEntry

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def _rows(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO((out / "summary.csv").read_text())))


def test_twenty_models_with_one_bad_file_in_one_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    zoo = tmp_path / "zoo"
    for i in range(19):
        matmul_chain(zoo / f"m{i:02d}.onnx", i, [(40 + 4 * i, 48), (48, 32 + 2 * i)])
    (zoo / "m19-broken.onnx").write_bytes(b"\x08\x07 not a protobuf model")
    out = tmp_path / "out"
    code = main(["audit", str(zoo), "--out-dir", str(out), "--workers", "2"])
    assert code == 2  # a model that could not be audited is the worst verdict
    rows = _rows(out)
    assert [r["model"] for r in rows] == [f"m{i:02d}" for i in range(19)] + ["m19-broken"]
    broken = rows[-1]
    assert broken["verdict"] == "error" and "not a valid ONNX model" in broken["reason"]
    assert all(r["verdict"] in ("pass", "review", "fail", "inconclusive") for r in rows[:-1])
    assert all(float(r["seconds"]) > 0 for r in rows[:-1]) and rows[-1]["alpha_mean"] == ""
    assert sum(1 for r in rows[:-1] if r["alpha_mean"] and float(r["alpha_mean"]) > 0) >= 15  # reliable fits
    assert sorted(p.name for p in out.glob("*.json")) == [f"m{i:02d}.json" for i in range(19)]
    html = (out / "summary.html").read_text()
    assert "m19-broken" in html and "not a valid ONNX model" in html and html.count("<tr>") == 21
    err = capsys.readouterr().err
    assert "worst verdict: ERROR over 20 models" in err
    # each model's JSON is the single-model run's, byte for byte
    for i in (0, 18):
        single = tmp_path / f"single{i}.json"
        assert main([str(zoo / f"m{i:02d}.onnx"), "--json", str(single), "--quiet"]) in (0, 1, 3)
        assert (out / f"m{i:02d}.json").read_bytes() == single.read_bytes()


def test_exit_code_is_the_worst_verdict(tmp_path: Path) -> None:
    good, bad = str(SAMPLES / "digits_mlp_good.onnx"), str(SAMPLES / "digits_mlp_undertrained.onnx")
    assert main(["audit", good, str(SAMPLES / "digits_cnn_good.onnx"), "--out-dir", str(tmp_path / "a"), "-q"]) == 0
    assert main(["audit", good, bad, "--out-dir", str(tmp_path / "b"), "-q"]) == 1
    assert [r["verdict"] for r in _rows(tmp_path / "b")] == ["pass", "fail"]
    missing = str(tmp_path / "missing.onnx")
    assert main(["audit", good, bad, missing, "--out-dir", str(tmp_path / "c"), "-q"]) == 2
    assert "missing.onnx" in _rows(tmp_path / "c")[2]["reason"]
    # every weight skipped for --max-evals: inconclusive (3), which a failing model outranks
    assert main(["audit", good, "--out-dir", str(tmp_path / "d"), "--max-evals", "1", "-q"]) == 3
    entries = [ZooEntry(n, n, result=SimpleNamespace(verdict=v)) for n, v in (("a", "pass"), ("b", "inconclusive"))]
    assert worst_verdict(entries) == "inconclusive" and zoo_exit_code(entries) == 3
    entries.append(ZooEntry("c", "c", result=SimpleNamespace(verdict="fail")))
    assert worst_verdict(entries) == "fail" and zoo_exit_code(entries) == 1
    entries.append(ZooEntry("d", "d", error="unreadable"))
    assert worst_verdict(entries) == "error" and zoo_exit_code(entries) == 2


class _Order:
    def __init__(self) -> None:
        self.names: list[str] = []

    def start(self, total: int, work: float | None = None) -> None:
        pass

    def advance(self, name: str, work: float = 1.0) -> None:
        self.names.append(name)

    def finish(self) -> None:
        pass


def test_layer_tasks_of_all_models_run_together_largest_first(tmp_path: Path) -> None:
    small = matmul_chain(tmp_path / "small.onnx", 1, [(64, 48), (48, 200)])
    big = matmul_chain(tmp_path / "big.onnx", 2, [(96, 160), (160, 30)])
    order = _Order()
    entries = audit_many([str(small), str(big)], AuditOptions(workers=1), order)
    assert [e.verdict != "error" for e in entries] == [True, True]
    # one run, largest layer first (cost N·M² + M³ with M the smaller side), the two models interleaved
    assert order.names == ["big/fc0", "small/fc1", "small/fc0", "big/fc1"]
    assert all(e.seconds > 0 for e in entries)


def test_folders_and_names(tmp_path: Path) -> None:
    for folder in ("bert", "gpt"):
        matmul_chain(tmp_path / "zoo" / folder / "model.onnx", 3, [(40, 30)])
    matmul_chain(tmp_path / "zoo" / "summary.onnx", 4, [(40, 30)])
    paths = model_paths([str(tmp_path / "zoo")])
    assert [Path(p).relative_to(tmp_path / "zoo").as_posix() for p in paths] == [
        "bert/model.onnx",
        "gpt/model.onnx",
        "summary.onnx",
    ]
    assert unique_names(paths) == ["bert-model", "gpt-model", "summary-2"]  # 'summary' is the summary's name
    assert unique_names(["a/x.onnx", "a/x.onnx"]) == ["a-x", "a-x-2"]
    (tmp_path / "empty").mkdir()
    assert main(["audit", str(tmp_path / "empty"), "--out-dir", str(tmp_path / "o")]) == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["a.onnx", "b.onnx"], "need --out-dir"),
        (["a.onnx", "--out-dir", "o", "--json", "x.json"], "--json: one model's option"),
        (["a.onnx", "--reports", "html"], "need --out-dir"),
        (["a.onnx", "b.onnx", "--out-dir", "o", "--reference", "f.onnx"], "--reference: one model's option"),
    ],
)
def test_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_reports_and_summary_pdf(tmp_path: Path) -> None:
    out = tmp_path / "out"
    models = [str(SAMPLES / "digits_mlp_good.onnx"), str(SAMPLES / "digits_mlp_undertrained.onnx")]
    assert main(["audit", *models, "--out-dir", str(out), "--reports", "html", "--summary-pdf", "-q"]) == 1
    assert "digits_mlp_undertrained" in (out / "digits_mlp_undertrained.html").read_text()
    text = "".join(page.extract_text() for page in PdfReader(out / "summary.pdf").pages)
    assert "digits_mlp_good" in text and "digits_mlp_undertrained" in text and "FAIL" in text
