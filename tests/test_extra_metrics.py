"""The opt-in metrics (README, "Optional metrics"): parity with weightwatcher 0.7.7 on the same
weights where the reference computes them, the reference's bugs where we differ, and the
behaviour the options promise (off by default, columns only when asked for)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest

from gating_models import power_law_matrix, save_model
from wwaudit.engine.core import audit
from wwaudit.errors import UsageError
from wwaudit.layer_metrics import METRICS_BY_NAME, OPTIONAL_COLUMNS
from wwaudit.options import AuditOptions
from wwaudit.spectral.extra_metrics import alpha_hill, detx, fit_with_fingers, peak_of_esd, xmin_peak
from wwaudit.spectral.powerlaw_fit import fit_power_law
from wwaudit.spectral.trap_detail import participation_ratio

ALL_ON = dict(fix_fingers="clip_xmax", hill=True, detx=True, ww_extras=True, vectors=True)


def finger_esd(seed: int = 1079) -> np.ndarray:
    """A power-law ESD whose top eigenvalues are a cluster far above the tail: a 'finger'.

    With seed 1079 (found by a search for the reference's ALBERT-xxlarge anchor, α 6.88 plain
    and 3.0 clipped with one finger): α 5.59 plain, 2.80 after clip_xmax, one finger.
    """
    rng = np.random.default_rng(seed)
    m = int(rng.choice([64, 128, 256]))
    a = rng.uniform(2.5, 4)
    ev = (1 - (np.arange(m) + 0.5) / m) ** (-1 / (a - 1))
    k = int(rng.integers(2, 10))
    c = ev[-k - 1] * rng.uniform(1.2, 10)
    ev[-k:] = c * (1 + np.linspace(0, rng.uniform(0.05, 1.5), k))
    return np.sort(ev)


def matrix_with_esd(evals: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """An n × m float64 matrix whose WᵀW has exactly these eigenvalues (m = len(evals))."""
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((n, evals.size)))
    V, _ = np.linalg.qr(rng.standard_normal((evals.size, evals.size)))
    return (U * np.sqrt(evals)) @ V.T


# ---- finger fixing ------------------------------------------------------------------------


def test_clip_xmax_removes_a_finger() -> None:
    ev = finger_esd()
    plain = fit_power_law(ev)
    fit, cols = fit_with_fingers(ev, "clip_xmax")
    assert cols["raw_alpha"] == plain.alpha and plain.alpha is not None and plain.alpha > 5.5
    assert cols["num_fingers"] == 1
    assert fit.alpha is not None and 2.5 < fit.alpha < 3.1 and fit.alpha + 1.0 < plain.alpha
    # one finger: the reference drops the two largest eigenvalues (it never tries dropping one)
    assert fit.xmax == pytest.approx(ev[-3])
    assert fit.num_pl_spikes == int(np.count_nonzero(ev >= fit.xmin))  # the dropped ones still count


def test_clip_xmax_same_as_reference_on_random_spectra() -> None:
    """The reference's own fit_clipped_powerlaw on 150 spectra, about a fifth of them with fingers."""
    pytest.importorskip("weightwatcher")
    from weightwatcher.RMT_Util import fit_clipped_powerlaw

    logging.disable(logging.CRITICAL)
    with_fingers = 0
    try:
        for seed in range(150):
            rng = np.random.default_rng(seed)
            m = int(rng.choice([64, 256, 768]))
            ev = (1 - np.sort(rng.uniform(0, 1, m))) ** (-1 / (rng.uniform(2.2, 5) - 1))
            k = int(rng.integers(2, 12))
            ev[-k:] = ev[-k - 1] * rng.uniform(1.5, 30) * (1 + rng.uniform(0, rng.uniform(0.01, 0.3), k))
            ev = np.sort(ev)
            with contextlib.redirect_stdout(io.StringIO()):
                ref, ref_fingers, raw = fit_clipped_powerlaw(ev[ev > 1e-5])
            fit, cols = fit_with_fingers(ev, "clip_xmax")
            assert cols["num_fingers"] == ref_fingers, seed
            assert fit.alpha == pytest.approx(ref.alpha, rel=1e-9), seed
            assert fit.D == pytest.approx(ref.D, abs=1e-9) and fit.xmin == ref.xmin, seed
            assert cols["raw_alpha"] == pytest.approx(raw.alpha, rel=1e-9), seed
            with_fingers += ref_fingers > 0
    finally:
        logging.disable(logging.NOTSET)
    assert with_fingers >= 15


def test_xmin_peak_searches_near_the_peak() -> None:
    ev = finger_esd()
    peak = peak_of_esd(ev)
    assert peak is not None
    fit = xmin_peak(ev)
    assert fit.status == "ok" and fit.xmin is not None
    assert 0.95 * peak <= fit.xmin < 1.5 * peak
    # the candidates' arithmetic is the reference's: its WWFit computes α and D for every xmin,
    # and the best one inside the range is ours
    pytest.importorskip("weightwatcher")
    from weightwatcher.WW_powerlaw import WWFit

    with contextlib.redirect_stdout(io.StringIO()):
        ref = WWFit(ev[ev > 1e-5])
    inside = np.flatnonzero((ref.xmins >= 0.95 * peak) & (ref.xmins < 1.5 * peak))
    best = inside[np.argmin(ref.Ds[inside])]
    assert fit.xmin == ref.xmins[best] and fit.alpha == pytest.approx(ref.alphas[best], rel=1e-9)


def test_xmin_peak_fails_in_the_reference_with_its_default_package() -> None:
    """What we do not reproduce: 0.7.7's xmin_peak hands a (log10, linear) tuple to WWFit."""
    pytest.importorskip("weightwatcher")
    from weightwatcher.WW_powerlaw import WWFit

    data = finger_esd()
    with pytest.raises(ValueError):
        WWFit(data, xmin=(np.log10(0.95 * data[10]), 1.5 * data[10]))


# ---- Hill, detX ---------------------------------------------------------------------------


def test_alpha_hill_is_the_mle_at_the_median() -> None:
    ev = np.sort(np.random.default_rng(3).pareto(2.0, 400) + 1.0)  # density ∝ x^-3 above 1
    a = alpha_hill(ev)
    i = ev.size // 2
    assert a == pytest.approx(1 + (ev.size - i) / np.sum(np.log(ev[i:] / ev[i])))
    assert 2.6 < a < 3.4  # a Pareto sample: the estimator recovers its exponent
    assert alpha_hill(np.full(10, 2.0)) is None and alpha_hill(np.array([1.0])) is None


def test_detx_counts_the_tail_whose_product_crosses_one() -> None:
    ev = np.sort(np.random.default_rng(0).exponential(1.0, 200))
    out = detx(ev, num_pl_spikes=30)
    scaled = ev * ev.size / ev.sum()
    k = out["detX_num"]
    assert np.prod(scaled[-k:]) < 1.0 <= np.prod(scaled[-k + 1 :])  # the reference's count
    assert out["detX_val"] == ev[-k] and out["num_ERG_spikes"] == k and out["ERG_gap"] == k - 30
    # products as log sums: 5000 eigenvalues of 1e3 overflow the reference's np.prod, not us
    big = np.concatenate([np.full(100, 1e-3), np.linspace(1e3, 2e3, 5000)])
    assert detx(big, None)["detX_num"] > 5000 and detx(big, None)["ERG_gap"] is None
    assert detx(np.full(5, 1.0), 3)["detX_num"] == 0


def test_detx_same_as_reference() -> None:
    pytest.importorskip("weightwatcher")
    from weightwatcher.RMT_Util import detX_constraint, rescale_eigenvalues

    for seed in range(20):
        ev = np.sort(np.random.default_rng(seed).exponential(1.0, 50 + 10 * seed) ** (1 + seed % 3))
        scaled, _ = rescale_eigenvalues(ev)
        num, idx = detX_constraint(scaled, rescale=False)
        ours = detx(ev, None)
        assert ours["detX_num"] == num and ours["detX_val"] == pytest.approx(ev[idx], rel=1e-12)


# ---- per-trap detail ----------------------------------------------------------------------


def test_trap_detail_finds_planted_large_elements(tmp_path: Path) -> None:
    W = np.random.default_rng(5).standard_normal((256, 128)).astype(np.float32) / 16
    W[17, 40] = 12.0  # an element far out of the distribution: a correlation trap
    path = str(save_model(tmp_path / "trap.onnx", {"w": W}))  # save_model takes the (out × in) matrix
    layer = next(lay for lay in audit(path, AuditOptions(workers=1, trap_detail=True)).layers if lay.tensor == "w")
    assert layer.metric("num_traps") >= 1
    assert layer.metric("trap_rows")[0] == 17 and layer.metric("trap_cols")[0] == 40
    assert layer.metric("trap_localization")[0] < 0.05  # on one row and one column
    assert layer.metric("trap_sigmas")[0] > 5  # far beyond the bulk in every shuffle
    assert "row 17 col 40" in layer.metric("trap_summary")
    default = next(lay for lay in audit(path, AuditOptions(workers=1)).layers if lay.tensor == "w")
    assert default.metric("num_traps") == layer.metric("num_traps")  # the detail leaves the count alone
    assert "trap_rows" not in default.metrics


def test_participation_ratio_bounds() -> None:
    assert participation_ratio(np.eye(50)[3]) == pytest.approx(1 / 50)
    assert participation_ratio(np.ones(50)) == pytest.approx(1.0)


# ---- options, outputs ---------------------------------------------------------------------


def test_off_by_default_and_written_only_when_asked(tmp_path: Path) -> None:
    path = str(save_model(tmp_path / "m.onnx", {"a": power_law_matrix(128, 64, 3.0), "b": power_law_matrix(96, 48, 4.0, seed=1)}))
    plain = audit(path, AuditOptions(workers=1, fast=True))
    assert not any(set(OPTIONAL_COLUMNS) & set(layer.to_dict()) for layer in plain.layers)
    assert not set(plain.options) & {"fix_fingers", "hill", "detx", "ww_extras", "vectors", "trap_detail", "per_slice"}
    full = audit(path, AuditOptions(workers=1, trap_detail=True, per_slice=True, **ALL_ON))  # type: ignore[arg-type]
    assert full.options["fix_fingers"] == "clip_xmax" and full.options["hill"] is True
    for a, b in zip(plain.layers, full.layers):
        if a.status != "ok":
            continue
        row = b.to_dict()
        assert [k for k in row if k in OPTIONAL_COLUMNS] == list(OPTIONAL_COLUMNS)  # the list's order
        assert row["alpha_hill"] is not None and row["detX_num"] >= 1 and row["sv_min"] > 0
        assert row["tail_mean_loc_ratio"] is not None and isinstance(row["trap_rows"], list)
        assert a.metric("log_norm") == b.metric("log_norm")
        kinds = {"count": (int, np.integer), "real": (float, np.floating), "text": (str,), "list": (list,)}
        for name in OPTIONAL_COLUMNS:
            value = b.metrics[name]
            assert value is None or isinstance(value, kinds[METRICS_BY_NAME[name].kind]), (name, value)
    json.dumps(full.to_dict())  # every new value is JSON


def test_unknown_finger_mode_is_a_usage_error(tmp_path: Path) -> None:
    path = str(save_model(tmp_path / "m.onnx", {"a": power_law_matrix(64, 32, 3.0)}))
    with pytest.raises(UsageError, match="fix-fingers"):
        audit(path, AuditOptions(workers=1, fix_fingers="xmax_peak"))


# ---- parity with the reference on trained torch models ------------------------------------


@pytest.fixture(scope="module")
def reference_pairs(tmp_path_factory) -> dict:
    """For each model: the reference's details with every optional metric on, and our audit."""
    torch = pytest.importorskip("torch")
    weightwatcher = pytest.importorskip("weightwatcher")
    from test_parity import _trained

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    folder: Path = tmp_path_factory.mktemp("extra_parity")
    out = {}
    for name in ("mlp", "cnn", "transformer"):
        model, example = _trained(name)
        path = folder / f"{name}.onnx"
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(path), dynamo=True, external_data=False, verbose=False)
            details = weightwatcher.WeightWatcher(model=model).analyze(
                fix_fingers="clip_xmax", detX=True, randomize=True, vectors=True, mp_fit=True
            )
        out[name] = (details, audit(str(path), AuditOptions(workers=1, **ALL_ON)), model)  # type: ignore[arg-type]
    return out


def _pairs(details, result):
    from test_parity import _match

    for _, row in details.iterrows():
        yield row, _match(row, result.layers)


def _same_vector_metrics(row, m: dict, model) -> None:
    """The 12 localisation columns equal the reference's, or the reference's tail lost the
    eigenvector at xmin to rounding (its eig puts it a hair below xmin; its own num_pl_spikes,
    from the SVD, counts it): then the reference equals ours with that vector in the bulk."""
    from wwaudit.spectral.vectors import VECTOR_KEYS, vector_metrics

    def same(ours: dict) -> bool:
        for key in VECTOR_KEYS:
            if np.isnan(row[key]):
                if ours[key] is not None:
                    return False
            elif not ours[key] == pytest.approx(row[key], rel=1e-6, abs=1e-12):
                return False
        return True

    if same(m):
        return
    weight = dict(model.named_modules())[row["longname"]].weight.detach().double().numpy()
    mats = [weight] if weight.ndim == 2 else [weight[:, :, i, j] for i in range(weight.shape[2]) for j in range(weight.shape[3])]
    assert same(vector_metrics(mats, m["num_pl_spikes"] - 1)), (row["longname"], {k: (m[k], row[k]) for k in VECTOR_KEYS})


@pytest.mark.parity
@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer"])
def test_optional_metrics_same_as_reference(reference_pairs, name: str) -> None:
    details, result, model = reference_pairs[name]
    fingered = 0
    for row, ours in _pairs(details, result):
        m = ours.metrics
        if row["status"] != "success" or ours.status != "ok":
            continue
        assert m["num_fingers"] == row["num_fingers"], row["longname"]
        assert abs(m["alpha"] - row["alpha"]) <= 0.01 and abs(m["raw_alpha"] - row["raw_alpha"]) <= 0.01
        fingered += m["num_fingers"] > 0
        assert m["detX_num"] == row["detX_num"] and m["num_ERG_spikes"] == row["num_ERG_spikes"]
        assert m["detX_val"] == pytest.approx(row["detX_val"], rel=1e-5)
        assert m["ERG_gap"] == row["ERG_gap"]
        if ours.slices == 1:  # the reference's sv_min is wrong for several slices (README)
            assert m["sv_min"] == pytest.approx(row["sv_min"], rel=1e-4)
        _same_vector_metrics(row, m, model)
        # shuffles differ (the reference's are unseeded): the same statistic, not the same draw
        if (ours.M or 0) >= 32:
            assert m["max_rand_eval"] == pytest.approx(row["max_rand_eval"], rel=0.25)
            assert m["ww_softrank"] == pytest.approx(row["ww_softrank"], rel=0.25)
        assert m["ww_softrank"] == pytest.approx(ours.random_evals[-1] / ours.evals[-1])
        assert m["ww_maxdist"] == pytest.approx(ours.evals[-1] - ours.random_evals[-1])
    assert name != "transformer" or fingered >= 1  # its linear1 has three fingers in both


@pytest.mark.parity
def test_alpha_hill_same_as_reference_candidate(reference_pairs) -> None:
    """0.7.7 has no Hill estimator; its fit computes the same MLE for every xmin (WWFit.alphas)."""
    from weightwatcher.WW_powerlaw import WWFit

    for _details, result, _model in reference_pairs.values():
        for layer in result.layers:
            if layer.status != "ok":
                continue
            nz = np.sort(layer.evals[layer.evals > 1e-5])
            if nz.size < 20:  # the reference's small-sample fit uses the (n − 1) estimator
                continue
            with contextlib.redirect_stdout(io.StringIO()):
                ref = WWFit(nz)
            assert layer.metric("alpha_hill") == pytest.approx(ref.alphas[nz.size // 2], rel=1e-9)


@pytest.mark.parity
def test_sv_min_of_a_conv_is_its_smallest(reference_pairs) -> None:
    """The reference keeps the largest of the slices' smallest singular values; we keep the smallest."""
    details, result, _ = reference_pairs["cnn"]
    row = details[details["longname"] == "c2"].iloc[0]
    ours = next(lay for lay in result.layers if lay.analysed and lay.slices == 9 and lay.M == 24)
    assert ours.metric("sv_min") == pytest.approx(np.sqrt(ours.evals[0]))
    assert ours.metric("sv_min") < 0.9 * row["sv_min"]


def test_the_anchor_reaches_the_audit(tmp_path: Path) -> None:
    """The finger spectrum as a weight: the audit's clip_xmax gives the fit the spectrum gives."""
    ev = finger_esd()
    W = matrix_with_esd(ev, 2 * ev.size).astype(np.float64)
    path = str(save_model(tmp_path / "finger.onnx", {"w": W.astype(np.float32)}))
    layer = next(lay for lay in audit(path, AuditOptions(workers=1, fast=True, fix_fingers="clip_xmax")).layers if lay.analysed)
    fit, cols = fit_with_fingers(ev, "clip_xmax")
    assert layer.metric("num_fingers") == cols["num_fingers"] == 1
    assert layer.metric("alpha") == pytest.approx(fit.alpha, abs=0.01)
    assert layer.metric("raw_alpha") == pytest.approx(cols["raw_alpha"], abs=0.05)


@pytest.mark.parity
def test_per_slice_same_as_reference_pool_false(tmp_path: Path) -> None:
    """The reference's pool=False rows of a Conv2D, slice by slice, against our slice_* lists
    (the reference's own unit test pins torchvision's VGG11 features.3 this way; we have no
    pretrained VGG, so the same comparison runs on a trained CNN exported to ONNX)."""
    torch = pytest.importorskip("torch")
    weightwatcher = pytest.importorskip("weightwatcher")
    from test_parity import _trained

    model, example = _trained("cnn")
    path = tmp_path / "cnn.onnx"
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=True, external_data=False, verbose=False)
        details = weightwatcher.WeightWatcher(model=model).analyze(pool=False)
    rows = details[details["longname"] == "c2"].sort_values("slice_id")
    assert list(rows["slice_id"]) == list(range(9))
    result = audit(str(path), AuditOptions(workers=1, fast=True, per_slice=True))
    c2 = next(lay for lay in result.layers if lay.analysed and lay.slices == 9 and lay.M == 24)
    assert c2.metric("slice_lambda_max") == pytest.approx(list(rows["lambda_max"]), rel=1e-6)
    assert np.max(np.abs(np.array(c2.metric("slice_alpha")) - rows["alpha"].to_numpy())) <= 0.01
    assert c2.metric("slice_D") == pytest.approx(list(rows["D"]), abs=1e-6)
    assert c2.metric("slice_num_pl_spikes") == list(rows["num_pl_spikes"])
    # the pooled row is the default one; a dense layer has no slices
    pooled = next(lay for lay in audit(str(path), AuditOptions(workers=1, fast=True)).layers if lay.id == c2.id)
    assert pooled.metric("alpha") == c2.metric("alpha") and "slice_alpha" not in pooled.metrics
    assert all(lay.metric("slice_alpha") is None for lay in result.layers if lay.analysed and lay.kind == "dense")
