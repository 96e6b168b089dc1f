"""PDF report: the HTML report printed by WeasyPrint with CSS paged media.

Vendor metadata in the report is untrusted, so the URL fetcher serves only data: URLs; nothing is
fetched from the file system or the network. The fonts travel inside the document (data:
@font-face), so the PDF does not depend on the host's fonts.
"""

from __future__ import annotations

import logging
from typing import Any

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


def render(result: AuditResult, ctx: RenderContext) -> bytes:
    """PDF bytes; the same audit and context give the same bytes (fixed identifier, no creation
    date in the metadata, deterministic plots)."""
    html = render_html(result, ctx, for_pdf=True)
    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    try:
        import weasyprint
    except OSError as exc:  # Pango missing on the host
        raise OutputError(f"PDF output needs Pango (WeasyPrint could not load it): {exc}") from None
    document = weasyprint.HTML(string=html, url_fetcher=_fetcher(), base_url=".")
    return document.write_pdf(pdf_identifier=result.model.sha256[:32].encode("ascii"))
