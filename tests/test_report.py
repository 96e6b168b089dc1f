"""The audit report: one document model rendered as self-contained HTML and as a paged PDF.

A small real ONNX model (dense, conv, dead and hostile-named layers) is audited once; the tests
check what a reviewer relies on: every layer shown, the verdict and its evidence, plots present,
untrusted names escaped, nothing fetched from outside, stable PDF bytes, no partial file on failure.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import re
from html import escape as html_escape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from wwaudit.engine.core import audit
from wwaudit.records import AuditResult
from wwaudit.cli.main import main
from wwaudit.formats import RenderContext
from wwaudit.formats.report import html as html_format
from wwaudit.formats.report import pdf as pdf_format
from wwaudit.formats.report import plots
from wwaudit.formats.report.document import build_document, fmt, text_width

HOSTILE = '<script>alert("x")</script><img src="http://evil.example/p.png">'


def _heavy_tailed(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    """Noise plus a few strong directions: a spectrum with a tail, like a trained layer."""
    w = rng.standard_normal((n, m)) / np.sqrt(n)
    u, v = rng.standard_normal((n, 4)), rng.standard_normal((4, m))
    return (w + 3 * (u @ v) / np.sqrt(n * m)).astype(np.float32)


def _model(path: Path) -> Path:
    rng = np.random.default_rng(1)
    conv = rng.standard_normal((16, 8, 3, 3)).astype(np.float32) / 8
    inits = [
        numpy_helper.from_array(conv, "conv.weight"),
        numpy_helper.from_array(_heavy_tailed(rng, 144, 64), "fc1.weight"),
        numpy_helper.from_array(_heavy_tailed(rng, 64, 48), "w_hostile"),
        numpy_helper.from_array(np.zeros((48, 32), np.float32), "dead.weight"),
        numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "dead.bias"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv.weight"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["c", "shape"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc1.weight"], ["h1"], name="fc1"),
        helper.make_node("MatMul", ["h1", "w_hostile"], ["h2"], name=HOSTILE),
        helper.make_node("MatMul", ["h2", "dead.weight"], ["h3"], name="dead"),
        helper.make_node("Add", ["h3", "dead.bias"], ["y"], name="bias"),
    ]
    inits.append(numpy_helper.from_array(np.array([1, 144], np.int64), "shape"))
    graph = helper.make_graph(
        nodes,
        "report_test",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 3, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="report-test")
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _model(tmp_path_factory.mktemp("report") / "model.onnx")


@pytest.fixture(scope="module")
def result(model_path: Path) -> AuditResult:
    return audit(str(model_path))


@pytest.fixture(scope="module")
def html(result: AuditResult) -> str:
    return html_format.render(result, RenderContext(command="wwaudit model.onnx", generated="2026-01-01 00:00 UTC")).decode()


@pytest.fixture(scope="module")
def pdf_bytes(result: AuditResult) -> bytes:
    return pdf_format.render(result, RenderContext(command="wwaudit model.onnx", generated="2026-01-01 00:00 UTC"))


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(text: str) -> _Collector:
    parser = _Collector()
    parser.feed(text)
    parser.close()
    return parser


def test_fixture_model_has_the_cases_the_report_must_show(result: AuditResult) -> None:
    statuses = {layer.name: layer.status for layer in result.layers}
    assert statuses["conv"] == "ok" and statuses["fc1"] == "ok"
    assert statuses[HOSTILE] == "ok"
    assert statuses["dead"] == "error"
    assert "skipped" in statuses.values()
    assert result.verdict == "fail"


def test_html_shows_every_layer_verdict_and_findings(result: AuditResult, html: str) -> None:
    parsed = _parse(html)
    text = " ".join(parsed.text)
    assert "FAIL" in text
    rows = [attrs for tag, attrs in parsed.tags if tag == "tr" and (attrs.get("id") or "").startswith("layer-")]
    assert [r["id"] for r in rows] == [f"layer-{layer.id}" for layer in result.layers]
    for layer in result.layers:
        assert layer.name in text  # parsed text: hostile names come back as their literal characters
    for finding in result.findings:
        assert finding.rule in text
    assert "Why it matters." in text and "What to do." in text


def test_html_is_self_contained_and_escapes_untrusted_names(html: str) -> None:
    parsed = _parse(html)
    assert [tag for tag, _ in parsed.tags].count("script") == 1  # only the sort/filter enhancement
    for tag, attrs in parsed.tags:
        for key in ("src", "href", "action", "poster", "data"):
            value = attrs.get(key)
            if value is not None:
                assert value.startswith(("data:", "#")), (tag, key, value[:80])
    # the only URL text is the hostile layer name itself, shown escaped as text
    from markupsafe import escape

    assert not re.search(r"(?i)(?:https?|ftp|file)://", html.replace(str(escape(HOSTILE)), ""))
    assert not re.search(r"url\((?!data:)", html)
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert" in html


def test_html_has_model_plots_and_a_plot_for_each_layer_with_a_finding(result: AuditResult, html: str) -> None:
    images = [attrs["src"] for tag, attrs in _parse(html).tags if tag == "img"]
    assert all(src.startswith("data:image/svg+xml;base64,") for src in images)
    flagged = {f.layer_id for f in result.findings if f.layer_id is not None}
    with_evals = [layer for layer in result.layers if layer.id in flagged and layer.evals is not None]
    has_alpha = any(layer.metric("alpha") is not None for layer in result.layers)
    expected = len(with_evals) + 1 + (2 if has_alpha else 0)  # spectral norm always, alpha plots when fitted
    assert len(images) == expected


def test_plots_option_selects_the_layers_that_get_plots(result: AuditResult) -> None:
    analysed = [layer for layer in result.layers if layer.evals is not None]
    doc_all = build_document(result, RenderContext(plots="all"))
    doc_none = build_document(result, RenderContext(plots="none"))
    assert sorted(d["id"] for d in doc_all["details"] if d["plot"]) == sorted(layer.id for layer in analysed)
    assert doc_none["details"] == []
    with pytest.raises(ValueError):
        build_document(result, RenderContext(plots="some"))


def test_max_plots_keeps_the_most_severe_layers_and_says_how_many_are_left_out(result: AuditResult) -> None:
    flagged = {f.layer_id for f in result.findings if f.layer_id is not None}
    errors = {f.layer_id for f in result.findings if f.layer_id is not None and f.severity == "error"}
    assert len(flagged) >= 2 and errors and errors != flagged  # the fixture has an error and milder layers
    doc = build_document(result, RenderContext(plots="findings", max_plots=1))
    assert [d["id"] for d in doc["details"]] == [min(errors)]  # the error layer first
    assert doc["unplotted"] == len(flagged) - 1
    page = html_format.render(result, RenderContext(plots="findings", max_plots=1)).decode()
    assert f"{len(flagged) - 1} more" in page and "--max-plots 0" in page
    unlimited = build_document(result, RenderContext(plots="findings", max_plots=0))
    assert {d["id"] for d in unlimited["details"]} == flagged and unlimited["unplotted"] == 0
    # the limit is for --plots findings only: 'all' means all
    everything = build_document(result, RenderContext(plots="all", max_plots=1))
    assert len(everything["details"]) > 1 and everything["unplotted"] == 0


def test_finding_messages_do_not_repeat_the_layer_named_beside_them(result: AuditResult) -> None:
    doc = build_document(result, RenderContext(plots="findings", max_plots=0))
    layer_findings = [f for f in result.findings if f.layer and f.message.startswith(f"{f.layer}: ")]
    assert layer_findings  # the rules word their messages "<layer>: ..."
    shown = [item["message"] for group in doc["findings"] for item in group["items"]]
    shown += [f["message"] for d in doc["details"] for f in d["findings"]]
    for f in layer_findings:
        assert f.message[len(f.layer) + 2 :] in shown and f.message not in shown


def test_findings_say_each_message_once_with_every_layer_it_applies_to(result: AuditResult) -> None:
    repeated = copy.deepcopy(result)
    template = next(f for f in repeated.findings if f.layer_id is not None)
    others = [layer for layer in repeated.layers if layer.id != template.layer_id][:3]
    for layer in others:  # the same finding, worded the same, on three more layers
        repeated.findings.append(
            dataclasses.replace(
                template, layer=layer.name, layer_id=layer.id, message=template.message.replace(template.layer, layer.name, 1)
            )
        )
    doc = build_document(repeated, RenderContext(plots="none"))
    group = next(g for g in doc["findings"] if g["rule"] == template.rule and g["severity"] == template.severity)
    messages = [item["message"] for item in group["items"]]
    assert len(messages) == len(set(messages))
    item = next(i for i in group["items"] if template.message.endswith(i["message"]))
    assert [layer["anchor"] for layer in item["layers"]] == [f"layer-{template.layer_id}"] + [f"layer-{l.id}" for l in others]
    assert (
        group["count"]
        == sum(len(i["layers"]) for i in group["items"])
        == sum(f.rule == template.rule and f.severity == template.severity for f in repeated.findings)
    )
    page = html_format.document_html(doc)
    # the message is printed once for the four layers, each linked to its row of the layer table
    assert page.count(html_escape(item["message"])) == 1 and all(f'href="#layer-{l.id}"' in page for l in others)


def test_cli_rejects_a_negative_max_plots(model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(model_path), "--report", str(tmp_path / "r.html"), "--max-plots", "-1", "--quiet"]) == 2
    assert "--max-plots" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_pdf_fonts_are_subset_to_the_report_text() -> None:
    from wwaudit.formats.report import fonts

    page = '<p title="x">α = 2 &lt; 3 &#955;</p><img src="data:image/jpeg;base64,QUJDRE%E2%82%AC">'
    chars = fonts.used_characters(page)
    assert {"α", "<", "λ"} <= chars  # text and decoded entities
    assert "€" not in chars and "%" in chars  # data: URIs are not text (but '%' is printable ASCII)
    css = fonts.font_face_css(page)
    assert css.count("@font-face") == len(fonts.FACES) == 4
    assert len(css) < 400_000  # the whole DejaVu files would be ~3.2 MB of base64
    assert "font-style: italic" in css


def test_missing_spectral_metrics_are_shown_as_not_applicable(result: AuditResult) -> None:
    bare = copy.deepcopy(result)
    for layer in bare.layers:
        layer.metrics = {k: v for k, v in layer.metrics.items() if k in ("num_evals", "log_norm", "log_spectral_norm")}
        layer.random_evals = None
    doc = build_document(bare, RenderContext(plots="all"))
    assert doc["model_plots"]["alpha_depth"] is None and doc["model_plots"]["alpha_hist"] is None
    assert doc["model_plots"]["spectral_norm"] is not None
    alpha_cells = [cell[1] for row in doc["layers"] for cell in row["cells"] if cell[0] == "alpha"]
    assert set(alpha_cells) == {"–"}
    assert all(d["plot"] for d in doc["details"] if d["status"] == "ok")


def test_layer_plot_draws_fit_and_mp_bulk_from_the_metrics() -> None:
    rng = np.random.default_rng(0)
    evals = np.sort(np.concatenate([rng.uniform(0.5, 4.0, 200), [20.0, 35.0, 60.0]]))
    job = plots.LayerPlotJob(
        "7", evals, evals * 0.9, {"alpha": 2.5, "xmin": 3.0, "bulk_min": 0.5, "bulk_max": 4.0, "sigma_mp": 1.0, "num_spikes": 3}
    )
    svg = plots.layer_plot(job)
    assert svg is not None and svg.startswith("data:image/svg+xml;base64,")
    import base64

    text = base64.b64decode(svg.split(",", 1)[1]).decode()
    assert text.count("<path") > 20
    assert plots.layer_plot(job) == svg  # deterministic: same input, same bytes
    # a reused figure draws exactly as a fresh one, whatever was drawn before it (worker-count independence)
    other = plots.LayerPlotJob("9", evals[::2] * 3, None, {"alpha": 7.5, "xmin": 10.0})
    plots.layer_plot(other)
    after_other = plots.layer_plot(job)
    plots._LAYER_FIGURES.clear()
    assert plots.layer_plot(job) == after_other == svg
    empty = plots.LayerPlotJob("8", np.zeros(5))
    assert plots.layer_plot(empty) is None


def test_waived_findings_are_listed_apart_from_the_verdict(result: AuditResult) -> None:
    from wwaudit.records import Finding

    waived = copy.deepcopy(result)
    waived.suppressed = [
        Finding(
            "WW002", "warning", "fc1: alpha = 6.4 > 6", "fc1", 2, suppressed_by="baseline", justification="accepted in review 42"
        )
    ]
    text = " ".join(_parse(html_format.render(waived, RenderContext(plots="none")).decode()).text)
    assert "Waived findings" in text and "accepted in review 42" in text
    plain = " ".join(_parse(html_format.render(result, RenderContext(plots="none")).decode()).text)
    assert "Waived findings" not in plain


def test_parallel_plotting_gives_the_serial_result() -> None:
    rng = np.random.default_rng(3)
    jobs = [
        plots.LayerPlotJob(
            str(i),
            np.sort(rng.pareto(2.0 + i / 4, 64) + 0.1),
            None,
            {"alpha": 3.0 + i / 4, "xmin": 1.0},
            fmt="jpeg" if i % 2 else "svg",
        )
        for i in range(9)
    ]
    points = [plots.DepthPoint(i, str(i), "ok", 3.0 + i / 4, None, 1.0) for i in range(9)]
    serial = plots.render_all(points, jobs, workers=1)
    parallel = plots.render_all(points, jobs, workers=2)
    assert parallel == serial
    assert all(uri.startswith("data:image/jpeg") for key, uri in serial[1].items() if int(key) % 2)


def test_deferred_layer_plots_are_fetched_as_the_eager_bytes() -> None:
    """The PDF's layer plots are URLs drawn in the background: fetching one gives the bytes the
    eager (HTML) path embeds, unknown keys fail, and a layer without a plot gets no URL."""
    import base64
    import contextlib

    rng = np.random.default_rng(4)
    jobs = [
        plots.LayerPlotJob(str(i), np.sort(rng.pareto(2.5, 64) + 0.1), None, {"alpha": 3.0, "xmin": 1.0}, fmt="jpeg")
        for i in range(9)
    ]
    jobs.append(plots.LayerPlotJob("empty", np.zeros(5), None, {}, fmt="jpeg"))  # no positive eigenvalue
    points = [plots.DepthPoint(i, str(i), "ok", 3.0, None, 1.0) for i in range(9)]
    _model, eager = plots.render_all(points, jobs, fmt="jpeg", workers=1)
    with contextlib.ExitStack() as stack:
        renderer = stack.enter_context(plots.PlotRenderer(points, jobs, fmt="jpeg", workers=2, deferred=True))
        assert renderer.url("empty") is None and eager["empty"] is None
        for job in jobs[:-1]:
            url = renderer.url(job.key)
            assert url == f"{plots.PLOT_URL_SCHEME}:layer-{job.key}"
            data = renderer.fetch(url)
            assert data[:2] == b"\xff\xd8" and data == base64.b64decode(eager[job.key].split(",", 1)[1])
        with pytest.raises(KeyError):
            renderer.fetch(f"{plots.PLOT_URL_SCHEME}:nope")
        model = _model
        for name in plots.MODEL_PLOT_NAMES:
            data = renderer.fetch(renderer.model_url(name))
            assert data == base64.b64decode(model[name].split(",", 1)[1])


def test_pdf_lays_plots_out_before_they_are_drawn() -> None:
    """The PDF lays its pages out from each plot's size, known in advance (pdf._deferred_plots),
    and fetches a plot only when it draws the page: the size given must be the image's, for every
    kind of plot, or the layout would stretch it."""
    import contextlib
    import io

    from PIL import Image

    rng = np.random.default_rng(5)
    jobs = [
        plots.LayerPlotJob(str(i), np.sort(rng.pareto(2.5, 64) + 0.1), None, {"alpha": 3.0, "xmin": 1.0}, fmt="jpeg")
        for i in range(3)
    ]
    points = [plots.DepthPoint(i, str(i), "ok", 3.0, None, 1.0) for i in range(3)]
    with contextlib.ExitStack() as stack:
        renderer = stack.enter_context(plots.PlotRenderer(points, jobs, fmt="jpeg", workers=1, deferred=True))
        urls = renderer.urls()
        assert len(urls) == len(plots.MODEL_PLOT_NAMES) + len(jobs)
        fetched: list[str] = []
        original = renderer.fetch

        def fetch(url: str) -> bytes:
            fetched.append(url)
            return original(url)

        renderer.fetch = fetch  # type: ignore[method-assign]
        cache = pdf_format._deferred_plots(renderer)
        assert sorted(cache) == sorted(urls) and not fetched  # nothing fetched to lay the pages out
        for url in urls:
            width, height, ratio = cache[url].get_intrinsic_size(1, 16)
            assert (width, height) == Image.open(io.BytesIO(original(url))).size and ratio == width / height
        html = "".join(f'<img src="{url}" style="width: 100%">' for url in urls)
        out = pdf_format.html_to_pdf(f"<html><body>{html}</body></html>", b"t", plots=renderer)
        assert sorted(set(fetched)) == sorted(urls)  # each drawn once its page was
        from pypdf import PdfReader

        sizes = {img.image.size for page in PdfReader(io.BytesIO(out)).pages for img in page.images}
        assert sizes == {Image.open(io.BytesIO(original(url))).size for url in urls}  # embedded as drawn


def test_pdf_embeds_every_plot_of_the_document(result: AuditResult, pdf_bytes: bytes) -> None:
    from pypdf import PdfReader

    doc = build_document(result, RenderContext(command="wwaudit model.onnx", generated="2026-01-01 00:00 UTC"))
    expected = sum(1 for d in doc["details"] if d["plot"]) + sum(1 for uri in doc["model_plots"].values() if uri)
    reader = PdfReader(io.BytesIO(pdf_bytes))
    # WeasyPrint lists every image in every page's resources: count distinct image objects
    embedded = {image.indirect_reference.idnum for page in reader.pages for image in page.images}
    assert len(embedded) == expected >= 3


def test_document_adds_quantization_and_phase_columns_only_when_present(result: AuditResult) -> None:
    keys = [c[0] for c in build_document(result, RenderContext(plots="none"))["columns"]]
    marked = copy.deepcopy(result)
    marked.layers[1].quantization = "int8 per-channel (axis 0) QDQ"
    marked.layers[1].metrics["phase"] = "heavy-tailed"
    doc = build_document(marked, RenderContext(plots="none"))
    marked_keys = [c[0] for c in doc["columns"]]
    assert "quantization" not in keys and "quantization" in marked_keys
    assert "phase" in marked_keys
    row = doc["layers"][1]
    assert ("quantization", "int8 per-channel (axis 0) QDQ") in [(c[0], c[1]) for c in row["cells"]]


def test_pdf_layer_listing_puts_every_value_under_its_header(result: AuditResult) -> None:
    doc = build_document(result, RenderContext(plots="none"), for_pdf=True)
    header = doc["listing"]["header"]
    labels = {key: label for key, label, *_rest in doc["columns"]}
    by_id = {layer.id: layer for layer in result.layers}
    assert doc["weight_rows"]  # the listing's rows: weight layers; non-weight entries are counted apart
    for row in doc["weight_rows"]:
        layer = by_id[row["id"]]
        line = row["line"]
        assert line.startswith(layer.op or "–") and HOSTILE not in line  # the name has a cell of its own
        if layer.analysed:
            assert text_width(line) == text_width(header)
            for key in ("alpha", "D", "num_spikes"):
                # numbers are right-aligned: a value ends where its column's label ends
                end = header.index(labels[key]) + len(labels[key])
                assert line[:end].endswith(" " + fmt(layer.metric(key))), (key, line)
        else:
            start = header.index(labels["alpha"]) - (doc["listing"]["widths"]["alpha"] - len(labels["alpha"]))
            assert line[start:].startswith(layer.reason or "–")
    assert doc["listing"]["font_pt"] == "6.50pt"


def test_pdf_layer_listing_shrinks_then_wraps_a_line_too_wide_for_the_page(result: AuditResult) -> None:
    i = next(i for i, layer in enumerate(result.layers) if layer.analysed)  # a row of the listing
    wide = copy.deepcopy(result)
    wide.layers[i].quantization = "int8 per-channel QDQ"
    font = build_document(wide, RenderContext(plots="none"), for_pdf=True)["listing"]["font_pt"]
    wider = copy.deepcopy(result)
    wider.layers[i].quantization = "int8 per-channel (axis 0) QDQ " * 12
    doc = build_document(wider, RenderContext(plots="none"), for_pdf=True)
    assert 5.0 < float(font.removesuffix("pt")) < 6.5
    assert doc["listing"]["font_pt"] == "5.00pt"  # the floor: the cell wraps the line instead
    assert wider.layers[i].quantization.strip() in next(r for r in doc["weight_rows"] if r["id"] == wider.layers[i].id)["line"]


def test_pdf_prints_the_layer_listing_on_landscape_pages(result: AuditResult, pdf_bytes: bytes) -> None:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(pdf_bytes))
    orientation = {}
    for page in reader.pages:
        text = page.extract_text()
        landscape = float(page.mediabox.width) > float(page.mediabox.height)
        orientation[landscape] = orientation.get(landscape, "") + text
    assert "Layers" in orientation[True] and "log λmax  stable rank" in orientation[True]
    for layer in result.layers:
        if layer.name != HOSTILE:  # its name wraps across lines in the PDF text
            assert layer.name in orientation[True]
        if layer.analysed:
            assert fmt(layer.metric("alpha")) in orientation[True]
    assert "Verdict" in orientation[False]  # cover, findings, plots and method stay portrait


def test_pdf_has_pages_text_images_and_embedded_font(result: AuditResult, pdf_bytes: bytes) -> None:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(pdf_bytes))
    assert len(reader.pages) >= 3
    text = "\n".join(page.extract_text() for page in reader.pages)
    assert "FAIL" in text
    for name in ("conv", "fc1", "dead"):
        assert name in text
    assert "page 1 of" in text  # page numbers
    assert result.model.sha256[:16] in text  # running header carries the hash
    images = sum(len(page.images) for page in reader.pages)
    assert images >= 2
    fonts = set()
    for page in reader.pages:
        for font in (page["/Resources"].get("/Font") or {}).values():
            descriptor = font.get_object().get("/FontDescriptor")
            if descriptor is None and "/DescendantFonts" in font.get_object():
                descriptor = font.get_object()["/DescendantFonts"][0].get_object().get("/FontDescriptor")
            if descriptor is not None and "/FontFile2" in descriptor.get_object():
                fonts.add(str(font.get_object().get("/BaseFont")))
    # only the report's own DejaVu subsets (fonts.py), never a host font WeasyPrint would embed whole
    assert fonts and all("wwaudit-Sans" in f for f in fonts), fonts
    width, height = float(reader.pages[0].mediabox.width), float(reader.pages[0].mediabox.height)
    assert abs(width - 595.3) < 1 and abs(height - 841.9) < 1  # A4 by default


def test_pdf_letter_is_byte_identical_for_the_same_audit(result: AuditResult) -> None:
    """Same result, same process, same host and library versions: the same bytes (README, "The
    audit report"). Across hosts only the text and structure are promised, not the bytes."""
    from pypdf import PdfReader

    ctx = RenderContext(command="wwaudit model.onnx", generated="2026-01-01 00:00 UTC", page_size="Letter", plots="none")
    first = pdf_format.render(result, ctx)
    assert pdf_format.render(result, ctx) == first
    sizes = {
        (round(float(page.mediabox.width)), round(float(page.mediabox.height))) for page in PdfReader(io.BytesIO(first)).pages
    }
    assert sizes == {(612, 792), (792, 612)}  # the layer listing on landscape pages


def test_font_subsets_do_not_depend_on_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """fontTools stamps the wall-clock time into a saved font's head table unless told not to;
    that timestamp made two renders a second apart differ (issue 15)."""
    import base64
    import time

    from fontTools.ttLib import TTFont

    from wwaudit.formats.report import fonts

    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    monkeypatch.setattr(time, "time", lambda: 1.9e9)
    fonts._faces_css.cache_clear()  # subsets are cached per process: make each call subset anew
    early = fonts.font_face_css("Layer α = 2.5")
    monkeypatch.setattr(time, "time", lambda: 2.1e9)
    fonts._faces_css.cache_clear()
    assert fonts.font_face_css("Layer α = 2.5") == early
    face = re.search(r"base64,([^)]+)\)", early)
    assert face is not None
    from importlib import resources

    source = resources.files("matplotlib") / "mpl-data" / "fonts" / "ttf" / fonts.FACES[0][0]
    # the subset keeps the source font's timestamp rather than the (patched) time of the render
    assert (
        TTFont(io.BytesIO(base64.b64decode(face.group(1))))["head"].modified
        == TTFont(io.BytesIO(source.read_bytes()))["head"].modified
    )


def test_pdf_embeds_the_report_font_subsets_unchanged(result: AuditResult, monkeypatch: pytest.MonkeyPatch) -> None:
    """WeasyPrint subsets fonts with HarfBuzz-Subset where libharfbuzz-subset is installed and with
    fontTools elsewhere; their bytes differ. The PDF must carry fonts.py's subsets byte for byte,
    so that neither subsetter ever touches them and the host's libraries do not change the PDF."""
    import base64

    from pypdf import PdfReader

    from wwaudit.formats.report import fonts

    made: list[str] = []
    original = fonts.font_face_css

    def recording(document: str) -> str:
        made.append(original(document))
        return made[-1]

    monkeypatch.setattr(fonts, "font_face_css", recording)
    pdf = pdf_format.render(result, RenderContext(plots="none"))
    ours = {base64.b64decode(data) for data in re.findall(r"base64,([^)]+)\)", made[0])}
    embedded = set()
    for page in PdfReader(io.BytesIO(pdf)).pages:
        for font in (page["/Resources"].get("/Font") or {}).values():
            descriptor = font.get_object()["/DescendantFonts"][0].get_object()["/FontDescriptor"].get_object()
            embedded.add(descriptor["/FontFile2"].get_object().get_data())
    assert len(ours) == len(fonts.FACES) and embedded and embedded <= ours


@pytest.mark.slow
def test_pdf_bytes_are_the_same_in_another_process(result: AuditResult, tmp_path: Path) -> None:
    """The same result rendered in a fresh process (another hash seed, its own font configuration
    and plot workers) gives the same bytes on this host."""
    import os
    import pickle
    import subprocess
    import sys

    ctx = RenderContext(command="wwaudit model.onnx", generated="2026-01-01 00:00 UTC")
    (tmp_path / "result.pkl").write_bytes(pickle.dumps((result, ctx)))
    script = (
        "import pickle, sys; from wwaudit.formats.report import pdf as pdf_format; "
        "r, c = pickle.load(open(sys.argv[1], 'rb')); sys.stdout.buffer.write(pdf_format.render(r, c))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    env.pop("SOURCE_DATE_EPOCH", None)
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "result.pkl")],
        capture_output=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert proc.stdout[:5] == b"%PDF-" and proc.stdout == pdf_format.render(result, ctx)


def test_cli_writes_report_with_plots_option(model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit.html"
    assert main([str(model_path), "--report", str(out), "--plots", "all", "--quiet"]) == 1  # dead layer: fail
    images = [a for tag, a in _parse(out.read_text()).tags if tag == "img"]
    analysed = 3  # conv, fc1, hostile-named MatMul
    assert len(images) >= analysed + 1
    assert main([str(model_path), "--report", str(out), "--plots", "some", "--quiet"]) == 2


def test_rendering_failure_leaves_no_partial_file(
    model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*_args: object) -> str:
        raise RuntimeError("plot backend exploded")

    monkeypatch.setitem(plots._MODEL_PLOTS, "spectral_norm", broken)
    monkeypatch.setattr(plots, "_PARALLEL_MIN", 10**9)
    out = tmp_path / "audit.pdf"
    code = main([str(model_path), "--report", str(out), "--quiet"])
    assert code == 2
    assert "plot backend exploded" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
