"""ingest.loaders: small fixtures made in tmp_path first, then the real documents in ../shared."""

from __future__ import annotations

import functools
import importlib.util
import json
import time
from pathlib import Path

import pypdf
import pytest
from pypdf import PdfWriter

from ingest.loaders import SUPPORTED_SUFFIXES, kind_of, load_file
from ingest.loaders.common import normalise_text
from ingest.loaders.ocr import OcrOptions
from rag_app.errors import (
    EmptyDocument,
    FileTooLarge,
    LoadError,
    NeedsOCR,
    NeedsPassword,
    ParseError,
    UnsupportedFile,
)
from rag_app.records import LoadedDocument
from tests.pdfgen import make_pdf
from tests.shared_data import shared_path

NO_OCR = OcrOptions(mode="off")  # scanned pages stay "needs OCR" (tests/test_ocr.py: with OCR)


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def encrypted_pdf(path: Path, pages: list[str], *, user: str, owner: str | None) -> Path:
    plain = make_pdf(path.with_suffix(".plain.pdf"), pages)
    writer = PdfWriter(clone_from=plain)
    writer.encrypt(user_password=user, owner_password=owner, algorithm="AES-256")
    with path.open("wb") as handle:
        writer.write(handle)
    return path


# --- kinds and limits ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("a.pdf", "pdf"),
        ("A.PDF", "pdf"),
        ("a.md", "markdown"),
        ("a.markdown", "markdown"),
        ("a.txt", "text"),
        ("a.text", "text"),
        ("a.rst", "text"),
        ("a.html", "html"),
        ("a.HTM", "html"),
        ("a.docx", "docx"),
        ("a.PPTX", "pptx"),
        ("a.xlsx", "xlsx"),
        ("a.csv", "csv"),
        ("a.epub", "epub"),
        ("a.png", "image"),
        ("a.JPG", "image"),
        ("a.tif", "image"),
        ("a.doc", None),
        ("a.xls", None),
        ("Makefile", None),
    ],
)
def test_kind_of(name: str, kind: str | None) -> None:
    assert kind_of(Path(name)) == kind


def test_supported_suffixes_are_lower_case_with_dot() -> None:
    assert all(s.startswith(".") and s == s.lower() for s in SUPPORTED_SUFFIXES)
    assert set(SUPPORTED_SUFFIXES.values()) == {"pdf", "markdown", "text", "html", "docx", "pptx",
                                                 "xlsx", "csv", "epub", "image"}


def test_unsupported_suffix(tmp_path: Path) -> None:
    path = write(tmp_path / "report.doc", "x")
    with pytest.raises(UnsupportedFile, match=r"report\.doc.*supported: "):
        load_file(path)


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match=r"nope\.txt"):
        load_file(tmp_path / "nope.txt")


@pytest.mark.parametrize("name", ["folder.pdf", "folder.md"])
def test_directory_with_a_document_suffix(tmp_path: Path, name: str) -> None:
    (tmp_path / name).mkdir()
    with pytest.raises(LoadError, match="cannot be read"):
        load_file(tmp_path / name)


def test_too_large_is_refused_before_parsing(tmp_path: Path) -> None:
    path = write(tmp_path / "big.pdf", b"not a pdf at all" * 100)  # would be a ParseError
    with pytest.raises(FileTooLarge, match=r"big\.pdf is 0\.0 MB, over the 0\.0 MB limit"):
        load_file(path, max_bytes=1000)
    with pytest.raises(ParseError):
        load_file(path, max_bytes=10_000)


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(EmptyDocument, match="empty"):
        load_file(write(tmp_path / "empty.md", b""))


def test_errors_carry_reason_labels(tmp_path: Path) -> None:
    with pytest.raises(LoadError) as caught:
        load_file(write(tmp_path / "x.bin.txt", bytes(range(256)) * 8))
    assert caught.value.reason == "parse error"


# --- shared text helpers ------------------------------------------------------------------------
def test_normalise_text() -> None:
    raw = "a  \r\nb\t\r\n\r\n\r\n\r\nc\x00d   \n\n\n\n"
    assert normalise_text(raw) == "a\nb\n\ncd"


# --- Markdown ------------------------------------------------------------------------------------
MARKDOWN = """---
title: Kettle Guide
tags: [a, b]
---

Intro text before any heading.

# Extensions

## Tables

Use pipes.

```python
# not a heading
x = 1
```

~~~
## not a heading either
~~~

### Alignment ###

Colons align columns.

## Empty

## Footnotes {: #notes }

Footnote text.

Setext Title
============

Setext body.

Sub Setext
----------

Sub body.
"""


def test_markdown_sections_and_heading_paths(tmp_path: Path) -> None:
    doc = load_file(write(tmp_path / "guide.md", MARKDOWN))
    assert isinstance(doc, LoadedDocument)
    assert doc.kind == "markdown"
    assert doc.title == "Kettle Guide"
    assert doc.pages == 0
    paths = [s.headings for s in doc.sections]
    assert paths == [
        (),
        ("Extensions", "Tables"),
        ("Extensions", "Tables", "Alignment"),
        ("Extensions", "Footnotes"),
        ("Setext Title",),
        ("Setext Title", "Sub Setext"),
    ]
    intro, tables, alignment = doc.sections[:3]
    assert intro.text == "Intro text before any heading."
    # the heading is the section's first line, as plain text
    assert tables.text.splitlines()[0] == "Tables"
    assert "# not a heading" in tables.text
    assert "## not a heading either" in tables.text
    assert alignment.text == "Alignment\n\nColons align columns."
    assert "tags:" not in "".join(s.text for s in doc.sections)
    assert all(s.page_start is None and s.page_end is None for s in doc.sections)


def test_markdown_title_falls_back_to_first_h1(tmp_path: Path) -> None:
    doc = load_file(
        write(tmp_path / "n.md", "Text.\n\n## Two\n\nx\n\n# One\n\ny\n\n# Later\n\nz\n")
    )
    assert doc.title == "One"


def test_markdown_without_headings_is_one_section(tmp_path: Path) -> None:
    doc = load_file(write(tmp_path / "n.md", "Just text.\n\nMore text.\n"))
    assert [(s.text, s.headings) for s in doc.sections] == [("Just text.\n\nMore text.", ())]
    assert doc.title is None


def test_markdown_list_before_dashes_is_not_a_heading(tmp_path: Path) -> None:
    doc = load_file(write(tmp_path / "n.md", "- item one\nlazy line\n---\n\ntext\n"))
    assert [s.headings for s in doc.sections] == [()]


@pytest.mark.parametrize(
    "front",
    [
        "---\ntitle: [unclosed\n---\n",  # YAML error
        "---\ntitle: a: b: c\n---\n",  # YAML error
        "---\n- a list\n- not a mapping\n---\n",  # valid YAML, not a mapping
    ],
)
def test_markdown_malformed_front_matter_does_not_crash(tmp_path: Path, front: str) -> None:
    doc = load_file(write(tmp_path / "bad.md", front + "\n# Heading\n\nBody text.\n"))
    texts = "\n".join(s.text for s in doc.sections)
    assert "Body text." in texts
    assert "title:" not in texts
    assert "not a mapping" not in texts
    assert doc.title == "Heading"


def test_markdown_only_front_matter_is_empty(tmp_path: Path) -> None:
    with pytest.raises(EmptyDocument):
        load_file(write(tmp_path / "fm.md", "---\ntitle: Nothing else\n---\n\n"))


# --- plain text ----------------------------------------------------------------------------------
def test_text_utf8_is_one_section(tmp_path: Path) -> None:
    doc = load_file(write(tmp_path / "a.txt", "Line one  \r\nLine two\n\n\n\n\nEnd — ok ✓\n"))
    assert doc.kind == "text"
    assert [(s.text, s.headings) for s in doc.sections] == [
        ("Line one\nLine two\n\nEnd — ok ✓", ())
    ]


def test_text_utf8_bom_and_utf16(tmp_path: Path) -> None:
    assert load_file(write(tmp_path / "b.txt", b"\xef\xbb\xbfBOM text")).sections[0].text == (
        "BOM text"
    )
    utf16 = "Grüße in UTF-16".encode("utf-16")  # with BOM, so NUL bytes are fine
    assert load_file(write(tmp_path / "c.txt", utf16)).sections[0].text == "Grüße in UTF-16"


@pytest.mark.parametrize(
    "text",
    [
        "Café crème brûlée, naïve façade, déjà vu. Ça coûte 5 €.",
        "Grüße aus Köln. Übung macht den Meister, schön!",
    ],
)
def test_text_in_cp1252_is_decoded(tmp_path: Path, text: str) -> None:
    doc = load_file(write(tmp_path / "latin.txt", text.encode("cp1252")))
    assert doc.sections[0].text == text


def test_text_latin1_is_decoded(tmp_path: Path) -> None:
    text = "Le thé est prêt à 95 °C; la bouilloire coûte 49 £."
    doc = load_file(write(tmp_path / "latin.txt", text.encode("latin-1")))
    assert doc.sections[0].text == text


def test_text_with_invalid_bytes_does_not_crash(tmp_path: Path) -> None:
    data = "Mostly valid UTF-8 text — with ümlauts. ".encode() * 20 + b"\xff\xfe\x80 end"
    doc = load_file(write(tmp_path / "mixed.txt", data))
    text = doc.sections[0].text
    assert text.startswith("Mostly valid")
    assert text.endswith("end")


@pytest.mark.parametrize(
    "data",
    [
        b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40,
        b"\x7fELF\x02\x01\x01" + b"\x00" * 9 + b"\x02\x00\x3e\x00",
    ],
)
def test_binary_file_is_refused(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(ParseError, match=r"binary\.txt looks binary"):
        load_file(write(tmp_path / "binary.txt", data))


def test_a_log_with_a_stray_utf16_line_is_text(tmp_path: Path) -> None:
    """Issue 24 point 6: a log mixing encodings (UTF-8 lines, a UTF-16 line from another tool,
    with or without its BOM) is text: NUL bytes inside UTF-16 runs are not
    'binary', and each run is read in its own encoding."""
    data = (
        "2026-01-05 10:00:01 service started, Grüße\n".encode()
        + "2026-01-05 10:00:02 Fehler: Datei nicht gefunden (café)\r\n".encode("utf-16-le")
        + b"2026-01-05 10:00:03 retry ok\n"
        + "\ufeff2026-01-05 10:00:04 second tool: naïve\r\n".encode("utf-16-le")
        + b"2026-01-05 10:00:05 done\n"
    )
    doc = load_file(write(tmp_path / "service.log.txt", data))
    assert doc.sections[0].text.split("\n") == [
        "2026-01-05 10:00:01 service started, Grüße",
        "2026-01-05 10:00:02 Fehler: Datei nicht gefunden (café)",
        "2026-01-05 10:00:03 retry ok",
        "2026-01-05 10:00:04 second tool: naïve",
        "2026-01-05 10:00:05 done",
    ]


def test_bomless_utf16_text_is_text(tmp_path: Path) -> None:
    for codec in ("utf-16-le", "utf-16-be"):
        data = "Warranty: two years from purchase.\nÉtendue: 3 ans.\n".encode(codec)
        doc = load_file(write(tmp_path / f"{codec}.txt", data))
        assert doc.sections[0].text == "Warranty: two years from purchase.\nÉtendue: 3 ans."


def test_binary_with_utf16_strings_is_still_binary(tmp_path: Path) -> None:
    """A program's UTF-16 resource strings do not make the rest of it text."""
    data = (b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" * 40
            + "FileDescription".encode("utf-16-le") + bytes(range(32)) * 20)
    with pytest.raises(ParseError, match=r"prog\.txt looks binary"):
        load_file(write(tmp_path / "prog.txt", data))


def test_a_stray_nul_is_dropped_not_fatal(tmp_path: Path) -> None:
    doc = load_file(write(tmp_path / "nul.txt", b"hello\x00 world\n"))
    assert doc.sections[0].text == "hello world"


def test_whitespace_only_text_is_empty(tmp_path: Path) -> None:
    with pytest.raises(EmptyDocument):
        load_file(write(tmp_path / "blank.txt", " \n\t\n \n"))


# --- HTML ----------------------------------------------------------------------------------------
HTML = """<!DOCTYPE html>
<html><head>
<meta charset="utf-8">
<title>Aurora Help</title>
<style>body { color: red }</style>
<script>var secret = "SCRIPT-TEXT";</script>
</head><body>
<header><a href="/">Logo SITE-HEADER</a></header>
<nav><ul><li>NAV-LINK one</li><li>NAV-LINK two</li></ul></nav>
<div role="navigation">ROLE-NAV</div>
<aside>ASIDE-TEXT</aside>
<main>
  <h1>Help Centre<a class="headerlink" href="#h">¶</a></h1>
  <p>Welcome to the <b>help</b> centre.</p>
  <h2 id="descale">Descaling</h2>
  <p>Descale every   <em>four</em>
     weeks.</p>
  <pre>step 1:  fill
step 2:  boil</pre>
  <div hidden>HIDDEN-ATTR</div>
  <span aria-hidden="true">ARIA-HIDDEN</span>
  <p style="display: none">DISPLAY-NONE</p>
  <form><button>BUTTON-TEXT</button></form>
  <h3>Vinegar</h3>
  <ul><li>One part vinegar</li><li>Two parts water</li></ul>
  <table><tr><th>Model</th><th>Litres</th></tr><tr><td>K1</td><td>1.7</td></tr></table>
  <h2>Warranty</h2>
  <p>Two years.</p>
  <noscript>NOSCRIPT</noscript><template>TEMPLATE</template>
  <svg><title>SVG-TITLE</title><text>SVG-TEXT</text></svg>
  <iframe src="x">IFRAME</iframe>
</main>
<p>OUTSIDE-MAIN</p>
<footer>FOOTER-TEXT</footer>
<script>document.write("SCRIPT-TWO")</script>
</body></html>
"""


def test_html_visible_main_text_split_by_headings(tmp_path: Path) -> None:
    doc = load_file(write(tmp_path / "help.html", HTML))
    assert doc.kind == "html"
    assert doc.title == "Aurora Help"
    everything = "\n".join(s.text for s in doc.sections)
    for leaked in (
        "SCRIPT", "SITE-HEADER", "NAV-LINK", "ROLE-NAV", "ASIDE-TEXT", "HIDDEN-ATTR",
        "ARIA-HIDDEN", "DISPLAY-NONE", "BUTTON-TEXT", "NOSCRIPT", "TEMPLATE", "SVG-",
        "IFRAME", "OUTSIDE-MAIN", "FOOTER-TEXT", "color: red", "¶",
    ):  # fmt: skip
        assert leaked not in everything
    assert [s.headings for s in doc.sections] == [
        ("Help Centre",),
        ("Help Centre", "Descaling"),
        ("Help Centre", "Descaling", "Vinegar"),
        ("Help Centre", "Warranty"),
    ]
    help_centre, descaling, vinegar, warranty = doc.sections
    assert help_centre.text == "Help Centre\n\nWelcome to the help centre."
    assert descaling.text.startswith("Descaling\n\nDescale every four weeks.")
    assert "step 1:  fill\nstep 2:  boil" in descaling.text  # <pre> keeps its layout
    assert "One part vinegar\nTwo parts water" in vinegar.text
    assert "Model | Litres\nK1 | 1.7" in vinegar.text
    assert warranty.text == "Warranty\n\nTwo years."


def test_html_without_main_uses_body_and_h1_title(tmp_path: Path) -> None:
    page = (
        "<html><body><header><h1>Site Title</h1><p>tagline</p></header>"
        "<nav>menu</nav><p>Body text.</p></body></html>"
    )
    doc = load_file(write(tmp_path / "p.htm", page))
    assert doc.title == "Site Title"
    assert [(s.headings, s.text) for s in doc.sections] == [
        (("Site Title",), "Site Title\n\nBody text.")
    ]


def test_html_declared_charset_is_used(tmp_path: Path) -> None:
    page = '<html><head><meta charset="windows-1252"><title>Thé</title></head>'
    page += "<body><p>Crème brûlée — 5 €</p></body></html>"
    doc = load_file(write(tmp_path / "cp.html", page.encode("cp1252")))
    assert doc.title == "Thé"
    assert doc.sections[0].text == "Crème brûlée — 5 €"


def test_html_without_text_is_empty(tmp_path: Path) -> None:
    page = "<html><body><nav>only nav</nav><script>x()</script></body></html>"
    with pytest.raises(EmptyDocument):
        load_file(write(tmp_path / "e.html", page))


def test_html_deep_nesting_does_not_crash(tmp_path: Path) -> None:
    page = "<html><body>" + "<div>" * 5000 + "deep text" + "</div>" * 5000 + "</body></html>"
    doc = load_file(write(tmp_path / "deep.html", page))
    assert "deep text" in doc.sections[0].text


# --- PDF -----------------------------------------------------------------------------------------
def test_pdfgen_round_trip(tmp_path: Path) -> None:
    long_line = "word " * 60
    path = make_pdf(tmp_path / "g.pdf", ["Brackets (a) and \\ back", long_line, ""], title="T")
    reader = pypdf.PdfReader(path)
    assert len(reader.pages) == 3
    assert reader.pages[0].extract_text() == "Brackets (a) and \\ back"
    assert len(reader.pages[1].extract_text().splitlines()) == 4  # wrapped at ~90 characters
    assert reader.pages[2].extract_text() == ""
    assert reader.metadata is not None
    assert reader.metadata.title == "T"
    with pytest.raises(ValueError, match="lines"):
        make_pdf(tmp_path / "too-long.pdf", ["x\n" * 100])


def test_pdf_one_section_per_page(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "m.pdf", ["First  page\ttext.", "Second page.", "Third."], title="M")
    calls: list[tuple[int, int]] = []
    doc = load_file(path, progress=lambda done, total: calls.append((done, total)))
    assert doc.kind == "pdf"
    assert doc.pages == 3
    assert doc.title == "M"
    assert doc.warnings == ()
    assert [(s.text, s.page_start, s.page_end, s.headings) for s in doc.sections] == [
        ("First page text.", 1, 1, ()),
        ("Second page.", 2, 2, ()),
        ("Third.", 3, 3, ()),
    ]
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_pdf_pages_without_text_are_listed(tmp_path: Path) -> None:
    pages = ["one", "", "", "", "five", "six", "", "eight"]
    doc = load_file(make_pdf(tmp_path / "s.pdf", pages), ocr=NO_OCR)
    assert [s.page_start for s in doc.sections] == [1, 5, 6, 8]
    assert doc.warnings == ("pages 2-4, 7 have no text layer (needs OCR)",)
    single = load_file(make_pdf(tmp_path / "t.pdf", ["one", ""]), ocr=NO_OCR)
    assert single.warnings == ("page 2 has no text layer (needs OCR)",)


def test_pdf_without_any_text_needs_ocr(tmp_path: Path) -> None:
    with pytest.raises(NeedsOCR, match=r"scan\.pdf has no text layer.*OCR is off"):
        load_file(make_pdf(tmp_path / "scan.pdf", ["", ""]), ocr=NO_OCR)


def test_pdf_with_only_blank_pages_is_empty(tmp_path: Path) -> None:
    writer = PdfWriter()
    writer.add_blank_page(200, 200)
    path = tmp_path / "blank.pdf"
    with path.open("wb") as handle:
        writer.write(handle)
    with pytest.raises(EmptyDocument, match="blank"):
        load_file(path)


def test_pdf_with_zero_pages(tmp_path: Path) -> None:
    path = tmp_path / "zero.pdf"
    with path.open("wb") as handle:
        PdfWriter().write(handle)
    with pytest.raises(EmptyDocument, match="no pages"):
        load_file(path)


@pytest.mark.parametrize(
    "data",
    [b"%PDF-1.7\nthis is not really a pdf", b"garbage", b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog"],
)
def test_pdf_garbage_is_a_parse_error(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(ParseError, match=r"junk\.pdf"):
        load_file(write(tmp_path / "junk.pdf", data))


def test_pdf_page_extraction_failure_skips_that_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_pdf(tmp_path / "f.pdf", ["one", "two", "three"])
    original = pypdf.PageObject.extract_text

    def flaky(self: pypdf.PageObject, *args: object, **kwargs: object) -> str:
        text = original(self, *args, **kwargs)  # type: ignore[arg-type]
        if text == "two":
            raise ValueError("broken content stream")
        return text

    monkeypatch.setattr(pypdf.PageObject, "extract_text", flaky)
    doc = load_file(path)
    assert [s.page_start for s in doc.sections] == [1, 3]
    assert doc.warnings == (
        "page 2 was skipped: text extraction failed (ValueError: broken content stream)",
    )

    def broken(self: pypdf.PageObject, *args: object, **kwargs: object) -> str:
        raise KeyError("/Contents")

    monkeypatch.setattr(pypdf.PageObject, "extract_text", broken)
    with pytest.raises(ParseError, match="every page"):
        load_file(path)


def test_encrypted_pdf(tmp_path: Path) -> None:
    path = encrypted_pdf(tmp_path / "enc.pdf", ["Secret page."], user="s3cret", owner="0wner")
    with pytest.raises(NeedsPassword) as no_password:
        load_file(path)
    assert str(no_password.value) == (
        f"{path} is encrypted; pass --password PW or set RAG_PDF_PASSWORD"
    )
    with pytest.raises(NeedsPassword, match="the given password does not open it") as wrong:
        load_file(path, passwords=["hunter2"])
    assert "hunter2" not in str(wrong.value)
    with pytest.raises(NeedsPassword, match="none of the 2 given passwords") as wrong_two:
        load_file(path, passwords=["hunter2", "letmein"])
    assert "hunter2" not in str(wrong_two.value)
    assert "letmein" not in str(wrong_two.value)
    for passwords in (["s3cret"], ["wrong", "s3cret"], ["0wner"]):
        doc = load_file(path, passwords=passwords)
        assert [s.text for s in doc.sections] == ["Secret page."]


def test_owner_password_only_pdf_opens_without_password(tmp_path: Path) -> None:
    path = encrypted_pdf(tmp_path / "owner.pdf", ["Open to read."], user="", owner="only-owner")
    assert pypdf.PdfReader(path).is_encrypted
    assert [s.text for s in load_file(path).sections] == ["Open to read."]


# --- the project's own samples (data/samples, made by data/make_samples.py) ---------------------
SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"


def test_samples_all_load_without_decoys() -> None:
    docs = {path.name: load_file(path) for path in sorted(SAMPLES.iterdir())}
    assert {doc.kind for doc in docs.values()} == {"pdf", "markdown", "text", "html"}
    assert all(doc.warnings == () for doc in docs.values())
    manual = docs["ak200-user-manual.pdf"]
    assert manual.pages == 5
    assert manual.title == "Aurora AK-200 Electric Kettle - User Manual"
    descaling = manual.sections[3]
    assert descaling.page_start == 4
    assert "2 tablespoons (about 30 g) of citric acid" in descaling.text
    faq = docs["support-faq.html"]
    assert ("Support FAQ", "Can I use the kettle at high altitude?") in {
        s.headings for s in faq.sections
    }
    everything = "\n".join(s.text for doc in docs.values() for s in doc.sections)
    for decoy in ("50%", "FREEKETTLE", "prize draw", "rights reserved", "dataLayer"):
        assert decoy not in everything
    warranty = docs["warranty-and-returns.md"]
    assert warranty.title == "Warranty and Returns Policy"
    assert "# Subject line format" in warranty.sections[-1].text


def test_sample_pdfs_are_up_to_date(tmp_path: Path) -> None:
    """The committed PDFs hold what data/make_samples.py writes today."""
    spec = importlib.util.spec_from_file_location(
        "make_samples", SAMPLES.parent / "make_samples.py"
    )
    assert spec is not None and spec.loader is not None
    make_samples = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_samples)
    for name, pages, title in (
        ("ak200-user-manual.pdf", make_samples.MANUAL_PAGES, make_samples.MANUAL_TITLE),
        ("customer-policies-2024.pdf", make_samples.POLICIES_PAGES, make_samples.POLICIES_TITLE),
    ):
        fresh = make_pdf(
            tmp_path / name, [make_samples.reflow(page) for page in pages], title=title
        )
        assert load_file(SAMPLES / name) == load_file(fresh), f"rerun data/make_samples.py ({name})"


# --- real documents in ../shared/docs -----------------------------------------------------------
@pytest.fixture(scope="session")
def docs() -> Path:
    return shared_path("docs")


@functools.cache
def load_once(path: Path) -> LoadedDocument:
    """Load a big real document once per session (LoadedDocument is immutable)."""
    return load_file(path)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("name", "pages"), [("R-FAQ.pdf", 52), ("R-intro.pdf", 113), ("R-data.pdf", 41)]
)
def test_r_manuals_load_every_page(docs: Path, name: str, pages: int) -> None:
    doc = load_once(docs / "pdf" / name)
    assert doc.kind == "pdf"
    assert doc.pages == pages
    assert doc.warnings == ()
    assert [s.page_start for s in doc.sections] == list(range(1, pages + 1))
    assert all(s.page_start == s.page_end and s.text.strip() for s in doc.sections)
    assert all("\x00" not in s.text and "  " not in s.text for s in doc.sections)


def test_r_faq_text_lands_on_its_page(docs: Path) -> None:
    doc = load_once(docs / "pdf" / "R-FAQ.pdf")
    first = doc.sections[0].text
    assert "R FAQ" in first
    assert "Frequently Asked Questions on R" in first


ENCRYPTED = [
    ("r4-aes-user-password.pdf", "asdfzxcv"),
    ("r6-both-passwords.pdf", "foo"),  # user password
    ("r6-both-passwords.pdf", "bar"),  # owner password
    ("crazyones-encrypted-256.pdf", "password"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "name",
    [
        "r4-aes-user-password.pdf",
        "r6-both-passwords.pdf",
        "graph-encrypted.pdf",
        "crazyones-encrypted-256.pdf",
    ],
)
def test_encrypted_without_password_needs_one(docs: Path, name: str) -> None:
    with pytest.raises(NeedsPassword, match="--password PW or set RAG_PDF_PASSWORD"):
        load_file(docs / "pdf-encrypted" / name)
    with pytest.raises(NeedsPassword, match="does not open it"):
        load_file(docs / "pdf-encrypted" / name, passwords=["not-it"])


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("name", "password"), ENCRYPTED)
def test_encrypted_with_right_password_loads(docs: Path, name: str, password: str) -> None:
    doc = load_file(docs / "pdf-encrypted" / name, passwords=["wrong-first", password])
    assert doc.pages == 1
    assert doc.sections[0].text.strip()
    assert doc.sections[0].page_start == 1


@pytest.mark.timeout(60)
def test_graph_encrypted_opens_then_needs_ocr(docs: Path) -> None:
    with pytest.raises(NeedsOCR):
        load_file(docs / "pdf-encrypted" / "graph-encrypted.pdf", passwords=["user"],
                  ocr=NO_OCR)


BAD_PDFS = [
    "no-startxref.pdf",
    "truncated-stream.pdf",
    "zero-pages.pdf",
    "content-stream-errors.pdf",
    "cyclic-toc.pdf",
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", BAD_PDFS)
def test_bad_pdf_loads_or_raises_a_load_error(docs: Path, name: str) -> None:
    try:
        doc = load_file(docs / "pdf-bad" / name)
    except LoadError as exc:
        assert str(exc).startswith(str(docs / "pdf-bad" / name))
    else:
        assert doc.sections


@pytest.mark.timeout(60)
def test_every_file_in_pdf_bad_loads_or_raises_a_load_error(docs: Path) -> None:
    for path in sorted((docs / "pdf-bad").iterdir()):
        try:
            load_file(path)
        except LoadError:
            pass


# What each damaged file gives with pypdf today: pinned so a change in behaviour is noticed.
BAD_PDF_OUTCOMES = [
    ("no-startxref.pdf", ParseError),
    ("truncated-stream.pdf", ParseError),
    ("zero-pages.pdf", EmptyDocument),
    ("cyclic-toc.pdf", EmptyDocument),  # one page that draws nothing at all
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("name", "error"), BAD_PDF_OUTCOMES)
def test_bad_pdf_outcome(docs: Path, name: str, error: type[LoadError]) -> None:
    with pytest.raises(error):
        load_file(docs / "pdf-bad" / name)


@pytest.mark.timeout(60)
def test_content_stream_errors_keeps_the_readable_pages(docs: Path) -> None:
    doc = load_file(docs / "pdf-bad" / "content-stream-errors.pdf")
    assert doc.pages == 4
    assert [s.page_start for s in doc.sections] == [1, 2, 4]
    assert len(doc.warnings) == 1
    assert doc.warnings[0].startswith("page 3 was skipped: text extraction failed")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["congress.pdf", "scanned-R-FAQ-3p.pdf"])
def test_scanned_pdfs_need_ocr_when_it_is_off(docs: Path, name: str) -> None:
    with pytest.raises(NeedsOCR, match="no text layer"):
        load_file(docs / "pdf-scanned" / name, ocr=NO_OCR)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_large_manual_loads_every_page(docs: Path) -> None:
    path = docs / "pdf-large" / "R-refman-2415p.pdf"
    started = time.perf_counter()
    calls = 0

    def progress(done: int, total: int) -> None:
        nonlocal calls
        calls += 1

    doc = load_file(path, progress=progress)
    elapsed = time.perf_counter() - started
    assert doc.pages == 2415
    assert calls == 2415
    assert len(doc.sections) == 2415
    assert doc.sections[-1].page_start == 2415
    print(f"R-refman-2415p.pdf loaded in {elapsed:.1f} s")


FAQ_NAVIGATION = (
    "Table of Contents",
    "Previous topic",
    "Next topic",
    "This Page",
    "Report a Bug",
    "Show Source",
    "Navigation",
    "Quick search",
    "Please donate",
    "Last updated on",
    "Found a bug",
    "¶",
    "jQuery",
    "documentation_options",
)


def test_python_faq_html_has_no_navigation(docs: Path) -> None:
    pages = sorted((docs / "html" / "python-faq").glob("*.html"))
    assert len(pages) == 9
    for page in pages:
        doc = load_file(page)
        assert doc.kind == "html"
        assert doc.title and doc.title.endswith("Python 3.11.2 documentation")
        text = "\n".join(s.text for s in doc.sections)
        for leaked in FAQ_NAVIGATION:
            assert leaked not in text, f"{leaked!r} leaked into {page.name}"


def test_python_faq_questions_are_headings(docs: Path) -> None:
    doc = load_file(docs / "html" / "python-faq" / "design.html")
    assert ("Design and History FAQ", "Why is there no goto?") in {s.headings for s in doc.sections}
    goto = next(s for s in doc.sections if s.headings[-1:] == ("Why is there no goto?",))
    assert goto.text.startswith("Why is there no goto?\n\n")
    assert "exceptions" in goto.text
    programming = load_file(docs / "html" / "python-faq" / "programming.html")
    assert (
        "Programming FAQ",
        "General Questions",
        "Are there tools to help find bugs or perform static analysis?",
    ) in {s.headings for s in programming.sections}


def test_python_faq_question_set_matches_headings(docs: Path) -> None:
    """Each question of ../shared/qa is its answer's heading (typography aside)."""
    questions = [
        json.loads(line)
        for line in shared_path("qa", "python-faq.jsonl").read_text("utf-8").splitlines()
    ]
    plain = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"'})
    headings: dict[str, set[str]] = {}
    for page in (docs / "html" / "python-faq").glob("*.html"):
        sections = load_file(page).sections
        headings[page.name] = {s.headings[-1].translate(plain) for s in sections if s.headings}
    missing = [
        q["question"]
        for q in questions
        if " ".join(q["question"].split()).translate(plain) not in headings[q["gold_source"]]
    ]
    # the few left over carry reStructuredText markup (``id()``, *is*) in the question set
    assert len(missing) <= 5, missing


def test_markdown_docs_all_load_with_heading_paths(docs: Path) -> None:
    root = docs / "markdown" / "python-markdown-docs"
    files = sorted(root.rglob("*.md"))
    assert len(files) >= 60
    loaded = {path.relative_to(root).as_posix(): load_file(path) for path in files}
    assert len(loaded) == len(files)
    with_headings = [name for name, doc in loaded.items() if any(s.headings for s in doc.sections)]
    assert len(with_headings) >= 35  # the API reference stubs ('::: markdown.util') have none
    tables = loaded["extensions/tables.md"]
    assert tables.title == "Tables Extension"
    assert ("Tables", "Usage", "Examples") in {s.headings for s in tables.sections}
    api = loaded["extensions/api.md"]
    assert ("Writing Extensions for Python-Markdown", "Phases of processing", "Preprocessors") in {
        s.headings for s in api.sections
    }
    for name, doc in loaded.items():
        for section in doc.sections:
            assert section.text.strip(), name
            assert not section.text.startswith("---\n"), f"front matter left in {name}"
