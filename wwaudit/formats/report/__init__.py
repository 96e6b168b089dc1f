"""The HTML/PDF reports (audit and compare): one document model, plots, fonts, templates."""

# What each audit report imports before it can start (formats.render_process loads them in its child
# while the layers are analysed): the PDF prints with WeasyPrint and raster plots, the HTML embeds
# SVG plots.
MODULES = {
    "pdf": (
        "weasyprint",
        "fontTools.subset",
        "matplotlib.figure",
        "matplotlib.backends.backend_agg",
        "wwaudit.formats.report.pdf",
        "wwaudit.formats.report.plots",
    ),
    "html": (
        "matplotlib.figure",
        "matplotlib.backends.backend_svg",
        "wwaudit.formats.report.html",
        "wwaudit.formats.report.plots",
    ),
}


def prepare_html() -> None:
    """What an HTML report does before it sees the audit: compile the template."""
    from wwaudit.formats.report import html

    html.environment().get_template("report.html.j2")


def prepare_pdf() -> None:
    """What a PDF report does before it sees the audit: compile the template and make the base font
    subsets (~0.3 s)."""
    from wwaudit.formats.report import fonts

    prepare_html()
    fonts.prepare()


PREPARE = {"pdf": prepare_pdf, "html": prepare_html}
