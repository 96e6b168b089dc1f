"""The HTML/PDF reports (audit and compare): one document model, plots, fonts, templates."""


def prepare_html() -> None:
    """What an HTML report does before it sees the audit (formats.render_process runs it in its
    child while the layers are analysed): import matplotlib's SVG canvas, compile the template."""
    import matplotlib.backends.backend_svg  # noqa: F401 - loaded now, not when the audit is done
    import matplotlib.figure  # noqa: F401

    from wwaudit.formats.report import html, plots  # noqa: F401

    html.environment().get_template("report.html.j2")


def prepare_pdf() -> None:
    """What a PDF report does before it sees the audit: import WeasyPrint, fontTools and matplotlib's
    raster canvas, compile the template, make the base font subsets (~1.3 s of CPU in all)."""
    import matplotlib.backends.backend_agg  # noqa: F401 - loaded now, not when the audit is done
    import matplotlib.figure  # noqa: F401
    import weasyprint  # noqa: F401

    from wwaudit.formats.report import fonts, html, pdf, plots  # noqa: F401

    html.environment().get_template("report.html.j2")
    fonts.prepare()


PREPARE = {"pdf": prepare_pdf, "html": prepare_html}
