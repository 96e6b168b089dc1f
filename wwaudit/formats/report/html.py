"""Self-contained HTML report (jinja2, CSS and plots inline, no network, no JavaScript needed to read it)."""

from __future__ import annotations

import functools
from typing import Any

from wwaudit.records import AuditResult
from wwaudit.formats import RenderContext
from wwaudit.formats.report.document import build_document


@functools.cache
def environment() -> Any:
    """The reports' jinja2 environment (audit and compare): autoescaped, strict, templates from
    formats/report/templates; one per process, so each template is compiled once."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("wwaudit.formats.report", "templates"),
        autoescape=True,  # node names and doc strings come from an untrusted vendor file
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def template_html(template: str, doc: dict[str, Any], for_pdf: bool = False) -> str:
    """A built document rendered by one of the report templates (report.html.j2, compare.html.j2)."""
    return environment().get_template(template).render(doc=doc, for_pdf=for_pdf)


def document_html(doc: dict[str, Any], for_pdf: bool = False) -> str:
    """A built audit document (document.build_document) as the report's HTML."""
    return template_html("report.html.j2", doc, for_pdf)


def render_html(result: AuditResult, ctx: RenderContext, for_pdf: bool = False) -> str:
    """The report as an HTML string with every plot embedded (the PDF renderer prints the same
    document, with its layer plots fetched as they are drawn)."""
    return document_html(build_document(result, ctx, for_pdf=for_pdf), for_pdf)


def render(result: AuditResult, ctx: RenderContext) -> bytes:
    """UTF-8 bytes of the screen version of the report (sortable table, no print fonts)."""
    return render_html(result, ctx).encode("utf-8")
