"""`wwaudit compare` and `--reference`: layer matching, per-pair differences, verdict, outputs.

One small MLP is trained once per module (torch, CPU, well under a second unloaded); every other
model is derived from it: the same file, a renamed copy, a fine-tune of one layer, an int8
quantization (onnxruntime), a copy with a NaN weight.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from wwaudit.records import LayerResult
from wwaudit.cli.main import main
from wwaudit.compare.diff import metric_deltas, pair_diff, subspace_k
from wwaudit.compare.engine import compare
from wwaudit.compare.matching import is_generated_name, match_layers

torch = pytest.importorskip("torch")

WIDTHS = (24, 64, 64, 48, 16)  # every layer has at least 8 eigenvalues
TUNED = 1  # index of the Linear layer that the fine-tune trains further


def _net() -> "torch.nn.Sequential":
    layers: list = []
    for i in range(len(WIDTHS) - 1):
        layers.append(torch.nn.Linear(WIDTHS[i], WIDTHS[i + 1]))
        if i < len(WIDTHS) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def _train(net: "torch.nn.Sequential", seed: int, steps: int, lr: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    teacher = torch.randn(WIDTHS[0], WIDTHS[-1], generator=gen)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        x = torch.randn(128, WIDTHS[0], generator=gen)
        loss = torch.nn.functional.cross_entropy(net(x), (x @ teacher).argmax(1))
        opt.zero_grad()
        loss.backward()
        opt.step()


def _export(net: "torch.nn.Sequential", path: Path) -> Path:
    torch.onnx.export(net, (torch.zeros(1, WIDTHS[0]),), str(path), dynamo=False)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("compare")
    torch.manual_seed(0)
    net = _net()
    _train(net, seed=1, steps=150, lr=3e-3)
    base = _export(net, folder / "base.onnx")
    tuned = copy.deepcopy(net)
    linears = [m for m in tuned if isinstance(m, torch.nn.Linear)]
    for i, lin in enumerate(linears):
        lin.requires_grad_(i == TUNED)
    _train(tuned, seed=2, steps=40, lr=1e-2)
    return {"base": base, "tuned": _export(tuned, folder / "tuned.onnx"), "folder": folder}


def _renamed(src: Path, dst: Path) -> Path:
    """The same weights under exporter-generated names (as another exporter version would write)."""
    model = onnx.load(src)
    mapping = {init.name: f"onnx::Gemm_{100 + i}" for i, init in enumerate(model.graph.initializer)}
    for init in model.graph.initializer:
        init.name = mapping[init.name]
    for i, node in enumerate(model.graph.node):
        node.name = f"val_{i}"
        node.input[:] = [mapping.get(name, name) for name in node.input]
    onnx.save(model, dst)
    return dst


def _ok_pairs(result) -> list:
    return [p for p in result.pairs if p.status == "ok"]


def test_model_against_itself(models: dict[str, Path]) -> None:
    result = compare(str(models["base"]), str(models["base"]))
    assert len(result.pairs) == len(WIDTHS) - 1
    assert all(p.match == "name" and p.base == p.candidate for p in result.pairs)
    assert result.unmatched_base == [] and result.unmatched_candidate == []
    for p in result.pairs:
        assert p.status == "ok"
        assert p.relative_distance == 0.0
        assert p.subspace_overlap == pytest.approx(1.0, abs=1e-9)
        assert p.top_sv_rel_change == 0.0
        assert p.diff["rank"] == 0
        assert all(v == 0.0 for v in p.delta.values() if v is not None)
        assert p.delta["log_norm"] == 0.0
    assert all(row["lower"] == "equal" for row in result.model_metrics if row["base"] is not None)
    assert result.verdict == "pass" and result.findings == []


def test_renamed_reexport_matches_by_structure(models: dict[str, Path]) -> None:
    renamed = _renamed(models["base"], models["folder"] / "renamed.onnx")
    result = compare(str(models["base"]), str(renamed))
    assert [p.match for p in result.pairs] == ["structure"] * (len(WIDTHS) - 1)
    # the pairs follow the graph: the i-th Gemm of one model is the i-th of the other
    assert [p.candidate for p in result.pairs] == [f"val_{2 * i}" for i in range(len(WIDTHS) - 1)]
    assert all(p.relative_distance == 0.0 for p in result.pairs)
    assert result.unmatched_base == [] and result.unmatched_candidate == []


def test_dynamo_reexport_matches_by_tensor_name(models: dict[str, Path], tmp_path: Path) -> None:
    """torch's two exporters name nodes differently (/0/Gemm vs node_linear) but keep parameter names."""
    net = _net()
    plain = _export(net, tmp_path / "plain.onnx")
    dynamo = tmp_path / "dynamo.onnx"
    torch.onnx.export(net, (torch.zeros(1, WIDTHS[0]),), str(dynamo), dynamo=True)
    result = compare(str(plain), str(dynamo))
    assert len(result.pairs) == len(WIDTHS) - 1
    assert all(p.match == "name" and p.base_tensor == p.candidate_tensor for p in result.pairs)
    assert any(p.base != p.candidate for p in result.pairs)  # the node names did differ
    assert all(p.relative_distance == 0.0 for p in result.pairs)


def test_size_gate_skips_pairs_without_reading_them(models: dict[str, Path]) -> None:
    from wwaudit.options import AuditOptions

    result = compare(str(models["base"]), str(models["tuned"]), AuditOptions(max_evals=30))
    by_status = {p.base: p.status for p in result.pairs}
    assert sorted(by_status.values()) == ["ok", "ok", "skipped", "skipped"]  # 24 and 16 eigenvalues stay
    assert all(p.relative_distance is None for p in result.pairs if p.status == "skipped")


def test_fine_tune_changes_are_concentrated_where_training_ran(models: dict[str, Path]) -> None:
    result = compare(str(models["base"]), str(models["tuned"]))
    pairs = _ok_pairs(result)
    assert len(pairs) == len(WIDTHS) - 1
    tuned, frozen = pairs[TUNED], [p for i, p in enumerate(pairs) if i != TUNED]
    assert tuned.relative_distance > 0.02
    assert tuned.subspace_overlap < 0.999
    assert tuned.diff["rank"] > 0 and tuned.top_sv_rel_change > 0
    assert tuned.delta["log_norm"] != 0.0
    for p in frozen:
        assert p.relative_distance == 0.0
        assert p.subspace_overlap == pytest.approx(1.0, abs=1e-9)
        assert p.diff["rank"] == 0
    assert max(result.pairs, key=lambda p: p.relative_distance or 0).base_id == tuned.base_id


def test_int8_quantization_small_deltas_and_reference(models: dict[str, Path], tmp_path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = tmp_path / "int8.onnx"
    quantize_dynamic(str(models["base"]), str(quantized), weight_type=QuantType.QInt8)
    result = compare(str(models["base"]), str(quantized))
    pairs = _ok_pairs(result)
    assert len(pairs) == len(WIDTHS) - 1, (result.unmatched_base, result.unmatched_candidate)
    assert all(p.match == "structure" and p.candidate_op != p.base_op for p in pairs)
    for p in pairs:
        assert 0 < p.relative_distance < 0.05
        assert p.subspace_overlap > 0.95
        assert p.top_sv_rel_change < 0.05
        assert abs(p.delta["log_spectral_norm"]) < 0.02
        if p.delta["alpha"] is not None:
            assert abs(p.delta["alpha"]) < 0.5
    assert result.verdict in ("pass", "review")

    out = tmp_path / "audit.json"
    assert main([str(quantized), "--reference", str(models["base"]), "--json", str(out), "--quiet"]) in (0, 1)
    doc = json.loads(out.read_text())
    assert doc["reference"]["model"]["path"] == "base.onnx"
    assert doc["reference"]["matched"] == len(WIDTHS) - 1
    with_ref = [layer for layer in doc["layers"] if "reference" in layer]
    assert len(with_ref) == len(WIDTHS) - 1
    by_base = {p.base: p for p in pairs}
    for layer in with_ref:
        ref = layer["reference"]
        assert {"layer", "match", "delta_alpha", "delta_log_spectral_norm", "top_sv_rel_change", "relative_distance"} <= set(ref)
        # one implementation: --reference reports exactly what compare measures
        assert ref["relative_distance"] == pytest.approx(by_base[ref["layer"]].relative_distance, rel=1e-9)
        assert ref["top_sv_rel_change"] < 0.05


def test_cli_json_contract_report_and_exit_codes(models: dict[str, Path], tmp_path: Path) -> None:
    a, b, html = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "diff.html"
    args = ["compare", str(models["base"]), str(models["tuned"]), "--quiet"]
    assert main([*args, "--json", str(a), "--report", str(html)]) == 0
    assert main([*args, "--json", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()
    doc = json.loads(a.read_text())
    assert doc["schema"] == "wwaudit-compare/1"
    assert {"path", "sha256"} <= set(doc["base"]) and doc["candidate"]["path"] == "tuned.onnx"
    pair = doc["pairs"][0]
    assert {"base", "candidate", "match", "N", "M", "delta", "relative_distance", "subspace_overlap"} <= set(pair)
    assert set(pair["delta"]) == {"alpha", "alpha_weighted", "log_norm", "log_spectral_norm", "mp_softrank"}
    assert doc["unmatched"] == {"base": [], "candidate": []}
    assert "one architecture" in doc["caveat"] and "not which model is better" in doc["caveat"]
    page = html.read_text()
    assert "Largest changes" in page and page.count("data:image/svg+xml;base64,") >= 3

    broken = onnx.load(models["base"])
    weights = numpy_helper.to_array(broken.graph.initializer[2]).copy()
    weights[0, 0] = np.nan
    broken.graph.initializer[2].CopyFrom(numpy_helper.from_array(weights, broken.graph.initializer[2].name))
    onnx.save(broken, tmp_path / "nan.onnx")
    assert main(["compare", str(models["base"]), str(tmp_path / "nan.onnx"), "--quiet", "--json", str(a)]) == 1
    assert any(f["rule"] == "CMP004" for f in json.loads(a.read_text())["findings"])


def test_cli_bad_input_is_one_line_exit_2(models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["compare", str(models["base"]), str(tmp_path / "missing.onnx"), "--quiet"]) == 2
    assert main(["compare", str(models["base"]), str(models["base"]), "--report", str(tmp_path / "x.txt")]) == 2
    assert main([str(models["base"]), "--reference", str(tmp_path / "missing.onnx"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("wwaudit: error:") for line in err)


def test_cli_keeps_the_audit_limits(models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "c.json"
    args = ["compare", str(models["base"]), str(models["tuned"]), "--quiet", "--json", str(out)]
    assert main([*args, "--timeout", "0.000001"]) == 2
    assert not out.exists() and list(tmp_path.iterdir()) == []
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "time limit" in err[0] and "--timeout" in err[0]
    assert main([*args, "--timeout", "soon"]) == 2 and "--timeout" in capsys.readouterr().err
    # a layer budget below every layer's working set: both sides skip every layer, with the reason;
    # nothing was compared, so the comparison is inconclusive (exit 3), never a pass
    assert main([*args, "--max-memory", "1K"]) == 3
    doc = json.loads(out.read_text())
    assert doc["verdict"]["verdict"] == "inconclusive"
    assert doc["pairs"] and all(pair["status"] == "skipped" for pair in doc["pairs"])
    assert all("--max-memory" in pair["reason"] for pair in doc["pairs"])


@pytest.mark.slow
def test_pdf_report(models: dict[str, Path], tmp_path: Path) -> None:
    from pypdf import PdfReader

    pdf = tmp_path / "diff.pdf"
    assert main(["compare", str(models["base"]), str(models["tuned"]), "--report", str(pdf), "--quiet"]) == 0
    text = "".join(page.extract_text() for page in PdfReader(pdf).pages)
    assert "Model comparison" in text and "tuned.onnx" in text


def _layer(i: int, name: str, n: int, m: int, tensor: str | None = None) -> LayerResult:
    return LayerResult(id=i, name=name, op="MatMul", tensor=tensor or f"onnx::MatMul_{100 + i}", kind="dense", N=n, M=m, slices=1)


def test_matching_survives_an_inserted_layer_and_distrusts_counter_names() -> None:
    base = [
        _layer(0, "MatMul_1", 64, 32),
        _layer(1, "MatMul_2", 64, 64),
        _layer(2, "MatMul_3", 64, 64),
        _layer(3, "head", 64, 10),
    ]
    # the candidate inserts a layer: its counter names shift, so MatMul_2 now names a different layer
    cand = [
        _layer(0, "MatMul_1", 64, 32),
        _layer(1, "MatMul_2", 128, 64),
        _layer(2, "MatMul_3", 64, 64),
        _layer(3, "MatMul_4", 64, 64),
        _layer(4, "head", 64, 10),
    ]
    m = match_layers(base, cand)
    assert [(p.base.id, p.candidate.id, p.method) for p in m.pairs] == [
        (0, 0, "structure"),
        (1, 2, "structure"),
        (2, 3, "structure"),
        (3, 4, "name"),
    ]
    assert [layer.id for layer in m.unmatched_candidate] == [1] and m.unmatched_base == []
    assert is_generated_name("onnx::MatMul_123") and is_generated_name("val_45") and is_generated_name("node_linear_2")
    assert not is_generated_name("encoder.layer.0.attention.self.query.weight")
    # same unique tensor name but a different shape: not comparable, so not a pair
    m = match_layers([_layer(0, "fc", 64, 32)], [_layer(0, "fc", 64, 16)])
    assert m.pairs == [] and len(m.unmatched_base) == len(m.unmatched_candidate) == 1


def test_difference_metrics_on_known_matrices() -> None:
    rng = np.random.default_rng(0)
    W = rng.standard_normal((80, 40))
    d = pair_diff([W], [2 * W], "dense", 1e-7)
    assert d.relative_distance == pytest.approx(1.0)
    assert d.subspace_overlap == pytest.approx(1.0)  # scaling keeps every direction
    assert d.top_sv_rel_change == pytest.approx(1.0)
    assert d.diff["rank"] == 40
    low_rank = np.outer(rng.standard_normal(80), rng.standard_normal(40))
    assert pair_diff([W], [W + 1e-3 * low_rank], "dense", 1e-7).diff["rank"] == 1
    unrelated = pair_diff([W], [rng.standard_normal((80, 40))], "dense", 1e-7)
    assert subspace_k(40) == 10 and unrelated.subspace_overlap_random == pytest.approx(0.25)
    assert unrelated.subspace_overlap < 0.6
    assert pair_diff([W], [W[:, :20]], "dense", 1e-7).status == "error"
    assert metric_deltas({"alpha": 3.0, "log_norm": 1.0}, {"alpha": 2.5, "log_norm": None}) == {
        "alpha": -0.5,
        "alpha_weighted": None,
        "log_norm": None,
        "log_spectral_norm": None,
        "mp_softrank": None,
    }


def test_unrelated_models_compare_inconclusive_and_ci_outputs(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Nothing matched is never a pass; the comparison writes the audit's CI formats under its policy."""
    from gating_models import power_law_matrix, save_model

    other = save_model(tmp_path / "other.onnx", {"x": power_law_matrix(300, 200, 3.0), "y": power_law_matrix(90, 70, 3.0)})
    out = tmp_path / "c.json"
    assert main(["compare", str(models["base"]), str(other), "--quiet", "--json", str(out)]) == 3
    assert json.loads(out.read_text())["verdict"]["verdict"] == "inconclusive"
    assert "inconclusive" in capsys.readouterr().err
    sarif, junit, md = tmp_path / "c.sarif", tmp_path / "c.xml", tmp_path / "c.md"
    policy = tmp_path / "p.toml"
    policy.write_text('[rules.CMP006]\nseverity = "warning"\n')
    code = main(
        [
            "compare",
            str(models["base"]),
            str(models["tuned"]),
            "--quiet",
            "--sarif",
            str(sarif),
            "--junit",
            str(junit),
            "--markdown",
            str(md),
            "--policy",
            str(policy),
            "--fail-on",
            "warning",
        ]
    )
    doc = json.loads(sarif.read_text())
    run = doc["runs"][0]
    assert run["properties"]["verdict"] in ("pass", "review", "fail") and run["properties"]["failOn"] == "warning"
    assert "CMP003" in {rule["id"] for rule in run["tool"]["driver"]["rules"]}
    assert code == (1 if run["properties"]["verdict"] == "fail" else 0)
    assert "<testsuites" in junit.read_text() and "wwaudit" in md.read_text()
