"""PDF report: the HTML report printed by WeasyPrint with CSS paged media.

Vendor metadata in the report is untrusted, so the URL fetcher serves only data: URLs; nothing is
fetched from the file system or the network. The fonts travel inside the document (data:
@font-face, subset to the report's characters: fonts.py), so the PDF does not depend on the host's
fonts.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterator

from wwaudit.auditor.results import AuditResult
from wwaudit.errors import OutputError
from wwaudit.formats import RenderContext
from wwaudit.formats.html_format import render_html


def _data_only_fetcher(url: str, *args: Any, **kwargs: Any) -> Any:
    """WeasyPrint < 70 fetcher API: a function."""
    if url.startswith("data:"):
        from weasyprint.urls import default_url_fetcher

        return default_url_fetcher(url, *args, **kwargs)
    raise ValueError(f"refusing to fetch {url!r}: reports use embedded data only")


def _fetcher() -> Any:
    """A fetcher that serves data: URLs only, in the API of the installed WeasyPrint (70 made it a class)."""
    from weasyprint import urls

    if hasattr(urls, "URLFetcher"):
        return urls.URLFetcher(allowed_protocols={"data"}, allow_redirects=False)
    return _data_only_fetcher


def html_to_pdf(html: str, identifier: bytes) -> bytes:
    """Print a self-contained HTML document to PDF: data: URLs only, fixed identifier and font
    timestamps, so the same document gives the same bytes (used by the audit and compare reports)."""
    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    try:
        import weasyprint
    except OSError as exc:  # Pango missing on the host
        raise OutputError(f"PDF output needs Pango (WeasyPrint could not load it): {exc}") from None
    from wwaudit.formats.fonts import font_face_css

    from weasyprint.text.fonts import FontConfiguration

    fetcher = _fetcher()
    font_config = FontConfiguration()  # @font-face in a separate stylesheet needs one shared configuration
    document = weasyprint.HTML(string=html, url_fetcher=fetcher, base_url=".")
    fonts = weasyprint.CSS(string=font_face_css(html), url_fetcher=fetcher, base_url=".", font_config=font_config)
    with _fixed_font_timestamp():
        return document.write_pdf(pdf_identifier=identifier, stylesheets=[fonts], font_config=font_config)


def render(result: AuditResult, ctx: RenderContext) -> bytes:
    """PDF bytes; the same audit and context give the same bytes (fixed identifier, no creation
    date in the metadata, deterministic plots)."""
    return html_to_pdf(render_html(result, ctx, for_pdf=True), result.model.sha256[:32].encode("ascii"))


@contextlib.contextmanager
def _fixed_font_timestamp() -> Iterator[None]:
    """Without HarfBuzz-Subset, WeasyPrint subsets fonts with fontTools, which stamps each subset
    with the current time unless SOURCE_DATE_EPOCH is set: fix it (when the user has not) so the
    same audit gives the same PDF bytes."""
    if "SOURCE_DATE_EPOCH" in os.environ:
        yield
        return
    os.environ["SOURCE_DATE_EPOCH"] = _FONT_EPOCH
    try:
        yield
    finally:
        os.environ.pop("SOURCE_DATE_EPOCH", None)


_FONT_EPOCH = "946684800"  # 2000-01-01T00:00:00Z, any fixed instant will do
