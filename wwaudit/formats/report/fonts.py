"""Fonts for the PDF: matplotlib's bundled DejaVu, subset to the characters the report uses.

Why embed at all: the PDF must look the same on every host, whatever fonts it has. Why subset
here rather than leave it to WeasyPrint: the full DejaVu files are 2.4 MB as data: URLs, and
WeasyPrint's CSS tokenizer walks such a URL character by character (1.3 s on every report,
measured), then fontTools subsets each face again at the end (0.8 s). A subset made here from the
report's own text, without hinting and with only the kerning and ligature features, is ~25 KB a
face and costs ~0.2 s for all four. WeasyPrint embeds that subset as it is (pdf_format passes
full_fonts): its own subsetter is HarfBuzz-Subset where the host has libharfbuzz-subset and
fontTools elsewhere, and the two write different bytes, so leaving it to WeasyPrint would make the
PDF depend on the host's libraries.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import re
import string
from importlib import resources

# (file in matplotlib's mpl-data/fonts/ttf, CSS family, CSS weight, CSS style): every face the
# templates use (the references are in italics), so no host font is embedded. The families have
# names of their own, first in report.css: under the plain "DejaVu Sans" name fontconfig prefers
# a host's installed DejaVu over the embedded subset, and WeasyPrint then subsets the full host
# file (0.8 s).
FACES = (
    ("DejaVuSans.ttf", "wwaudit Sans", "normal", "normal"),
    ("DejaVuSans-Bold.ttf", "wwaudit Sans", "bold", "normal"),
    ("DejaVuSans-Oblique.ttf", "wwaudit Sans", "normal", "italic"),
    ("DejaVuSansMono.ttf", "wwaudit Sans Mono", "normal", "normal"),
)
_DATA_URI = re.compile(r"data:[^\"')\s]+")
_ALWAYS = string.printable + "–—…•·×≤≥±→←↑↓αλσ"


def used_characters(document: str) -> set[str]:
    """Characters a document can show: its text with data: URIs removed and entities decoded,
    plus printable ASCII and the symbols the templates and page counters use."""
    text = _DATA_URI.sub("", document)
    return set(text) | set(html.unescape(text)) | set(_ALWAYS)


def _subset(data: bytes, characters: frozenset[str]) -> bytes:
    import logging

    from fontTools import subset

    logging.getLogger("fontTools").setLevel(logging.ERROR)  # "FFTM NOT subset" notes on stderr
    from fontTools.ttLib import TTFont

    options = subset.Options()
    options.layout_features = ["kern", "liga"]
    options.hinting = False
    options.notdef_outline = True
    # recalcTimestamp=False keeps the source's head.modified: fontTools would otherwise stamp the
    # wall-clock time into every subset, and two renders a second apart would differ (issue 15)
    font = TTFont(io.BytesIO(data), lazy=True, recalcTimestamp=False)
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes={ord(c) for c in characters})
    subsetter.subset(font)
    out = io.BytesIO()
    font.save(out)
    return out.getvalue()


def font_face_css(document: str) -> str:
    """@font-face rules embedding the DejaVu faces subset to `document`'s characters as data:
    URLs; '' when matplotlib's fonts cannot be read (the CSS then falls back to the host's fonts).
    The HTML report, which embeds no fonts, falls through to the host's "DejaVu Sans".

    The subset always holds base_characters() too: then a report whose characters are all among
    them (the usual case: ASCII names) reuses the subset that `prepare` made before the audit
    ended, and the same document still gives the same bytes whether or not it was prepared."""
    return _faces_css(frozenset(used_characters(document) | base_characters()))


@functools.cache
def base_characters() -> frozenset[str]:
    """The characters every report can show: printable ASCII, the symbols of _ALWAYS, and every
    character of the report templates (entities decoded) and of the modules that write the
    reports' and findings' text (the symbols printed around the audit's own names and numbers)."""
    characters = set(_ALWAYS)
    sources = list((resources.files("wwaudit.formats.report") / "templates").iterdir())
    sources += [resources.files("wwaudit.formats.report") / "document.py"]
    sources += [f for f in resources.files("wwaudit.rules").iterdir() if f.name.endswith(".py")]
    for source in sources:
        text = source.read_text(encoding="utf-8")
        characters |= set(text) | set(html.unescape(text))
    return frozenset(characters)


def prepare() -> None:
    """Make the base subsets now (render_process calls it while the audit runs), ~0.3 s."""
    _faces_css(base_characters())


@functools.lru_cache(maxsize=4)
def _faces_css(characters: frozenset[str]) -> str:
    try:
        folder = resources.files("matplotlib") / "mpl-data" / "fonts" / "ttf"
        rules = []
        for name, family, weight, style in FACES:
            data = base64.b64encode(_subset((folder / name).read_bytes(), characters)).decode("ascii")
            rules.append(
                f'@font-face {{ font-family: "{family}"; font-weight: {weight}; font-style: {style}; '
                f"src: url(data:font/ttf;base64,{data}); }}"
            )
        return "\n".join(rules)
    except (OSError, ModuleNotFoundError):
        return ""
