"""PDF report: the HTML report printed by WeasyPrint with CSS paged media.

Vendor metadata in the report is untrusted, so the URL fetcher serves only data: URLs; nothing is
fetched from the file system or the network.
"""

from __future__ import annotations

import logging

from wwaudit.auditor.results import AuditResult
from wwaudit.errors import OutputError
from wwaudit.formats import RenderContext
from wwaudit.formats.html_format import render_html


def _data_only_fetcher(url: str, *args, **kwargs):
    if url.startswith("data:"):
        from weasyprint.urls import default_url_fetcher

        return default_url_fetcher(url, *args, **kwargs)
    raise ValueError(f"refusing to fetch {url!r}: reports use embedded data only")


def render(result: AuditResult, ctx: RenderContext) -> bytes:
    """PDF bytes with fixed metadata identifier, so the same audit gives a stable document."""
    html = render_html(result, ctx, for_pdf=True)
    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    try:
        import weasyprint
    except OSError as exc:  # Pango missing on the host
        raise OutputError(f"PDF output needs Pango (WeasyPrint could not load it): {exc}") from None
    document = weasyprint.HTML(string=html, url_fetcher=_data_only_fetcher, base_url=".")
    return document.write_pdf(pdf_identifier=result.model.sha256[:32].encode("ascii"))
