"""Report layout defects, each with a test that would catch it again: text inside the page boxes
(pypdf), the layer map wrapping, notes, the PDF listing without biases, readable policy, bytes and
command, the plots' axes, the compare report; the HTML in headless Chromium when it is installed."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from wwaudit.engine.core import audit
from wwaudit.formats import RenderContext
from wwaudit.formats.report import html as html_format
from wwaudit.formats.report import pdf as pdf_format
from wwaudit.formats.report.document import build_document, command_args
from wwaudit.options import AuditOptions

pypdf = pytest.importorskip("pypdf")
REPO = Path(__file__).resolve().parents[1]
DEPTH = 130  # weight layers; with a bias each, 260 entries: more than one line of the layer map
COMMAND = (
    "wwaudit /very/long/path/to/some/models/folder/detector-v5-large.onnx --json audit.json "
    "--report audit.pdf --sarif audit.sarif --markdown summary.md --fail-on warning --max-plots 8 "
    "--policy ci/wwaudit.toml --workers 4"
)


def _deep(path: Path) -> Path:
    """A detector-like chain: DEPTH small MatMul layers, each followed by a bias Add."""
    rng = np.random.default_rng(3)
    nodes, inits, x = [], [], "x"
    for i in range(DEPTH):
        w, b = f"model.{i}.conv.weight", f"model.{i}.conv.bias"
        inits += [
            numpy_helper.from_array((rng.standard_normal((24, 24)) / 5).astype(np.float32), w),
            numpy_helper.from_array(rng.standard_normal(24).astype(np.float32), b),
        ]
        nodes += [
            helper.make_node("MatMul", [x, w], [f"m{i}"], name=f"/model.{i}/cv/conv/MatMul"),
            helper.make_node("Add", [f"m{i}", b], [f"a{i}"], name=f"/model.{i}/cv/Add"),
        ]
        x = f"a{i}"
    graph = helper.make_graph(
        nodes,
        "deep",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 24])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 24])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture(scope="module")
def deep(tmp_path_factory: pytest.TempPathFactory):
    return audit(str(_deep(tmp_path_factory.mktemp("deep") / "deep.onnx")), AuditOptions(fast=True, workers=1))


@pytest.fixture(scope="module")
def deep_pdf(deep) -> bytes:
    return pdf_format.render(deep, RenderContext(command=COMMAND, generated="2026-01-01 00:00 UTC", plots="none"))


@pytest.fixture(scope="module")
def deep_html(deep) -> str:
    return html_format.render(deep, RenderContext(command=COMMAND, plots="none")).decode()


@pytest.fixture(scope="module")
def cnn():
    return audit(str(REPO / "samples" / "digits_cnn_good.onnx"), AuditOptions(fast=True, workers=1))


def _pages(pdf: bytes) -> list[tuple[float, float, list[tuple[float, float, float, str]]]]:
    """Per page: width, height and each text run as (x, y, size, text) in page coordinates."""
    out = []
    for page in pypdf.PdfReader(io.BytesIO(pdf)).pages:
        runs: list[tuple[float, float, float, str]] = []
        page.extract_text(visitor_text=lambda text, cm, tm, _font, size, runs=runs: _run(runs, text, cm, tm, size))
        out.append((float(page.mediabox.width), float(page.mediabox.height), runs))
    return out


def _run(runs: list, text: str, cm: list[float], tm: list[float], size: float) -> None:
    """One text run in page coordinates: the text matrix times the current transformation."""
    if text.strip():
        x = tm[4] * cm[0] + tm[5] * cm[2] + cm[4]
        y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
        runs.append((x, y, size * abs(tm[0] * cm[0]) if tm[0] else size * abs(cm[0]), text))


def _text(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(pdf)).pages)


def _body_lines(pdf: bytes) -> list[list[tuple[float, bool, str]]]:
    """Per page, its body's lines top to bottom (running header and page number left out), each
    line as its runs (font size, bold, text)."""
    pages = []
    for page in pypdf.PdfReader(io.BytesIO(pdf)).pages:
        height, runs = float(page.mediabox.height), []

        def visit(text, cm, tm, font, size, runs=runs) -> None:
            if text.strip():
                y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
                scale = abs(tm[0] * cm[0]) if tm[0] else abs(cm[0])
                runs.append((round(y), size * scale, bool(font) and "Bold" in str(font.get("/BaseFont", "")), text.strip()))

        page.extract_text(visitor_text=visit)
        lines: dict[int, list[tuple[float, bool, str]]] = {}
        for y, size, bold, text in runs:
            if 34 < y < height - 42:  # report.css: the 17 mm top and 15 mm bottom margins hold header and footer
                lines.setdefault(y, []).append((size, bold, text))
        pages.append([lines[y] for y in sorted(lines, reverse=True)])
    return pages


def _page_break_defects(pdf: bytes) -> list[str]:
    """Orphaned headings (a heading as a page's last line), table headers left at a page's foot
    with one row or none while the table goes on overleaf, and a near-empty last page."""
    pages, defects = _body_lines(pdf), []
    for number, (lines, following) in enumerate(zip(pages, pages[1:]), start=1):
        if not lines:
            defects.append(f"page {number} has no text")
            continue
        if any(size >= 10 for size, _bold, _text in lines[-1]):  # h2 13 pt, h3 10.5 pt; body text <= 9.5 pt
            defects.append(f"page {number} ends with the heading {lines[-1][0][2]!r}")
        headers = [line for line in lines[-2:] if all(bold for _size, bold, _text in line)]
        if headers and following and following[0] == headers[0]:  # the header repeats: the table was split
            defects.append(f"page {number} ends with the table header {' '.join(t for *_x, t in headers[0])!r} and <= 1 row")
    if len(pages[-1]) < 5:
        defects.append(f"the last page holds {len(pages[-1])} line(s)")
    return defects


@pytest.mark.parametrize("size", ["A4", "Letter"])
def test_no_orphaned_headings_split_headers_or_near_empty_last_page(deep_pdf: bytes, cnn, size: str) -> None:
    # before report.css kept them together, the A4 ones had a lone rules-table header and row at a
    # page's foot and the sign-off line alone on the last page
    pdf = pdf_format.render(cnn, RenderContext(command=COMMAND, generated="2026-01-01", plots="findings", page_size=size))
    assert _page_break_defects(pdf) == []
    assert _page_break_defects(deep_pdf) == []


def test_page_break_check_sees_each_defect() -> None:
    """The check above on pages built to show each defect, so it cannot pass by seeing nothing."""
    spacer = '<div style="height: {}mm"></div>'
    line = "<p>a line of body text</p>"
    rows = "".join(f"<tr><td>row {i}</td><td>value</td></tr>" for i in range(40))
    cases = {
        "heading": line + spacer.format(253) + "<h3>Orphan</h3>" + "<p>" + "text " * 300 + "</p>" + line * 10,
        "table header": line
        + spacer.format(249)
        + f"<table><thead><tr><th>col</th><th>val</th></tr></thead><tbody>{rows}</tbody></table>"
        + line * 10,
        "last page": line * 10 + spacer.format(224) + line * 3,
    }
    css = (
        "<style>@page { size: A4; margin: 17mm 13mm 15mm 13mm } body { font: 9pt sans-serif; margin: 0 }"
        " h3 { font-size: 11pt; margin: 0; break-after: auto } p { margin: 0; orphans: 2 } th { font-weight: bold }"
        " tr { break-inside: auto; break-after: auto }</style>"
    )
    for name, body in cases.items():
        found = _page_break_defects(pdf_format.html_to_pdf(f"<html><head>{css}</head><body>{body}</body></html>", b"0" * 32))
        assert any(name in defect for defect in found), (name, found)


def test_every_text_run_starts_inside_its_page(deep_pdf: bytes) -> None:
    for width, height, runs in _pages(deep_pdf):
        assert runs
        for x, y, _size, text in runs:
            assert 0 <= x < width and 0 <= y <= height, (x, y, width, text)


def test_layer_map_wraps_in_html_and_pdf(deep, deep_html: str, deep_pdf: bytes) -> None:
    cells = re.search(r'<div class="layer-map">(.*?)</div>', deep_html, re.S).group(1)
    assert cells.count('class="cell') == len(deep.layers)
    assert "</a><a" not in cells  # whitespace between cells: a line can break there
    # in the PDF, the map's cells all lie on the page and span several lines
    page = next(p for p in _pages(deep_pdf) if any("Layer map" in t for *_xy, t in p[2]))
    width, _height, runs = page
    numbers = [(x, y, t.strip()) for x, y, _s, t in runs if t.strip().isdigit()]
    # the PDF's map shows the weight entries (the rows of its listing) and counts the others
    weights = build_document(deep, RenderContext(plots="none"), for_pdf=True)["weight_rows"]
    assert any(t == str(weights[-1]["id"]) for *_xy, t in numbers), "the map stops before the last weight"
    assert not {t for *_xy, t in numbers} & {str(layer.id) for layer in deep.layers if layer.id not in {r["id"] for r in weights}}
    assert f"The {len(deep.layers) - len(weights)} entries that are not weight matrices" in " ".join(
        " ".join(t for *_xy, t in runs).split()
    )
    rows = {round(y) for x, y, t in numbers if int(t) > 20}
    assert len(rows) >= 3 and all(x < width for x, _y, _t in numbers)


def test_layer_notes_in_html_and_pdf(cnn) -> None:
    notes = [n for layer in cnn.layers for n in layer.notes]
    assert any("BatchNorm" in n for n in notes)
    html = html_format.render(cnn, RenderContext(plots="all")).decode()
    pdf = _text(pdf_format.render(cnn, RenderContext(plots="all")))
    for note in notes:
        assert f'<div class="note">{note}</div>' in html.replace("&#39;", "'")
        assert " ".join(note.split()[:5]) in " ".join(pdf.split())


def test_pdf_listing_keeps_non_weights_apart(deep, deep_pdf: bytes) -> None:
    doc = build_document(deep, RenderContext(plots="none"), for_pdf=True)
    assert len(doc["weight_rows"]) == DEPTH and all(row["analysed"] for row in doc["weight_rows"])
    assert [(g["label"], g["count"]) for g in doc["non_weights"]] == [("biases, norm scales and other 1-D vectors", DEPTH)]
    text = " ".join(_text(deep_pdf).split())
    assert "Entries that are not weight matrices" in text
    assert f"biases, norm scales and other 1-D vectors {DEPTH}" in text
    assert "model.129.conv.bias" not in text  # no row per bias (the examples name the first ones)


def test_policy_options_and_bytes_are_readable(deep_pdf: bytes, deep_html: str) -> None:
    text = " ".join(_text(deep_pdf).split())
    assert "29 rules are at the defaults of wwaudit" in text and "WW001 yes info" not in text  # the defaults: no table
    assert "<td>WW001</td><td>yes</td><td>info</td><td>alpha-min = 2," in deep_html  # the HTML lists every rule
    assert "8.0 GiB" in text
    for blob in ('{"', '"rules":', "False", "None"):
        assert blob not in text, blob
    assert '"rules":' not in deep_html and ">False<" not in deep_html and ">None<" not in deep_html


def test_pdf_policy_table_lists_the_rules_that_differ_from_their_defaults(deep) -> None:
    import dataclasses

    from wwaudit.rules.policy import Policy

    custom = Policy(severities={"WW004": "warning"}, disabled=(), overrides={"WW001": {"alpha_min": 1.5}}).to_dict()
    result = dataclasses.replace(deep, options={**deep.options, "policy": custom})
    text = " ".join(_text(pdf_format.render(result, RenderContext(plots="none"))).split())
    assert "3 rules d" in text and "26 rules are at the defaults of wwaudit" in text  # ("differ": an ff ligature)
    assert "WW001 yes info alpha-min = 1.5, max-D = 0.15" in text
    assert "WW004 yes warning max-traps = 0" in text
    assert "WW009 yes info alpha-hat-max = 8" in text  # off by default, on here
    assert "WW005 yes" not in text  # at its default
    html = html_format.render(result, RenderContext(plots="none")).decode()
    assert "<td>WW005</td><td>yes</td>" in html


def test_command_breaks_only_between_arguments(deep_pdf: bytes) -> None:
    groups = command_args(COMMAND)
    assert "--json audit.json" in groups and "--workers 4" in groups
    lines = [" ".join(line.split()) for line in _text(deep_pdf).splitlines()]
    for group in groups:
        assert any(group in line for line in lines), group  # never split between option and value


def test_plots_log_axes_on_narrow_ranges_and_with_zero_eigenvalues() -> None:
    import matplotlib

    from wwaudit.formats.report import plots

    with matplotlib.rc_context(plots.PLOT_STYLE):
        _fig, ax, _lin = plots._layer_figure()
        evals = np.linspace(1.0, 3.0, 50)
        plots._esd_loglog(ax, evals, np.empty(0), {"alpha": 3.0, "xmin": 1.5})
        lo, hi = ax.get_xlim()
        shown = [t for t in ax.get_xticks() if lo <= t <= hi]
        labels = [ax.xaxis.get_major_formatter()(t, i) for i, t in enumerate(shown)]
        assert len(shown) >= 2 and all(labels), labels  # a narrow range still has labelled ticks
    with_zero = np.concatenate([np.full(20, 1e-30), np.geomspace(1e-2, 1e2, 80)])
    job = plots.LayerPlotJob(key="0", evals=with_zero, metrics={"alpha": 2.0, "xmin": 1.0})
    assert plots.layer_plot(job) is not None
    _fig, ax, ax_lin = plots._LAYER_FIGURES[0]
    assert ax.get_xlim()[0] >= 1e-12 * 1e2 * 0.5  # the 1e-30 values do not stretch the axis
    assert "20 below" in ax.get_xlabel()


def test_plot_bars_fit_and_spike_note_stays_out_of_the_legend() -> None:
    from wwaudit.formats.report import plots

    rng = np.random.default_rng(0)
    evals = rng.chisquare(4, 300)
    rand = np.concatenate([evals * 0.2, [5e3]])  # a shuffled copy far taller in some bins
    job = plots.LayerPlotJob(
        key="1",
        evals=evals,
        random_evals=rand,
        metrics={"alpha": 3.0, "xmin": 4.0, "bulk_min": 0.5, "bulk_max": 9.0, "num_spikes": 3},
    )
    assert plots.layer_plot(job) is not None
    _fig, ax_log, ax_lin = plots._LAYER_FIGURES[0]
    top = ax_log.get_ylim()[1]
    heights = [float(np.max(p.get_data().values)) for p in ax_log.patches if hasattr(p, "get_data")]
    assert heights and max(heights) <= top  # no bar cut by the frame
    assert ax_lin.get_legend().get_title().get_text() == ""  # no annotation inside the legend box
    assert "3 spikes" in ax_lin.get_xlabel()


def test_report_prints_the_plot_legend_as_text_and_plot_files_draw_it(cnn) -> None:
    """The report's layer plots carry no legend inside the image (it covered the histogram and was
    hard to read when scaled): the same entries are text under the figure; plot files keep it."""
    from wwaudit.formats.report import plots

    rng = np.random.default_rng(1)
    metrics = {"alpha": 2.5, "xmin": 3.0, "bulk_min": 0.2, "bulk_max": 6.0, "sigma_mp": 1.1}
    job = plots.LayerPlotJob(key="2", evals=rng.chisquare(3, 200), random_evals=rng.chisquare(3, 200), metrics=metrics)
    left, right = plots.plot_key(metrics, shuffled=True)
    plots.layer_plot(job)  # a plot file: legend inside, with exactly the key's entries
    _fig, ax_log, ax_lin = plots._LAYER_FIGURES[0]
    for ax, key in ((ax_log, left), (ax_lin, right)):
        assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == sorted(text for _style, text in key)
    job.legend = False
    plots.layer_plot(job)
    assert ax_log.get_legend() is None and ax_lin.get_legend() is None
    ctx = RenderContext(command="wwaudit x.onnx", plots="all")
    html = html_format.render(cnn, ctx).decode()
    details = build_document(cnn, ctx)["details"]
    assert details and all(len(d["key"]) == 2 for d in details if d["plot"])
    for d in details:
        for panel in d["key"]:
            for style, text in panel["entries"]:
                assert f'<span class="key key-{style}"></span>{text}' in html.replace("&#39;", "'")
    # the PDF prints one key above its layer plots, with no layer's numbers; each layer's line of
    # metrics carries the numbers that the HTML's key gives under its figure
    pdf_doc = build_document(cnn, ctx, for_pdf=True)
    assert all(d["key"] == [] for d in pdf_doc["details"])
    shared = [text for panel in pdf_doc["shared_key"] for _style, text in panel["entries"]]
    assert "power law (α)" in shared and "MP bulk edge" in shared
    pdf_text = " ".join(_text(pdf_format.render(cnn, ctx)).split())
    assert all(text in pdf_text for text in shared)
    for d in pdf_doc["details"]:
        labels = {label for label, _value in d["metrics"]}
        assert {"α", "xmin", "σ (MP)", "MP bulk edge"} <= labels or not d["plot"], labels


def test_overview_axis_names_analysed_layers_by_their_table_id(deep, monkeypatch) -> None:
    from wwaudit.formats.report import document, plots

    points: list = []

    class Spy:
        """Records the points the overview plots get; draws nothing."""

        def __init__(self, pts, *_args, **_kwargs) -> None:
            points.extend(pts)

        def __enter__(self) -> "Spy":
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def model_plots(self) -> dict:
            return {}

        def uris(self) -> dict:
            return {}

    monkeypatch.setattr(plots, "PlotRenderer", Spy)
    document._draw_plots(deep, {}, set(), RenderContext(plots="none"), False, None, (2.0, 6.0))
    analysed = [layer.id for layer in deep.layers if layer.analysed]
    assert len(analysed) == DEPTH and analysed != list(range(DEPTH))  # ids skip the biases
    # evenly spaced analysed layers (not file entries), each named by the '#' of the tables
    assert [p.position for p in points] == list(range(DEPTH))
    assert [p.label for p in points] == [str(i) for i in analysed]


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory):
    from wwaudit.compare.engine import compare

    return compare(
        str(REPO / "samples" / "digits_mlp_good.onnx"),
        str(REPO / "samples" / "digits_mlp_collapsed.onnx"),
        AuditOptions(fast=True, workers=1),
    )


def test_compare_report_has_header_versions_sign_off_and_no_reprs(compared) -> None:
    from wwaudit.formats.report import compare as report

    ctx = RenderContext(command="wwaudit compare a.onnx b.onnx --report c.pdf --fast", generated="2026-01-01")
    html = report.render_html(compared, ctx)
    assert not re.search(r">\s*(False|True|None)\s*<", html)
    pdf = report.render_pdf(compared, ctx)
    pages = _pages(pdf)
    texts = [" ".join(" ".join(t for *_xy, t in runs).split()) for _w, _h, runs in pages]
    assert all("compare:" in t and "verdict" in t for t in texts)  # running header on every page
    whole = " ".join(texts)
    assert "Versions" in whole and "numpy" in whole and "Reviewed by" in whole
    for width, _height, runs in pages:  # the changes table inside the margins (estimated run ends)
        for x, _y, size, text in runs:
            assert x + 0.45 * size * len(text) <= width - 12, (text, x, width)


PLOT_PROBE = """<script>window.addEventListener('load', function () {
  var scales = [], keys = [];
  document.querySelectorAll('figure.plot img').forEach(function (img) {
    scales.push(img.getBoundingClientRect().width / img.naturalWidth);
  });
  document.querySelectorAll('figcaption.plot-key').forEach(function (el) {
    keys.push(parseFloat(getComputedStyle(el).fontSize));
  });
  var out = document.createElement('pre'); out.id = 'probe';
  out.textContent = JSON.stringify({scales: scales, keys: keys, scroll: document.documentElement.scrollWidth,
                                    client: document.documentElement.clientWidth});
  document.body.appendChild(out);
});</script>"""


@pytest.mark.parametrize("width", [1100, 800])
def test_plot_text_is_legible_at_the_html_display_size(cnn, tmp_path: Path, width: int) -> None:
    """Plot text is drawn at PLOT_STYLE's sizes (pt) for the figure's natural size; in the browser
    it scales with the image: at a desktop and at a narrow window, every plot's smallest text and
    the plot key under it render at 10 px or more, and the page still has no horizontal overflow."""
    from wwaudit.formats.report import plots

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no headless Chromium on this machine (Debian: apt-get install chromium)")
    html = html_format.render(cnn, RenderContext(command="wwaudit x.onnx", plots="all")).decode()
    page = tmp_path / "report.html"
    page.write_text(html.replace("</body>", PLOT_PROBE + "</body>"))
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={width},900", "--virtual-time-budget=3000"]
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout)
    assert found, dom.stderr[-500:]
    facts = json.loads(found.group(1).replace("&quot;", '"'))
    smallest_pt = min(v for k, v in plots.PLOT_STYLE.items() if k.endswith("size") and isinstance(v, (int, float)))
    assert len(facts["scales"]) >= 4 and facts["keys"], facts  # overview plots and layer plots, each with a key
    assert min(facts["scales"]) * smallest_pt * 96 / 72 >= 10, facts
    assert min(facts["keys"]) >= 10 and facts["scroll"] <= facts["client"], facts


def test_html_report_has_no_horizontal_overflow_in_chromium(deep_html: str, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no headless Chromium on this machine (Debian: apt-get install chromium)")
    probe = """<script>window.addEventListener('load', function () {
      var de = document.documentElement, over = [], sizes = [];
      document.querySelectorAll('body *').forEach(function (el) {
        var r = el.getBoundingClientRect();
        if (r.width > 0 && r.right > de.clientWidth + 1 && !el.closest('.table-wrap')) over.push(el.className || el.tagName);
      });
      document.querySelectorAll('p, td, th, li, figcaption, a').forEach(function (el) {
        if (el.textContent.trim()) sizes.push(parseFloat(getComputedStyle(el).fontSize));
      });
      var out = document.createElement('pre'); out.id = 'probe';
      out.textContent = JSON.stringify({scroll: de.scrollWidth, client: de.clientWidth, over: over.slice(0, 5),
                                        minFont: Math.min.apply(null, sizes)});
      document.body.appendChild(out);
    });</script>"""
    page = tmp_path / "report.html"
    page.write_text(deep_html.replace("</body>", probe + "</body>"))
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1100,900", "--virtual-time-budget=3000"]
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout)
    assert found, dom.stderr[-500:]
    facts = json.loads(found.group(1).replace("&quot;", '"'))
    assert facts["scroll"] <= facts["client"] and facts["over"] == [], facts
    assert facts["minFont"] >= 8, facts  # legible: nothing below 8 px
    shot = tmp_path / "shot.png"
    subprocess.run([*common, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=180)
    from PIL import Image

    image = Image.open(shot).convert("L")
    assert image.size == (1100, 900) and image.getextrema()[0] < 100  # rendered text, not a blank page


def test_pdf_links_reach_the_listing_rows(deep, deep_pdf: bytes) -> None:
    """Every internal link (layer map cells, finding layer names) lands on its layer's row."""
    reader = pypdf.PdfReader(io.BytesIO(deep_pdf))
    dests = reader.named_destinations
    listing = {i for i, page in enumerate(reader.pages) if "depth order" in page.extract_text()}
    targets = []
    for page in reader.pages:
        for annot in page.get("/Annots") or []:
            annot = annot.get_object()
            if annot.get("/Subtype") == "/Link" and "/Dest" in annot:
                targets.append(str(annot["/Dest"]))
    assert targets and all(t in dests for t in targets)
    rows = [f"layer-{layer.id}" for layer in deep.layers if f"layer-{layer.id}" in targets]
    assert len(rows) >= DEPTH  # every weight entry of the map links to its row
    pages = {reader.get_destination_page_number(dests[row]) for row in rows}
    assert pages and min(pages) >= min(listing)
    tops = [float(dests[row]["/Top"]) for row in rows if reader.get_destination_page_number(dests[row]) == min(pages)]
    assert tops == sorted(tops, reverse=True) and len(set(tops)) == len(tops)  # one row each, in depth order
