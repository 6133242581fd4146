"""A document's own Markdown shows as it is meant to look, and still nothing in it is live (issue
24, polish: "quotes, sources and citation cards show raw Markdown (`**2-year warranty**`,
backticks, table pipes) — render it, safely (no HTML, links or images), as peers do").

`md_rich` (quotes, source previews, a deleted document's passage) writes the Markdown out again
with every piece of text escaped; `markdown_html` (the cited section of a Markdown, HTML, Office
file) builds the HTML itself. Plain text files are shown as written. The page is drawn with
AppTest from a saved answer (tests/test_ui_evidence.py); tests/test_ui_browser.py checks in
chromium that hostile documents make the browser fetch nothing, cards included.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from rag_app.ui.sources import find_passage_spans, markdown_html
from rag_app.ui.text import md_rich, shown_md
from tests.test_ui_evidence import CITATION, HIT, draw, found

WARRANTY = ("Warranty > Standard warranty\nEvery Aurora kettle comes with a **2-year "
            "warranty** from the date of delivery. Register at `aurorakettle.example/register`."
            "\n\n| Model | Standard | After registration |\n|---|---|---|\n"
            "| AK-200 | 2 years | 5 years |\n| AK-90 Travel | 2 years | 3 years |\n")
HOSTILE = ("Setup ![q](http://127.0.0.1:8766/x.png) [manual](http://127.0.0.1:8766/l) "
           "<img src=http://127.0.0.1:8766/i onerror=alert(1)> <a href='http://e'>a</a> "
           "www.evil.example https://evil.example/p mail@evil.example :red[red] $x^2$ "
           ":material/home: ![c](https:127.0.0.1:8766?x) **bold ![i](http://e/i.png)**\n\n"
           "| a ![t](http://e/t.png) | b |\n|---|---|\n| [l](http://e/l) | <img src=x> |\n\n"
           "- item ![li](http://e/li.png)\n\n> quote [q](http://e/q)\n\n# Head ![h](http://e/h)")
# live in the Markdown Streamlit renders: a link or image, HTML, a bare URL or address
LIVE = re.compile(r"(?<!\\)(\]\(|!\[|<img|<a |www\.|https?:|\w@\w)", re.I)


def _outside_code(text: str) -> str:
    """`text` without its code spans and blocks (shown literally, as code)."""
    text = re.sub(r"(?ms)^(`{3,})\n.*?\n\1$", "", text)
    return re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", text)


def test_bold_code_and_tables_render_instead_of_showing_their_marks() -> None:
    out = md_rich(WARRANTY)
    assert "**2\\-year warranty**" in out  # bold, not "\*\*2-year warranty\*\*"
    assert "`aurorakettle.example/register`" in out  # code, not backticks shown
    assert "| Model | Standard | After registration |\n|---|---|---|" in out  # a table
    assert "| AK\\-200 | 2 years | 5 years |" in out


def test_a_flat_preview_has_no_table_pipes_and_is_cut_at_a_word() -> None:
    out = md_rich(WARRANTY, flat=True)
    assert "\n" not in out and "|" not in out.replace("\\|", "")
    assert "Model · Standard · After registration / AK\\-200 · 2 years · 5 years" in out
    cut = md_rich(WARRANTY, flat=True, limit=60)
    assert cut.endswith(" …") and cut.count("**") % 2 == 0  # a cut closes its bold
    assert len(re.sub(r"\\(.)|[*`]", r"\1", cut)) < 75


def test_a_quote_cut_inside_bold_shows_no_stray_asterisks() -> None:
    assert md_rich("Every Aurora kettle comes with a **2-year warranty", flat=True) == \
        "Every Aurora kettle comes with a 2\\-year warranty"


@pytest.mark.parametrize("flat", [False, True])
def test_nothing_in_a_documents_markdown_is_live(flat: bool) -> None:
    out = md_rich(HOSTILE, flat=flat)
    assert not LIVE.search(_outside_code(out).replace("\u2060", "")) or \
        "\u2060" in out, out
    bare = _outside_code(out)
    for live in ("](", "![", "<img", "<a ", "https:", "http:"):
        assert live not in re.sub(r"\\.", "", bare), (live, out)
    assert "www\u2060" in out and "\\:\u2060red" in out and "\\$x" in out
    assert "manual" in out and "bold" in out  # a link keeps its text


def test_plain_text_files_are_shown_as_written() -> None:
    text = "Run it as **root** | or not"
    assert shown_md(text, "notes.txt") == "Run it as \\*\\*root\\*\\* \\| or not"
    assert shown_md(text, "notes.md") == "Run it as **root** \\| or not"


def test_a_cited_markdown_section_is_rendered_with_the_passage_marked() -> None:
    spans = find_passage_spans(WARRANTY, "Every Aurora kettle comes with a 2-year warranty")
    html = markdown_html(WARRANTY, spans)
    assert "<strong><mark>2-year warranty</mark></strong>" in html
    assert "<code>aurorakettle.example/register</code>" in html
    assert "<table><thead><tr><th>Model</th>" in html and "**" not in html
    assert html.count("<mark>") == html.count("</mark>") >= 2


def test_a_cited_section_lets_nothing_live_through() -> None:
    html = markdown_html(HOSTILE, [(0, 40), (HOSTILE.index("- item"), len(HOSTILE))])
    tags = set(re.findall(r"</?([a-z0-9]+)", html))
    assert tags <= {"div", "p", "strong", "em", "s", "code", "pre", "ul", "ol", "li",
                    "blockquote", "table", "thead", "tbody", "tr", "th", "td", "br", "hr",
                    "mark"}, tags
    attributes = re.findall(r"<[a-z0-9]+\s[^>]*>", html)
    assert attributes == ['<div class="rag-section">'], attributes  # no href, no src
    assert html.count("<mark>") == html.count("</mark>")
    assert "<li><mark>item" in html  # a mark at a list item goes after its "- "


def _values(at: Any) -> str:
    return "\n".join(str(e.value) for kind in ("markdown", "caption")
                     for e in getattr(at, kind))


def test_the_page_shows_a_quote_and_a_source_preview_formatted() -> None:
    hit = dict(HIT, text=WARRANTY, source="warranty-and-returns.md")
    quote = ("Every Aurora kettle comes with a **2-year warranty** from the date of "
             "delivery.")
    at = draw(found(hits=[hit], evidence=[{"source": 1, "text": quote, "score": 0.9}],
                    citations=[dict(CITATION, passage=WARRANTY)]))
    shown = _values(at)
    assert "> “Every Aurora kettle comes with a **2\\-year warranty** from the date of " \
        "delivery\\.” **[1]**" in shown
    assert "\\*\\*" not in shown  # no Markdown mark is shown as a character
    preview = next(str(c.value) for c in at.caption if "Model ·" in str(c.value))
    assert "\\|" not in preview and "**2\\-year warranty**" in preview
