"""rag_app.ui.sources: finding a cited passage in its page or section, rendering it, escaping it."""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pypdf import PdfWriter

from ingest.loaders import load_file
from ingest.split import ChunkingConfig, Splitter
from rag_app.errors import RagError
from rag_app.ui.sources import (
    PageView,
    SourceError,
    find_passage_spans,
    passage_html,
    render_pdf_pages,
    section_view,
)
from tests.pdfgen import PAGE_HEIGHT, PAGE_WIDTH, make_pdf

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"

FILLER = "\n".join(f"Filler line {n} about nothing in particular." for n in range(30))
SENTENCE_A = "The descaling programme runs for twenty minutes and beeps three times when done."
SENTENCE_B = "Rinse the kettle twice with fresh water before you boil water for drinking again."


def marked(text: str, spans: Sequence[tuple[int, int]]) -> list[str]:
    return [text[s:e] for s, e in spans]


def words(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def highlight_box(view: PageView) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) of the highlight colour: yellow, where the page is white/black."""
    rgb = np.asarray(Image.open(io.BytesIO(view.png)).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    ys, xs = np.nonzero((r > 200) & (g > 140) & (r - b > 60))
    if not len(xs):
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


# --- find_passage_spans ------------------------------------------------------------------------
def test_spans_ignore_case_whitespace_and_punctuation() -> None:
    text = "Intro.\nThe  Kettle\n   boils WATER -- quickly!\nUnrelated end."
    spans = find_passage_spans(text, "the kettle boils water, quickly")
    assert marked(text, spans) == ["The  Kettle\n   boils WATER -- quickly!"]


def test_heading_path_line_not_in_text_is_ignored() -> None:
    text = "Some earlier text here.\nEvery Aurora kettle comes with a 2-year warranty. Fine print."
    passage = "Warranty > Standard warranty\nEvery Aurora kettle comes with a 2-year warranty."
    assert marked(text, find_passage_spans(text, passage)) == [
        "Every Aurora kettle comes with a 2-year warranty."
    ]


def test_heading_line_next_to_the_body_is_marked_with_it() -> None:
    text = "Standard warranty\n\nEvery Aurora kettle comes with a **2-year warranty** from today."
    passage = "Warranty > Standard warranty\nEvery Aurora kettle comes with a 2-year warranty"
    assert marked(text, find_passage_spans(text, passage)) == [
        "Standard warranty\n\nEvery Aurora kettle comes with a **2-year warranty**"
    ]


def test_heading_found_away_from_the_body_is_not_marked() -> None:
    """The second chunk of a section repeats the heading path, but its body is further down."""
    first = " ".join(f"Paragraph one sentence {n} talks about limescale." for n in range(20))
    text = f"Standard warranty\n\n{first}\n\nThe second paragraph covers refunds for gift cards."
    passage = "Warranty > Standard warranty\nThe second paragraph covers refunds for gift cards."
    assert marked(text, find_passage_spans(text, passage)) == [
        "The second paragraph covers refunds for gift cards."
    ]


def test_ligatures_and_soft_hyphens_match_cleaned_text() -> None:
    text = "Replace the \ufb01lter every six months; it is a consum\u00adable part."
    spans = find_passage_spans(text, "Replace the filter every six months; it is a consumable part")
    assert marked(text, spans) == [text]


def test_nothing_matches_gives_no_spans() -> None:
    assert find_passage_spans("The kettle boils water.", "Bluetooth pairing code shown") == []
    assert find_passage_spans("", "anything at all") == []
    assert find_passage_spans("Some text", "  \n ") == []


def test_overlap_chunk_and_small_differences_stay_one_span() -> None:
    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron"
    # one word differs in the middle (an extraction difference) and the chunk starts mid-text
    spans = find_passage_spans(text, "gamma delta epsilon ZETTA eta theta iota kappa")
    assert marked(text, spans) == ["gamma delta epsilon zeta eta theta iota kappa"]


def test_short_passage_below_min_words() -> None:
    text = "Press start. The kettle boils water."
    assert marked(text, find_passage_spans(text, "boils water")) == ["boils water."]


def test_long_text_is_fast_and_exact() -> None:
    words = [f"w{(n * 7919) % 5000}" for n in range(120_000)]
    text = " ".join(words)
    passage = "Some > Heading\n" + " ".join(words[60_000:60_150])
    spans = find_passage_spans(text, passage)
    assert len(spans) == 1
    assert marked(text, spans)[0].split() == words[60_000:60_150]


# --- PDF rendering -----------------------------------------------------------------------------
@pytest.fixture
def three_pages(tmp_path: Path) -> Path:
    return make_pdf(
        tmp_path / "three.pdf",
        [
            f"Page one heading\n{FILLER}\n{SENTENCE_A}",
            f"{SENTENCE_B}\n{FILLER}",
            "The third page talks about the Aurora Home app and Bluetooth pairing.",
        ],
    )


def test_render_marks_the_passage_on_its_page(three_pages: Path) -> None:
    views = render_pdf_pages(three_pages, 3, None, "Aurora Home app and Bluetooth pairing")
    assert [v.page for v in views] == [3]
    view = views[0]
    assert view.marks == 1
    assert (view.width, view.height) == (math.ceil(PAGE_WIDTH * 1.5), math.ceil(PAGE_HEIGHT * 1.5))
    image = Image.open(io.BytesIO(view.png))
    assert image.format == "PNG"
    assert image.size == (view.width, view.height)
    box = highlight_box(view)
    assert box is not None
    assert box[1] < view.height * 0.2  # the sentence is on the first line, near the top


def test_render_without_the_passage_has_no_marks(three_pages: Path) -> None:
    view = render_pdf_pages(three_pages, 3, 3, "Descaling with citric acid", scale=0.5)[0]
    assert view.marks == 0
    assert highlight_box(view) is None
    assert (view.width, view.height) == (PAGE_WIDTH // 2, PAGE_HEIGHT // 2)


def test_two_page_passage_is_marked_on_both_pages(three_pages: Path) -> None:
    passage = f"{SENTENCE_A}\n\n{SENTENCE_B}"
    first, second = render_pdf_pages(three_pages, 1, 2, passage, scale=1.0)
    assert (first.page, second.page) == (1, 2)
    assert first.marks >= 1 and second.marks >= 1
    box1, box2 = highlight_box(first), highlight_box(second)
    assert box1 is not None and box2 is not None
    assert box1[1] > first.height * 0.5  # the end of page 1
    assert box2[3] < second.height * 0.2  # the start of page 2
    assert [v.page for v in render_pdf_pages(three_pages, 1, 2, passage, max_pages=1)] == [1]


def test_rotated_page_gets_boxes_on_the_text(tmp_path: Path) -> None:
    plain = make_pdf(tmp_path / "plain.pdf", [f"Intro line.\n{SENTENCE_A}"])
    writer = PdfWriter(clone_from=plain)
    writer.pages[0].rotate(90)
    writer.write(tmp_path / "rotated.pdf")
    view = render_pdf_pages(tmp_path / "rotated.pdf", 1, 1, SENTENCE_A, scale=1.0)[0]
    assert (view.width, view.height) == (PAGE_HEIGHT, PAGE_WIDTH)
    box = highlight_box(view)
    assert view.marks == 1 and box is not None
    assert box[3] - box[1] > 5 * (box[2] - box[0])  # a tall, narrow box: the text runs down


def test_sample_manual_page(tmp_path: Path) -> None:
    pdf = SAMPLES / "ak200-user-manual.pdf"
    page_two = next(s for s in load_file(pdf).sections if s.page_start == 2)
    passage = " ".join(page_two.text.split()[20:80])  # whitespace differs from the page
    (view,) = render_pdf_pages(pdf, 2, 2, passage)
    assert view.page == 2 and view.marks >= 3
    assert highlight_box(view) is not None
    assert Image.open(io.BytesIO(view.png)).size == (view.width, view.height)


def test_out_of_range_pages_raise(three_pages: Path) -> None:
    with pytest.raises(SourceError, match=r"has 3 page\(s\); page 5 does not exist"):
        render_pdf_pages(three_pages, 5, 5, "anything")
    with pytest.raises(SourceError, match="page 4 does not exist"):
        render_pdf_pages(three_pages, 3, 4, "anything")
    with pytest.raises(SourceError, match="page 0 does not exist"):
        render_pdf_pages(three_pages, 0, None, "anything")


def test_unreadable_pdfs_raise(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.pdf"
    corrupt.write_bytes(b"%PDF-1.7\nthis is not really a PDF\n")
    with pytest.raises(SourceError, match="cannot be opened as a PDF") as info:
        render_pdf_pages(corrupt, 1, 1, "anything")
    assert isinstance(info.value, RagError)
    with pytest.raises(SourceError, match="does not exist"):
        render_pdf_pages(tmp_path / "missing.pdf", 1, 1, "anything")


def test_encrypted_pdf(tmp_path: Path, three_pages: Path) -> None:
    writer = PdfWriter(clone_from=three_pages)
    writer.encrypt("s3cret-pw")
    locked = tmp_path / "locked.pdf"
    writer.write(locked)
    with pytest.raises(SourceError, match="needs a password"):
        render_pdf_pages(locked, 1, 1, SENTENCE_A)
    with pytest.raises(SourceError, match="does not open it") as info:
        render_pdf_pages(locked, 1, 1, SENTENCE_A, password="wrong-pw")
    assert "wrong-pw" not in str(info.value)
    assert render_pdf_pages(locked, 1, 1, SENTENCE_A, password="s3cret-pw")[0].marks == 1


# --- sections ----------------------------------------------------------------------------------
WARRANTY_CHUNK = (
    "Warranty > Standard warranty\n"
    "Every Aurora kettle comes with a 2-year warranty from the date of delivery. During the\n"
    "warranty we repair or replace, free of charge, any kettle"
)


@pytest.mark.parametrize(
    "headings", [("Warranty", "Standard warranty"), (), ("Returns", "Refunds")]
)
def test_section_view_markdown(headings: tuple[str, ...]) -> None:
    view = section_view(SAMPLES / "warranty-and-returns.md", WARRANTY_CHUNK, headings)
    assert view.kind == "markdown"
    assert view.title == "Warranty > Standard warranty"
    assert view.text.startswith("Standard warranty\n")
    (text,) = marked(view.text, view.spans)
    assert text.startswith("Standard warranty\n\nEvery Aurora kettle comes with a **2-year")
    assert text.endswith("free of charge, any kettle")


def test_section_view_html() -> None:
    passage = (
        "Support FAQ > Can I use the kettle at high altitude?\n"
        "Yes. Above 2,000 metres water boils below 100 °C, so the kettle may never reach its\n"
        "target. The AK-200 Smart with firmware 2.3.0 or later has an altitude mode"
    )
    view = section_view(SAMPLES / "support-faq.html", passage,
                        ["Support FAQ", "Can I use the kettle at high altitude?"])
    assert view.kind == "html"
    assert view.title == "Support FAQ > Can I use the kettle at high altitude?"
    (text,) = marked(view.text, view.spans)
    assert text.startswith("Can I use the kettle at high altitude?\n\nYes. Above 2,000 metres")
    assert text.endswith("has an altitude mode:")
    assert "<" not in view.text  # the loader's plain text, no markup


def test_section_view_prefers_matching_headings(tmp_path: Path) -> None:
    doc = tmp_path / "twice.md"
    same = "Unplug the kettle and let it cool down before you clean the outside."
    doc.write_text(f"# Guide\n\n## Daily\n\n{same}\n\n## Weekly\n\n{same} Then descale.\n")
    passage = f"Guide > Weekly\n{same}"
    assert section_view(doc, passage, ("Guide", "Weekly")).title == "Guide > Weekly"
    assert section_view(doc, passage, ("Guide", "Daily")).title == "Guide > Daily"


def test_section_view_text_file_and_not_found() -> None:
    path = SAMPLES / "care-and-cleaning.txt"
    body = load_file(path).sections[0].text
    passage = " ".join(body.split()[10:40])
    view = section_view(path, passage)
    assert (view.kind, view.title) == ("text", "care-and-cleaning.txt")
    assert " ".join(marked(view.text, view.spans)[0].split()) == passage
    missing = section_view(path, "Bluetooth quantum flux capacitor alignment")
    assert missing.spans == [] and missing.text


def test_section_view_cuts_long_sections(tmp_path: Path) -> None:
    doc = tmp_path / "long.txt"
    lines = [f"Line {n}: the kettle log entry number {n} says nothing new." for n in range(3000)]
    doc.write_text("\n".join(lines))
    passage = "\n".join(lines[1500:1504])
    view = section_view(doc, passage, context_chars=1000)
    assert view.text.startswith("…\n") and view.text.endswith("\n…")
    assert len(view.text) < 1600
    assert marked(view.text, view.spans) == [passage]


def test_section_view_errors(tmp_path: Path, three_pages: Path) -> None:
    with pytest.raises(SourceError, match="over the"):
        section_view(SAMPLES / "warranty-and-returns.md", WARRANTY_CHUNK, max_bytes=100)
    with pytest.raises(SourceError, match="PDF"):
        section_view(three_pages, "anything")
    with pytest.raises(SourceError, match="cannot be read"):
        section_view(tmp_path / "gone.md", "anything")
    (tmp_path / "data.xyz").write_text("x")
    with pytest.raises(SourceError, match="not a supported type"):
        section_view(tmp_path / "data.xyz", "anything")


# --- every chunk of every sample is found where it came from ------------------------------------
class WordCounter:
    """Words stand in for tokens, so the real splitter runs without a model."""

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(re.findall(r"\S+", text)) for text in texts]

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in re.finditer(r"\S+", text)]


@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLES.iterdir()))
def test_every_sample_chunk_is_located(name: str) -> None:
    path = SAMPLES / name
    doc = load_file(path)
    chunks = Splitter(WordCounter(), ChunkingConfig(40, 8)).split(doc, name, name)
    assert len(chunks) > 3
    for chunk in chunks:
        if doc.kind == "pdf":
            assert chunk.page_start is not None
            views = render_pdf_pages(path, chunk.page_start, chunk.page_end, chunk.text, scale=0.3)
            assert all(v.marks > 0 for v in views), (chunk.page_start, chunk.text[:60])
            continue
        view = section_view(path, chunk.text, chunk.headings)
        assert view.title == (" > ".join(chunk.headings) or name)
        body = chunk.text.partition("\n")[2] if chunk.headings else chunk.text
        assert len(view.spans) == 1, chunk.text[:60]
        found = words(marked(view.text, view.spans)[0])
        assert words(body) in found  # all of the chunk, and at most its heading line besides
        assert len(found) <= len(words(chunk.text))


# --- HTML --------------------------------------------------------------------------------------
HOSTILE = (
    "Intro <script>alert('x')</script> then <img src=x onerror=alert(1)> and "
    "![x](http://evil/) plus [link](javascript:alert(1)) **bold** $x^2$ :red[hi]\n\n"
    "# not a heading\n    not code <mark>fake</mark> & done"
)


def test_passage_html_escapes_everything_but_its_marks() -> None:
    spans = [(6, 38), (HOSTILE.index("![x]"), HOSTILE.index(" plus"))]
    out = passage_html(HOSTILE, spans)
    assert out.startswith('<div style="white-space: pre-wrap">') and out.endswith("</div>")
    inner = out[len('<div style="white-space: pre-wrap">') : -len("</div>")]
    assert inner.count("<mark>") == 2 and inner.count("</mark>") == 2
    bare = inner.replace("<mark>", "").replace("</mark>", "")
    for dangerous in ("<", ">", "](", "![", "[link]", "**", "$", "\n"):
        assert dangerous not in bare
    assert html.unescape(bare) == HOSTILE  # nothing lost, nothing added
    first = inner[inner.index("<mark>") + 6 : inner.index("</mark>")]
    assert html.unescape(first) == HOSTILE[6:38]


def test_passage_html_handles_odd_spans() -> None:
    text = "one two three"
    out = passage_html(text, [(8, 100), (-5, 3), (4, 7), (2, 2)])
    assert out == '<div style="white-space: pre-wrap"><mark>one</mark> <mark>two</mark> ' \
        "<mark>three</mark></div>"
    assert passage_html("", []) == '<div style="white-space: pre-wrap"></div>'
