"""The evidence behind the calibrated verdict: structure metrics, the random reference, coverage.

Each test builds weights whose answer is known (copied rows, dead units, 2-bit rounding, a
re-initialised layer, a model with no weights) and checks the metric or verdict that must follow.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from gating_models import clean_weights, power_law_matrix, save_model
from wwaudit.cli.main import main
from wwaudit.engine.core import audit
from wwaudit.options import AuditOptions
from wwaudit.spectral.structure import structure_metrics

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def test_structure_metrics_count_copies_dead_units_gain_and_levels() -> None:
    rng = np.random.default_rng(0)
    W = rng.standard_normal((64, 32)).astype(np.float32)
    clean = structure_metrics([W])
    assert clean["dup_rows"] == 0 and clean["dup_cols"] == 0 and clean["dead_rows"] == 0
    assert clean["levels_per_row"] == 32
    assert clean["log_gain"] == pytest.approx(np.log10(np.sum(W.astype(np.float64) ** 2) / 64))
    copied = W.copy()
    copied[32:] = copied[:32]
    assert structure_metrics([copied])["dup_rows"] == 32
    copied_cols = W.copy()
    copied_cols[:, 16:] = copied_cols[:, :16]
    assert structure_metrics([copied_cols])["dup_cols"] == 16
    dead = W.copy()
    dead[:40] *= 1e-20  # decayed to numerically zero, not exactly zero
    out = structure_metrics([dead])
    assert out["dead_rows"] == 40 and out["dead_share"] == pytest.approx(40 / 64)
    assert out["dead_rank_loss"] == 32 - (64 - 40)  # 24 live rows leave rank 24 of 32
    assert out["dup_rows"] == 0  # the dead rows are not "copies" of each other
    scale = np.abs(W).max(axis=1, keepdims=True)
    ternary = np.round(W / scale) * scale
    assert structure_metrics([ternary])["levels_per_row"] <= 3


def test_structure_metrics_add_kernel_positions_and_ignore_one_value_rows() -> None:
    rng = np.random.default_rng(1)
    slices = [rng.standard_normal((16, 8)) for _ in range(9)]
    one = structure_metrics(slices)
    assert one["log_gain"] == pytest.approx(np.log10(sum(np.sum(s * s) for s in slices) / 16))
    vectors = [np.ones((40, 1)) for _ in range(4)]  # every row is 1 value long: copies by design
    assert structure_metrics(vectors)["dup_rows"] == 0


def test_vector_slices_have_no_random_reference(tmp_path: Path) -> None:
    """A conv with one input channel per position: a shuffle cannot change its spectrum (no traps)."""
    w = np.random.default_rng(2).standard_normal((40, 1, 9)).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="stft")
    graph = helper.make_graph([node], "g", [x], [y], [onnx.numpy_helper.from_array(w, "w")])
    path = tmp_path / "conv1.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    result = audit(str(path), AuditOptions(workers=1))
    layer = [layer for layer in result.layers if layer.analysed][0]
    assert layer.metric("num_traps") is None and layer.metric("rand_lambda_ratio") is None
    assert any("shuffled vector" in note for note in layer.notes)
    assert not [f for f in result.findings if f.rule == "WW004"]


def test_two_bit_rounding_in_float_storage_is_named(tmp_path: Path) -> None:
    weights = clean_weights(6)
    w = weights["dense2"].astype(np.float64)
    scale = np.abs(w).max(axis=1, keepdims=True)  # per output unit (rows of the (out x in) matrix)
    weights["dense2"] = (np.clip(np.round(w / scale * 1), -2, 1) * scale).astype(np.float32)
    found = audit(str(save_model(tmp_path / "q.onnx", weights)), AuditOptions(workers=1))
    assert ("WW015", "dense2") in [(f.rule, f.layer) for f in found.findings]


def test_layers_typo_and_missing_weights_are_inconclusive_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = save_model(tmp_path / "m.onnx", clean_weights(3))
    out, junit = tmp_path / "a.json", tmp_path / "a.xml"
    assert main([str(model), "--layers", "no-such-layer", "--json", str(out), "--junit", str(junit), "--quiet"]) == 3
    doc = json.loads(out.read_text())
    assert doc["verdict"]["verdict"] == "inconclusive" and doc["summary"]["weights_not_selected"] == 3
    assert doc["summary"]["weights_analysed"] == 0 and "nothing was audited" in doc["verdict"]["reasons"][0]
    assert 'name="coverage"' in junit.read_text() and 'type="inconclusive"' in junit.read_text()
    assert "inconclusive" in capsys.readouterr().err.lower()  # --quiet still says why the gate stopped
    # weights fed as graph inputs: the file holds no weight at all
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, [8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x, w], [y])
    inputs = tmp_path / "inputs.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), inputs)
    assert main([str(inputs), "--json", str(out), "--quiet"]) == 3
    doc = json.loads(out.read_text())
    assert doc["summary"]["weights"] == 0 and "no weight found" in doc["verdict"]["reasons"][0]
    # the same model with its weights audits to pass, every weight analysed
    assert main([str(model), "--json", str(out), "--quiet"]) == 0
    assert json.loads(out.read_text())["summary"]["coverage"] == 1.0


def test_samples_verdicts_follow_what_they_are() -> None:
    """Good samples pass; the under-trained one fails as random, the collapsed one is flagged."""
    verdicts = {}
    for name in ("digits_mlp_good", "digits_cnn_good", "digits_mlp_undertrained", "digits_mlp_collapsed"):
        result = audit(str(SAMPLES / f"{name}.onnx"), AuditOptions(workers=1))
        verdicts[name] = (result.verdict, {f.rule for f in result.findings if f.severity != "info"})
    assert verdicts["digits_mlp_good"] == ("pass", set()) and verdicts["digits_cnn_good"] == ("pass", set())
    assert verdicts["digits_mlp_undertrained"] == ("fail", {"WW012"})
    assert verdicts["digits_mlp_collapsed"][0] == "review" and "WW003" in verdicts["digits_mlp_collapsed"][1]


def test_over_trained_model_is_a_model_level_warning(tmp_path: Path) -> None:
    heavy = {f"h{i}": power_law_matrix(256, 128, 1.5 + 0.02 * i, seed=i) for i in range(3)}
    found = audit(str(save_model(tmp_path / "heavy.onnx", heavy)), AuditOptions(workers=1))
    assert [(f.rule, f.layer, f.severity) for f in found.findings if f.severity != "info"] == [("WW014", None, "warning")]


def test_rows_copied_from_another_layer_are_named(tmp_path: Path) -> None:
    weights = clean_weights(6)
    pasted = weights["dense4"].copy()
    pasted[:16] = weights["dense1"][:16]  # 16 output rows (of the (out x in) matrix) taken from dense1
    found = audit(str(save_model(tmp_path / "paste.onnx", dict(weights, dense4=pasted))), AuditOptions(workers=1))
    copied = {(f.rule, f.layer) for f in found.findings if f.rule == "WW017"}
    assert copied == {("WW017", "dense4"), ("WW017", "dense1")}
    message = next(f.message for f in found.findings if f.layer == "dense4" and f.rule == "WW017")
    assert "16 of its 128 output rows" in message and "dense1 (16)" in message
    clean = audit(str(save_model(tmp_path / "clean.onnx", weights)), AuditOptions(workers=1))
    assert not [f for f in clean.findings if f.rule == "WW017"]


def test_unit_norm_z_is_null_for_iid_elements_and_far_for_unit_scales() -> None:
    """Uniform and Gaussian random matrices score about 0; per-unit scales and equalised rows do not."""
    rng = np.random.default_rng(11)
    gaussian = rng.standard_normal((256, 128))
    uniform = rng.uniform(-1, 1, (256, 128))
    assert abs(structure_metrics([gaussian])["unit_norm_z"]) < 4
    assert abs(structure_metrics([uniform])["unit_norm_z"]) < 4
    assert abs(structure_metrics([rng.standard_normal((32, 16)) for _ in range(9)])["unit_norm_z"]) < 4  # conv slices
    folded = gaussian * np.logspace(-0.5, 0.5, 256)[:, None]  # a folded BatchNorm's per-channel scale
    assert structure_metrics([folded])["unit_norm_z"] > 20
    equal_rows = gaussian / np.linalg.norm(gaussian, axis=1, keepdims=True)  # weight-normalised units
    assert structure_metrics([equal_rows])["unit_norm_z"] < -8
    assert structure_metrics([np.ones((3, 40))])["unit_norm_z"] is None  # fewer than MIN_UNITS units on each side


def _torch_mlp(weights: list[np.ndarray], path: Path) -> Path:
    """A torch Sequential of Linear layers holding `weights` ((out x in) each), exported to ONNX."""
    torch = pytest.importorskip("torch")
    layers = []
    for w in weights:
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w.astype(np.float32)))
        layers += [lin, torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers[:-1]).eval()
    torch.onnx.export(net, (torch.zeros(1, weights[0].shape[1]),), str(path), dynamo=False)
    return path


def test_random_looking_spectrum_with_structured_units_is_not_random_init(tmp_path: Path) -> None:
    """An intact layer whose spectrum matches its shuffle but whose units were equalised is no WW011/WW016;
    the same layer re-initialised (torch's default) is."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(3)
    trained = [power_law_matrix(128, 128, 3.0 + 0.1 * i, seed=20 + i).T for i in range(5)]
    raw = np.random.default_rng(4).standard_normal((128, 128))
    equalised = raw / np.linalg.norm(raw, axis=1, keepdims=True) * 0.9  # weight norm: every unit the same length
    intact = audit(str(_torch_mlp(trained[:2] + [equalised] + trained[2:], tmp_path / "intact.onnx")), AuditOptions(workers=1))
    layer = next(x for x in intact.layers if x.analysed and x.metric("unit_norm_z") is not None and x.metric("unit_norm_z") < -4)
    assert 0.85 <= layer.metric("rand_lambda_ratio") <= 1.1  # the spectrum alone says random
    assert [f.rule for f in intact.findings if f.severity != "info"] == [] and intact.verdict == "pass"
    fresh = torch.nn.Linear(128, 128).weight.detach().numpy()  # U(±1/√fan_in): never trained
    damaged = audit(str(_torch_mlp(trained[:2] + [fresh] + trained[2:], tmp_path / "reinit.onnx")), AuditOptions(workers=1))
    assert [(f.rule, f.layer) for f in damaged.findings if f.severity != "info"] == [("WW016", layer.name)]
    assert damaged.verdict == "fail"


def test_four_bit_rounding_in_float_storage_is_named(tmp_path: Path) -> None:
    """Round-to-nearest at 4 bits per output unit (15 levels) stored as float: WW015 names the layer."""
    weights = clean_weights(7)
    w = weights["dense2"].astype(np.float64)
    scale = np.abs(w).max(axis=1, keepdims=True) / 7
    weights["dense2"] = (np.clip(np.round(w / scale), -7, 7) * scale).astype(np.float32)
    found = audit(str(save_model(tmp_path / "q4.onnx", weights)), AuditOptions(workers=1))
    layer = {layer.name: layer for layer in found.layers}["dense2"]
    assert layer.metric("levels_per_row") <= 15 and layer.metric("level_share") < 0.5
    assert ("WW015", "dense2") in [(f.rule, f.layer) for f in found.findings]
    assert found.verdict != "pass"


def test_pruned_float_weights_are_not_taken_for_rounding(tmp_path: Path) -> None:
    """A unit with 95% zeros holds few distinct values by pruning, not rounding: every nonzero weight is
    its own value (level share 1.0), so WW015 stays silent although the levels are few."""
    weights = clean_weights(8)
    w = weights["dense2"].copy()
    rng = np.random.default_rng(0)
    keep = np.zeros(w.shape, dtype=bool)
    for row in keep:
        row[rng.choice(row.size, 3, replace=False)] = True  # 3 nonzero weights a unit: 4 levels with the zero
    weights["dense2"] = np.where(keep, w, 0).astype(np.float32)
    found = audit(str(save_model(tmp_path / "pruned.onnx", weights)), AuditOptions(workers=1))
    layer = {layer.name: layer for layer in found.layers}["dense2"]
    assert layer.metric("levels_per_row") <= 4 and layer.metric("level_share") == 1.0
    assert not [f for f in found.findings if f.rule == "WW015"]


def test_support_ratio_is_one_for_a_uniform_initialiser_only() -> None:
    """max|w| / (√3 RMS): 1 within √(0.2/n) standard errors for any U(−b, b), far above for Gaussian or heavy tails."""
    rng = np.random.default_rng(7)
    for shape, bound in (((128, 64), 1 / 8), ((64, 9, 32), 0.02)):
        uniform = rng.uniform(-bound, bound, shape)
        mats = [uniform] if len(shape) == 2 else [uniform[:, k] for k in range(shape[1])]  # conv: one slice per position
        ratio = structure_metrics(mats)["support_ratio"]
        assert abs(ratio - 1) < 4 * np.sqrt(0.2 / uniform.size)
    assert structure_metrics([rng.standard_normal((128, 64))])["support_ratio"] > 1.6
    assert structure_metrics([power_law_matrix(128, 64, 3.0, seed=8)])["support_ratio"] > 1.6
    assert structure_metrics([np.zeros((8, 8))])["support_ratio"] is None


def _trained_mlp(seed: int) -> list[np.ndarray]:
    """Weights ((out x in) each) of a small torch MLP trained with Adam on a learnable synthetic task."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(seed)
    sizes = [32, 96, 24, 96, 96, 10]  # a 24-wide bottleneck: too few eigenvalues (< 32) for the spectral test
    layers: list = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers[:-1])
    x = torch.randn(512, 32)
    y = (torch.tanh(x @ torch.randn(32, 16)) @ torch.randn(16, 10)).argmax(dim=1)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return [m.weight.detach().numpy().copy() for m in net if isinstance(m, torch.nn.Linear)]


def test_layer_left_at_torch_default_init_is_named_by_its_bounded_support(tmp_path: Path) -> None:
    """A trained MLP whose 24x96 bottleneck is reset to torch's default U(±1/√fan_in): too small for the spectral
    random test (24 eigenvalues), WW016 names it by its uniform support; the intact model and a Gaussian
    re-initialisation of the same layer are not named."""
    torch = pytest.importorskip("torch")
    trained = _trained_mlp(11)
    intact = audit(str(_torch_mlp(trained, tmp_path / "intact.onnx")), AuditOptions(workers=1))
    assert all(x.metric("support_ratio") > 1.2 for x in intact.layers if x.analysed)
    assert not [f for f in intact.findings if f.rule == "WW016"]
    torch.manual_seed(12)
    fresh = torch.nn.Linear(96, 24).weight.detach().numpy()  # never trained
    damaged = audit(str(_torch_mlp(trained[:1] + [fresh] + trained[2:], tmp_path / "reinit.onnx")), AuditOptions(workers=1))
    layer = [x for x in damaged.layers if x.analysed][1]
    assert layer.M == 24 and abs(layer.metric("support_ratio") - 1) < 4 * np.sqrt(0.2 / fresh.size)
    assert [(f.rule, f.layer) for f in damaged.findings if f.severity != "info"] == [("WW016", layer.name)]
    assert "bounded support of a uniform distribution" in next(f.message for f in damaged.findings if f.rule == "WW016")
    assert damaged.verdict == "fail"
    g = np.random.default_rng(13).standard_normal(fresh.shape)
    gaussian = g * np.linalg.norm(trained[1]) / np.linalg.norm(g)  # same norm, Gaussian: not bounded
    other = audit(str(_torch_mlp(trained[:1] + [gaussian] + trained[2:], tmp_path / "gauss.onnx")), AuditOptions(workers=1))
    assert not [f for f in other.findings if f.rule == "WW016"]


def test_bounded_but_coarse_weights_are_not_an_initialisation() -> None:
    """Ternary or clipped weights can fill a bounded support; the levels guard keeps them out of WW016."""
    from wwaudit.records import LayerResult
    from wwaudit.rules.findings import RULES_BY_ID
    from wwaudit.rules.relative import uniform_support

    p = RULES_BY_ID["WW016"].params
    base = dict(id=0, name="fc", op="Gemm", tensor="w", kind="dense", N=96, M=96, slices=1, shape=[96, 96], dtype="float32")
    uniform = LayerResult(**base, status="ok", metrics={"support_ratio": 1.0, "levels_per_row": 96})
    assert uniform_support(uniform, p) is not None
    ternary = LayerResult(**base, status="ok", metrics={"support_ratio": 1.0, "levels_per_row": 3})
    assert uniform_support(ternary, p) is None
    trained = LayerResult(**base, status="ok", metrics={"support_ratio": 1.4, "levels_per_row": 96})
    assert uniform_support(trained, p) is None
