"""PDF text that keeps its words: the parsers (RAG_PDF_PARSER), the glued-word detector, and
the parser in the index fingerprint.

`make_glued_pdf` (bench/pdf_text.py, which measures the same) writes what a user study found in
a real manual: words placed one by one with TJ positioning offsets and no space characters, in
a font whose code 32 is declared wide. pypdf takes a TJ offset for a word gap only beyond 95% of
half that width, so it runs the words together ("Inadditiontotheremotely…"); pdfium looks at
where the glyphs land and keeps them apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pypdf
import pypdfium2 as pdfium
import pytest
from pypdf import PdfWriter

import ingest.loaders.pdf as loaders
from bench.pdf_text import STUDY, make_glued_pdf
from ingest.loaders import load_file
from ingest.loaders.ocr import OcrOptions
from ingest.loaders.pdf import GLUED_PAGE_SHARE, PdfParser, glued_share
from ingest.rebuild import only_code_changed
from ingest.sync import Ingestor
from rag_app.errors import EmptyDocument, LoadError, NeedsOCR, NeedsPassword, ParseError
from tests.conftest import make_settings
from tests.pdfgen import make_pdf
from tests.shared_data import shared_path

NO_OCR = OcrOptions(mode="off")  # pages without text stay "needs OCR" (with OCR: test_ocr.py)

PARSERS = ["auto", "pypdfium2", "pypdf"]


def _words(text: str) -> list[str]:
    return text.replace(",", " ").replace(".", " ").split()


# --- the detector ----------------------------------------------------------------------------
def test_glued_share() -> None:
    assert glued_share("") == 0.0
    assert glued_share("12 345 -- ...") == 0.0
    assert glued_share(STUDY) == 0.0
    glued = "Inadditiontotheremotelyfetchedmetadata,theAPTtoolafter lenny"
    assert glued_share(glued) == pytest.approx(1 / 3)  # 3 runs of letters, one is 20+ long
    assert glued_share("internationalisation") == 1.0  # 20 letters
    assert glued_share("internationalisatio") == 0.0  # 19
    assert glued_share("suppress_package_startup_messages 2024") == 0.0  # '_' splits words


def test_clean_pdf_text_restores_pdfium_line_end_hyphens_and_drops_controls() -> None:
    clean = loaders._clean_pdf_text
    assert clean("the R for Win\ufffedows FAQ") == "the R for Win-\ndows FAQ"
    assert clean("\x14 A \x15 \x08 x\x7f\x1e y\r\nz") == "A x y\nz"
    assert clean("tab\there ﬁne") == "tab here fine"


# --- glued words: pypdf vs the default ---------------------------------------------------------
def test_pypdf_runs_the_words_together(tmp_path: Path) -> None:
    path = make_glued_pdf(tmp_path / "glued.pdf", [STUDY])
    raw = pypdf.PdfReader(path).pages[0].extract_text()
    assert "Inadditiontotheremotely" in raw.replace("\n", "")
    text = load_file(path, pdf_parser="pypdf").sections[0].text
    assert glued_share(text) >= GLUED_PAGE_SHARE  # the detector fires
    assert "addition to" not in text


@pytest.mark.parametrize("parser", ["auto", "pypdfium2"])
def test_default_and_pdfium_keep_the_words_apart(tmp_path: Path, parser: PdfParser) -> None:
    glued = make_glued_pdf(tmp_path / "glued.pdf", [STUDY, "", STUDY.upper()], title="Glued")
    calls: list[tuple[int, int]] = []
    doc = load_file(glued, pdf_parser=parser, ocr=NO_OCR,
                    progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert doc.title == "Glued" and doc.pages == 3
    assert [(s.page_start, s.page_end) for s in doc.sections] == [(1, 1), (3, 3)]
    assert doc.warnings == ("page 2 has no text layer (needs OCR)",)
    assert _words(doc.sections[0].text) == _words(STUDY)
    assert _words(doc.sections[1].text) == _words(STUDY.upper())
    assert all(glued_share(s.text) == 0.0 for s in doc.sections)
    assert load_file(glued, ocr=NO_OCR) == load_file(glued, pdf_parser="auto", ocr=NO_OCR)


def test_auto_changes_only_the_glued_pages(tmp_path: Path) -> None:
    glued = make_glued_pdf(tmp_path / "glued.pdf", [STUDY])
    plain = make_pdf(tmp_path / "plain.pdf", ["Set with real spaces, word by word.", "", STUDY])
    merged = PdfWriter(clone_from=plain)
    merged.insert_page(pypdf.PdfReader(glued).pages[0], 1)  # plain, glued, figure, plain
    path = tmp_path / "mixed.pdf"
    with path.open("wb") as handle:
        merged.write(handle)
    auto, old = load_file(path, ocr=NO_OCR), load_file(path, pdf_parser="pypdf", ocr=NO_OCR)
    assert [s.page_start for s in auto.sections] == [s.page_start for s in old.sections] == [
        1, 2, 4]
    assert auto.warnings == old.warnings == ("page 3 has no text layer (needs OCR)",)
    assert auto.sections[0] == old.sections[0] and auto.sections[2] == old.sections[2]
    assert glued_share(old.sections[1].text) >= GLUED_PAGE_SHARE
    assert _words(auto.sections[1].text) == _words(STUDY)


def test_auto_reads_glued_pages_of_an_encrypted_file_with_its_password(tmp_path: Path) -> None:
    plain = make_glued_pdf(tmp_path / "plain.pdf", [STUDY])
    writer = PdfWriter(clone_from=plain)
    writer.encrypt(user_password="s3cret", owner_password="0wner", algorithm="AES-256")
    path = tmp_path / "locked.pdf"
    with path.open("wb") as handle:
        writer.write(handle)
    for password in ("s3cret", "0wner"):
        doc = load_file(path, passwords=["wrong", password])
        assert _words(doc.sections[0].text) == _words(STUDY)


def test_auto_keeps_pypdf_text_when_pdfium_cannot_help(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_glued_pdf(tmp_path / "glued.pdf", [STUDY, STUDY])
    glued = load_file(path, pdf_parser="pypdf")

    def cannot_open(*args: object, **kwargs: object) -> Any:
        raise pdfium.PdfiumError("Failed to load document")

    monkeypatch.setattr(loaders.pdfium, "PdfDocument", cannot_open)
    assert load_file(path) == glued
    monkeypatch.undo()

    # pdfium's text is taken only when fewer of its words are glued
    monkeypatch.setattr(loaders, "_read_pdfium_page", lambda document, number: (
        "Everythingrantogetherhereaswell", True))
    assert load_file(path) == glued


# --- what the PDF loader does, with every parser ----------------------------------------------
@pytest.mark.parametrize("parser", PARSERS)
def test_pages_progress_and_title(tmp_path: Path, parser: PdfParser) -> None:
    path = make_pdf(tmp_path / "m.pdf", ["First  page\ttext.", "Second page.", "Third."], title="M")
    calls: list[tuple[int, int]] = []
    doc = load_file(path, pdf_parser=parser,
                    progress=lambda done, total: calls.append((done, total)))
    assert (doc.kind, doc.pages, doc.title, doc.warnings) == ("pdf", 3, "M", ())
    assert [(s.text, s.page_start, s.page_end) for s in doc.sections] == [
        ("First page text.", 1, 1), ("Second page.", 2, 2), ("Third.", 3, 3)]
    assert calls == [(1, 3), (2, 3), (3, 3)]


@pytest.mark.parametrize("parser", PARSERS)
def test_pages_without_text(tmp_path: Path, parser: PdfParser) -> None:
    pages = ["one", "", "", "", "five", "six", "", "eight"]
    doc = load_file(make_pdf(tmp_path / "s.pdf", pages), pdf_parser=parser, ocr=NO_OCR)
    assert [s.page_start for s in doc.sections] == [1, 5, 6, 8]
    assert doc.warnings == ("pages 2-4, 7 have no text layer (needs OCR)",)
    with pytest.raises(NeedsOCR, match=r"scan\.pdf has no text layer.*OCR"):
        load_file(make_pdf(tmp_path / "scan.pdf", ["", ""]), pdf_parser=parser, ocr=NO_OCR)


@pytest.mark.parametrize("parser", PARSERS)
def test_blank_zero_page_garbage_and_unreadable(tmp_path: Path, parser: PdfParser) -> None:
    writer = PdfWriter()
    writer.add_blank_page(200, 200)
    with (tmp_path / "blank.pdf").open("wb") as handle:
        writer.write(handle)
    with (tmp_path / "zero.pdf").open("wb") as handle:
        PdfWriter().write(handle)
    (tmp_path / "junk.pdf").write_bytes(b"%PDF-1.7\nthis is not really a pdf")
    (tmp_path / "folder.pdf").mkdir()
    with pytest.raises(EmptyDocument, match="blank"):
        load_file(tmp_path / "blank.pdf", pdf_parser=parser)
    with pytest.raises(EmptyDocument, match="no pages"):
        load_file(tmp_path / "zero.pdf", pdf_parser=parser)
    with pytest.raises(ParseError, match=r"junk\.pdf is not a readable PDF"):
        load_file(tmp_path / "junk.pdf", pdf_parser=parser)
    with pytest.raises(LoadError, match="cannot be read"):
        load_file(tmp_path / "folder.pdf", pdf_parser=parser)


@pytest.mark.parametrize("parser", PARSERS)
def test_passwords(tmp_path: Path, parser: PdfParser) -> None:
    plain = make_pdf(tmp_path / "plain.pdf", ["Secret page."])
    path = tmp_path / "enc.pdf"
    writer = PdfWriter(clone_from=plain)
    writer.encrypt(user_password="s3cret", owner_password="0wner", algorithm="AES-256")
    with path.open("wb") as handle:
        writer.write(handle)
    with pytest.raises(NeedsPassword) as none:
        load_file(path, pdf_parser=parser)
    assert str(none.value) == f"{path} is encrypted; pass --password PW or set RAG_PDF_PASSWORD"
    with pytest.raises(NeedsPassword, match="the given password does not open it") as one:
        load_file(path, passwords=["hunter2"], pdf_parser=parser)
    with pytest.raises(NeedsPassword, match="none of the 2 given passwords") as two:
        load_file(path, passwords=["hunter2", "letmein"], pdf_parser=parser)
    for message in (str(one.value), str(two.value)):
        assert "hunter2" not in message and "letmein" not in message
    for passwords in (["s3cret"], ["wrong", "s3cret"], ["0wner"]):
        doc = load_file(path, passwords=passwords, pdf_parser=parser)
        assert [s.text for s in doc.sections] == ["Secret page."]

    owner_only = tmp_path / "owner.pdf"
    writer = PdfWriter(clone_from=plain)
    writer.encrypt(user_password="", owner_password="only-owner", algorithm="AES-256")
    with owner_only.open("wb") as handle:
        writer.write(handle)
    assert [s.text for s in load_file(owner_only, pdf_parser=parser).sections] == [
        "Secret page."]


def test_pdfium_page_failure_skips_that_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_pdf(tmp_path / "f.pdf", ["one", "two", "three"])
    original = pdfium.PdfTextPage.get_text_range

    def flaky(self: pdfium.PdfTextPage, *args: object, **kwargs: object) -> str:
        text = original(self, *args, **kwargs)
        if text == "two":
            raise ValueError("broken content stream")
        return str(text)

    monkeypatch.setattr(pdfium.PdfTextPage, "get_text_range", flaky)
    doc = load_file(path, pdf_parser="pypdfium2")
    assert [s.page_start for s in doc.sections] == [1, 3]
    assert doc.warnings == (
        "page 2 was skipped: text extraction failed (ValueError: broken content stream)",
    )

    def broken(self: pdfium.PdfTextPage, *args: object, **kwargs: object) -> str:
        raise KeyError("/Contents")

    monkeypatch.setattr(pdfium.PdfTextPage, "get_text_range", broken)
    with pytest.raises(ParseError, match="every page"):
        load_file(path, pdf_parser="pypdfium2")


# --- the shared real documents -----------------------------------------------------------------
@pytest.mark.timeout(300)
@pytest.mark.parametrize("parser", PARSERS)
def test_r_manuals_with_every_parser(parser: PdfParser) -> None:
    docs = shared_path("docs", "pdf")
    for name, pages in (("R-FAQ.pdf", 52), ("R-intro.pdf", 113), ("R-data.pdf", 41)):
        doc = load_file(docs / name, pdf_parser=parser)
        assert doc.pages == pages and doc.warnings == ()
        assert [s.page_start for s in doc.sections] == list(range(1, pages + 1))
        text = "\n".join(s.text for s in doc.sections)
        assert "\ufffe" not in text and "\x14" not in text and "  " not in text
        assert glued_share(text) < 0.001
    faq = load_file(docs / "R-FAQ.pdf", pdf_parser=parser)
    assert "Frequently Asked Questions on R" in faq.sections[0].text
    assert "R for Win-\ndows FAQ" in faq.sections[5].text  # hyphenation left as printed


@pytest.mark.timeout(120)
def test_shared_damaged_and_encrypted_files_with_pdfium() -> None:
    docs = shared_path("docs")
    for path in sorted((docs / "pdf-bad").iterdir()):
        try:
            load_file(path, pdf_parser="pypdfium2")
        except LoadError as exc:
            assert str(exc).startswith(str(path))
    with pytest.raises(EmptyDocument, match="no pages"):
        load_file(docs / "pdf-bad" / "zero-pages.pdf", pdf_parser="pypdfium2")
    encrypted = docs / "pdf-encrypted" / "r6-both-passwords.pdf"
    with pytest.raises(NeedsPassword, match="does not open it"):
        load_file(encrypted, passwords=["not-it"], pdf_parser="pypdfium2")
    for password in ("foo", "bar"):
        doc = load_file(encrypted, passwords=["wrong-first", password], pdf_parser="pypdfium2")
        assert doc.pages == 1 and doc.sections[0].text.strip()
    with pytest.raises(NeedsOCR):
        load_file(docs / "pdf-encrypted" / "graph-encrypted.pdf", passwords=["user"],
                  pdf_parser="pypdfium2", ocr=NO_OCR)
    with pytest.raises(NeedsOCR):
        load_file(docs / "pdf-scanned" / "scanned-R-FAQ-3p.pdf", pdf_parser="pypdfium2",
                  ocr=NO_OCR)


# --- the parser in the index fingerprint -------------------------------------------------------
class _StubEmbedder:
    name = "stub-model"
    document_token_limit = 254

    def fingerprint(self) -> dict[str, Any]:
        return {"model": self.name, "dimension": 3}


@pytest.mark.parametrize("parser", PARSERS)
def test_parser_is_in_the_fingerprint_and_settings_key(tmp_path: Path, parser: PdfParser) -> None:
    settings = make_settings(tmp_path, pdf_parser=parser)
    ingestor = Ingestor(settings, _StubEmbedder())
    assert ingestor.settings_key()["pdf_parser"] == parser
    assert ingestor.fingerprint()[0]["pdf_parser"] == parser
    assert make_settings(tmp_path).pdf_parser == "auto"


def test_a_parser_change_alone_rebuilds_by_itself() -> None:
    key = {"model": "m", "chunk_tokens": 254, "splitter": "v4", "pdf_parser": "auto"}
    assert not only_code_changed(key, dict(key))
    assert not only_code_changed({}, key)  # no collection yet
    assert only_code_changed({**key, "pdf_parser": "pypdf"}, key)
    assert only_code_changed({**key, "splitter": "v3"}, key)
    assert only_code_changed({**key, "splitter": "v3", "pdf_parser": "pypdf"}, key)
    before_parsers = {k: v for k, v in key.items() if k != "pdf_parser"}
    assert only_code_changed(before_parsers, key)  # built before the parser was recorded
    # with another setting changed too, the user decides (FingerprintMismatch, --rebuild)
    assert not only_code_changed({**key, "pdf_parser": "pypdf", "chunk_tokens": 64}, key)
    assert not only_code_changed({**key, "model": "other"}, key)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_changing_the_parser_rebuilds_the_index_once(
    tmp_path: Path, embedder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rag_app.index.store import Store

    root = tmp_path / "docs"
    root.mkdir()
    make_glued_pdf(root / "glued.pdf", [STUDY])
    (root / "notes.md").write_text("# Notes\n\nWarranty lasts 24 months.\n")
    old = make_settings(tmp_path / "state", pdf_parser="pypdf")
    first = Ingestor(old, embedder).run([root])
    assert not first.rebuilt and first.counts()["ingested"] == 2
    built = Store.open(old)
    assert built is not None and built.fingerprint["pdf_parser"] == "pypdf"

    new = make_settings(tmp_path / "state")  # the default, auto
    report = Ingestor(new, embedder).run([root])
    assert report.rebuilt and report.counts()["ingested"] == 2
    store = Store.open(new)
    assert store is not None and store.chunks.name != built.chunks.name
    assert store.fingerprint["pdf_parser"] == "auto"
    assert store.settings_key["pdf_parser"] == "auto"
    again = Ingestor(new, embedder).run([root])
    assert not again.rebuilt and again.counts()["unchanged"] == 2  # and only once
