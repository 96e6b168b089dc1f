"""PDF report: the HTML report printed by WeasyPrint with CSS paged media.

Vendor metadata in the report is untrusted, so the URL fetcher serves only data: URLs and the
report's own ``wwaudit-plot:`` URLs (plots drawn in memory); nothing is fetched from the file
system or the network. The fonts travel inside the document (data:
@font-face, subset to the report's characters: fonts.py), so the PDF does not depend on the host's
fonts.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterator

from wwaudit.records import AuditResult
from wwaudit.errors import OutputError
from wwaudit.formats import RenderContext
from wwaudit.formats.report.document import build_document
from wwaudit.formats.report.html import document_html


def _fetcher(plots: Any = None) -> Any:
    """WeasyPrint's fetcher serving data: URLs only, plus the report's own ``wwaudit-plot:`` URLs
    from `plots` (a formats.plots.PlotRenderer): nothing from the file system or the network."""
    from weasyprint.urls import URLFetcher, URLFetcherResponse

    from wwaudit.formats.report.plots import PLOT_URL_SCHEME

    class ReportFetcher(URLFetcher):
        def fetch(self, url: str, headers: Any = None) -> Any:
            if plots is not None and url.startswith(f"{PLOT_URL_SCHEME}:"):
                return URLFetcherResponse(url, body=plots.fetch(url), headers={"Content-Type": "image/jpeg"})
            return super().fetch(url, headers)

    return ReportFetcher(allowed_protocols={"data"}, allow_redirects=False)


def _deferred_plots(plots: Any) -> dict[str, Any]:
    """WeasyPrint's image cache, filled in advance with one image per plot URL of `plots` whose
    size is known now and whose JPEG is fetched only when the page that shows it is drawn.

    Why: WeasyPrint loads every image while it builds its boxes, before the layout of the first
    page, so it waited for the plot workers (0.3 s of the detector's 1.8 s PDF). With the sizes
    known, parsing, styling and the layout of all pages run while the plots are drawn on the other
    cores. An image needs no more than these two methods in WeasyPrint 70 (the version setup.cfg
    allows); drawing hands over to WeasyPrint's own raster image.
    """
    if plots is None:
        return {}
    from hashlib import md5
    from io import BytesIO

    from PIL import Image
    from weasyprint import DEFAULT_OPTIONS
    from weasyprint.images import RasterImage

    class DeferredPlot:
        def __init__(self, url: str) -> None:
            self._url = url
            self._width, self._height = plots.pixel_size(url)
            self._image: Any = None

        def get_intrinsic_size(self, resolution: float, font_size: float) -> tuple[float, float, float]:
            return self._width / resolution, self._height / resolution, self._width / self._height

        def draw(self, stream: Any, concrete_width: float, concrete_height: float, style: Any) -> None:
            if self._image is None:
                data = plots.fetch(self._url)
                image_id = md5(self._url.encode(), usedforsecurity=False).hexdigest()
                self._image = RasterImage(Image.open(BytesIO(data)), image_id, data, options=DEFAULT_OPTIONS)
            self._image.draw(stream, concrete_width, concrete_height, style)

    return {url: DeferredPlot(url) for url in plots.urls()}


def html_to_pdf(html: str, identifier: bytes, plots: Any = None) -> bytes:
    """Print a self-contained HTML document to PDF: data: URLs only (and `plots`' URLs, see
    _fetcher), fixed identifier and font timestamps, so the same document gives the same bytes
    (used by the audit and compare reports)."""
    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    try:
        import weasyprint
    except OSError as exc:  # Pango missing on the host
        raise OutputError(f"PDF output needs Pango (WeasyPrint could not load it): {exc}") from None
    from weasyprint.text.fonts import FontConfiguration

    from wwaudit.formats.report.fonts import font_face_css

    fetcher = _fetcher(plots)
    font_config = FontConfiguration()  # @font-face in a separate stylesheet needs one shared configuration
    document = weasyprint.HTML(string=html, url_fetcher=fetcher, base_url=".")
    faces = font_face_css(html)
    fonts = weasyprint.CSS(string=faces, url_fetcher=fetcher, base_url=".", font_config=font_config)
    # full_fonts: embed fonts.py's subsets as they are. WeasyPrint would subset them again with
    # HarfBuzz-Subset where the host has it and with fontTools elsewhere, which write different
    # bytes (and HarfBuzz keeps the head table's timestamp, fontTools stamps its own).
    with _fixed_font_timestamp():
        return document.write_pdf(
            pdf_identifier=identifier,
            stylesheets=[fonts],
            font_config=font_config,
            full_fonts=bool(faces),
            cache=_deferred_plots(plots),
        )


def render(result: AuditResult, ctx: RenderContext) -> bytes:
    """PDF bytes; the same audit and context give the same bytes (fixed identifier, no creation
    date in the metadata, deterministic plots). The layer plots are drawn in worker processes
    while WeasyPrint parses and lays out the document."""
    with contextlib.ExitStack() as plots_until:
        doc = build_document(result, ctx, for_pdf=True, plots_until=plots_until)
        return html_to_pdf(document_html(doc, for_pdf=True), result.model.sha256[:32].encode("ascii"), plots=doc["plot_source"])


@contextlib.contextmanager
def _fixed_font_timestamp() -> Iterator[None]:
    """Where matplotlib's fonts cannot be read (no embedded faces), WeasyPrint subsets the host's
    fonts; without HarfBuzz-Subset it does so with fontTools, which stamps each subset with the
    current time unless SOURCE_DATE_EPOCH is set: fix it (when the user has not) so the same audit
    still gives the same PDF bytes on that host."""
    if "SOURCE_DATE_EPOCH" in os.environ:
        yield
        return
    os.environ["SOURCE_DATE_EPOCH"] = _FONT_EPOCH
    try:
        yield
    finally:
        os.environ.pop("SOURCE_DATE_EPOCH", None)


_FONT_EPOCH = "946684800"  # 2000-01-01T00:00:00Z, any fixed instant will do
