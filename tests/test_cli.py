"""CLI contract: exit codes, one-line errors, deterministic JSON, outputs written atomically."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from wwaudit.cli.main import main

REPO = Path(__file__).resolve().parents[1]


def _mlp(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((64, 32)).astype(np.float32)
    w2 = rng.standard_normal((32, 10)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2"),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_json_is_deterministic_and_follows_contract(tmp_path: Path) -> None:
    model = _mlp(tmp_path / "m.onnx")
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert main([str(model), "--json", str(a), "--quiet"]) == 0
    assert main([str(model), "--json", str(b), "--quiet"]) == 0
    assert a.read_bytes() == b.read_bytes()
    doc = json.loads(a.read_text())
    assert doc["schema"] == "wwaudit/1"
    assert {"path", "sha256", "producer", "opset", "parameters"} <= set(doc["model"])
    assert doc["model"]["parameters"] == 64 * 32 + 32 * 10
    names = [layer["name"] for layer in doc["layers"] if layer["status"] == "ok"]
    assert names == ["fc1", "fc2"]
    fc1 = doc["layers"][0]
    assert (fc1["N"], fc1["M"]) == (64, 32)
    assert fc1["num_evals"] == 32
    # log_norm is log10 of the squared Frobenius norm (weightwatcher's convention)
    w1 = numpy_helper.to_array(onnx.load(model).graph.initializer[0]).astype(np.float64)
    assert abs(fc1["log_norm"] - np.log10((w1**2).sum())) < 1e-9
    assert abs(fc1["log_spectral_norm"] - np.log10(np.linalg.norm(w1, 2) ** 2)) < 1e-9


def test_missing_file_is_one_line_exit_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "wwaudit", str(tmp_path / "nope.onnx")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 2
    assert "no such file" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_unknown_report_extension_fails_before_analysis(tmp_path: Path, capsys) -> None:
    model = _mlp(tmp_path / "m.onnx")
    assert main([str(model), "--report", str(tmp_path / "r.docx"), "--quiet"]) == 2
    assert "unknown report extension" in capsys.readouterr().err
    assert not (tmp_path / "r.docx").exists()


def test_version_is_fast_path() -> None:
    proc = subprocess.run([sys.executable, "-m", "wwaudit", "--version"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0
    assert proc.stdout.startswith("wwaudit ")


def test_html_report_lists_every_layer(tmp_path: Path) -> None:
    model = _mlp(tmp_path / "m.onnx")
    out = tmp_path / "r.html"
    assert main([str(model), "--report", str(out), "--quiet"]) == 0
    html = out.read_text()
    assert "fc1" in html and "fc2" in html
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".wwaudit-")]


def test_pdf_report_from_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "audit.pdf"
    assert main([str(REPO / "samples" / "digits_mlp_good.onnx"), "--report", str(out), "--quiet"]) == 0
    assert out.read_bytes().startswith(b"%PDF-") and out.stat().st_size > 20_000
