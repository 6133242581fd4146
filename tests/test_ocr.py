"""OCR with the real engine (Debian's tesseract-ocr, installed by `make ocr`): scans made here
by drawing a PDF page with pypdfium2 and saving the picture as a PDF or an image, then loaded,
ingested for real and found by a question."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pypdfium2 as pdfium
import pytest
from pypdf import PdfReader, PdfWriter

from ingest.loaders import load_file
from ingest.loaders.common import ocr_note, read_ocr_note
from ingest.loaders.ocr import OcrOptions, engine_problem
from rag_app.errors import NeedsOCR
from tests.conftest import make_settings
from tests.pdfgen import make_pdf
from tests.shared_data import shared_path

HEATER = ("The Nordlys heater model NH-42 must be serviced every 18 months by an authorised "
          "technician. Replace the dust filter when the amber lamp blinks twice.")
KETTLE = "The Aurora kettle boils one litre of water in three minutes."


@pytest.fixture(autouse=True)
def tesseract() -> None:
    if shutil.which("tesseract") is None:
        pytest.fail("tesseract is not installed: run `make ocr` (Debian's tesseract-ocr)")


def picture(path: Path, text: str, dpi: int = 200) -> Any:
    """A PIL image of a PDF page holding `text`: what a scanner gives."""
    document = pdfium.PdfDocument(make_pdf(path.with_suffix(".src.pdf"), [text]))
    try:
        return document[0].render(scale=dpi / 72, grayscale=True).to_pil()
    finally:
        document.close()


def scanned_pdf(path: Path, text: str, dpi: int = 200) -> Path:
    """An image-only PDF (no text layer) of a page holding `text`."""
    picture(path, text, dpi).save(path, "PDF", resolution=dpi)
    return path


def mixed_pdf(path: Path, work: Path) -> Path:
    """Page 1 with a text layer, page 2 a scan, page 3 a scan with a page number as its only
    text (a scanner's stamp: noise, not the page's text). Parts are made in `work`."""
    writer = PdfWriter()
    writer.append(make_pdf(work / "p1.pdf", [KETTLE]))
    writer.append(scanned_pdf(work / "p2.pdf", HEATER))
    writer.append(scanned_pdf(work / "p3.pdf", KETTLE.replace("one", "two")))
    stamp = PdfReader(make_pdf(work / "stamp.pdf", ["3"]))
    writer.pages[2].merge_page(stamp.pages[0])
    with path.open("wb") as handle:
        writer.write(handle)
    return path


def words(text: str) -> str:
    return " ".join(text.split()).lower()


def test_a_mixed_pdf_is_read_page_by_page(tmp_path: Path) -> None:
    doc = load_file(mixed_pdf(tmp_path / "mixed.pdf", tmp_path))
    assert doc.kind == "pdf" and doc.pages == 3
    assert [s.page_start for s in doc.sections] == [1, 2, 3]
    assert doc.sections[0].text == KETTLE  # the text layer, untouched
    assert "nordlys heater model nh-42" in words(doc.sections[1].text)
    assert "every 18 months" in words(doc.sections[1].text)
    assert "boils two litre" in words(doc.sections[2].text)  # the stamp's '3' was replaced
    assert len(doc.warnings) == 1
    assert doc.warnings[0].startswith("OCR: pages 2-3 read by OCR (eng), ")
    assert read_ocr_note(doc.warnings[0])[0] == 2  # type: ignore[index]


def test_both_pdf_parsers_ocr_the_scans(tmp_path: Path) -> None:
    path = scanned_pdf(tmp_path / "scan.pdf", HEATER)
    for parser in ("pypdf", "pypdfium2"):
        doc = load_file(path, pdf_parser=parser)
        assert "amber lamp blinks twice" in words(doc.sections[0].text), parser


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tiff"])
def test_images_are_read(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"photo{suffix}"
    picture(tmp_path / "p", HEATER).save(path)
    doc = load_file(path)
    assert doc.kind == "image" and doc.pages == 1
    assert "nordlys heater" in words(doc.sections[0].text)
    assert doc.warnings[0].startswith("OCR: page 1 read by OCR (eng)")


def test_a_multi_page_tiff_keeps_its_page_numbers(tmp_path: Path) -> None:
    path = tmp_path / "fax.tiff"
    first, second = picture(tmp_path / "a", KETTLE), picture(tmp_path / "b", HEATER)
    first.save(path, save_all=True, append_images=[second])
    doc = load_file(path)
    assert doc.pages == 2
    assert [(s.headings, s.page_start) for s in doc.sections] == [(("page 1",), 1),
                                                                  (("page 2",), 2)]
    assert "aurora kettle" in words(doc.sections[0].text)
    assert "nordlys heater" in words(doc.sections[1].text)


def test_ocr_stops_at_its_time_budget_and_keeps_what_it_read(tmp_path: Path) -> None:
    """A long scan must not fail whole at the parse time limit: OCR stops when the file's
    budget (most of RAG_PARSE_TIMEOUT_S) is spent; the pages read so far are kept."""
    writer = PdfWriter()
    writer.append(scanned_pdf(tmp_path / "a.pdf", HEATER))
    writer.append(scanned_pdf(tmp_path / "b.pdf", KETTLE))
    path = tmp_path / "long-scan.pdf"
    with path.open("wb") as handle:
        writer.write(handle)
    doc = load_file(path, ocr=OcrOptions(budget_s=0.001))
    assert [s.page_start for s in doc.sections] == [1]
    assert "nordlys heater" in words(doc.sections[0].text)
    assert doc.warnings[1] == ("page 2 was not read by OCR: the file's OCR time (0.001 s, most "
                               "of RAG_PARSE_TIMEOUT_S) was spent; raise RAG_PARSE_TIMEOUT_S "
                               "to read them")
    fax = tmp_path / "fax.tiff"
    picture(tmp_path / "c", HEATER).save(fax, save_all=True,
                                         append_images=[picture(tmp_path / "d", KETTLE)])
    doc = load_file(fax, ocr=OcrOptions(budget_s=0.001))
    assert doc.pages == 1 and "pages from 2 on were not read by OCR" in doc.warnings[1]


def test_off_or_missing_language_says_what_to_do(tmp_path: Path) -> None:
    scan = scanned_pdf(tmp_path / "scan.pdf", HEATER)
    image = tmp_path / "photo.png"
    picture(tmp_path / "p", HEATER).save(image)
    off = OcrOptions(mode="off")
    with pytest.raises(NeedsOCR, match=r"scan\.pdf has no text layer.*RAG_OCR=auto"):
        load_file(scan, ocr=off)
    with pytest.raises(NeedsOCR, match=r"photo\.png is an image.*RAG_OCR=off"):
        load_file(image, ocr=off)
    klingon = OcrOptions(languages="eng+tlh")
    assert "apt-get install tesseract-ocr-tlh" in (engine_problem("eng+tlh") or "")
    with pytest.raises(NeedsOCR, match=r"tlh not installed.*tesseract-ocr-tlh"):
        load_file(scan, ocr=klingon)


def test_the_citation_viewer_marks_the_passage_on_a_scanned_page(tmp_path: Path) -> None:
    """A scanned page has no text layer to find the passage in: OCR's word boxes give the
    marks, over the passage's words only."""
    from rag_app.ui.sources import render_pdf_pages

    path = mixed_pdf(tmp_path / "manual.pdf", tmp_path)
    [view] = render_pdf_pages(path, 2, 2, "serviced every 18 months by an authorised technician")
    assert 5 <= view.marks <= 10  # the 8 words, give or take one Tesseract splits or joins
    [other] = render_pdf_pages(path, 2, 2, "a sentence that is nowhere on this page at all")
    assert other.marks == 0


def test_the_report_note_reads_back() -> None:
    assert read_ocr_note(ocr_note([2, 3, 4, 9], "eng", 12.34)) == (4, 12.3)
    assert read_ocr_note(ocr_note([7], "eng+deu", 1.0)) == (1, 1.0)
    assert read_ocr_note("pages 2-4 have no text layer (needs OCR)") is None


@pytest.mark.slow
def test_a_real_scanned_manual(tmp_path: Path) -> None:
    doc = load_file(shared_path("docs", "pdf-scanned", "scanned-R-FAQ-3p.pdf"))
    assert [s.page_start for s in doc.sections] == [1, 2, 3]
    assert "frequently asked questions on r" in words(doc.sections[0].text)
    assert "add-on packages" in words(doc.sections[2].text)


@pytest.mark.slow
def test_scans_are_ingested_reported_and_found(embedder: Any, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from ingest.report import print_summary
    from ingest.sync import Ingestor
    from rag_app.retrieve import RetrievalOptions, Retriever

    docs = tmp_path / "docs"
    docs.mkdir()
    mixed_pdf(docs / "manual.pdf", tmp_path)
    picture(tmp_path / "p", "Opening hours of the Tromsø service desk: weekdays 8 to 16."
            ).save(docs / "notice.png")
    (docs / "other.md").write_text("# Colours\n\nThe kettle comes in slate and sage.\n")
    settings = make_settings(tmp_path / "state")
    report = Ingestor(settings, embedder).run([docs])
    assert not report.failed, [o.reason for o in report.outcomes]
    outcome = next(o for o in report.outcomes if o.source == "manual.pdf")
    assert any(w.startswith("OCR: pages 2-3") for w in outcome.warnings)
    retriever = Retriever(settings, embedder=embedder)
    hits = retriever.search("How often must the NH-42 heater be serviced?",
                            RetrievalOptions(k=2))
    assert hits[0].source == "manual.pdf" and "NH-42" in hits[0].text
    assert hits[0].page_start <= 2 <= hits[0].page_end  # type: ignore[operator]
    hits = retriever.search("When is the service desk open?", RetrievalOptions(k=2))
    assert hits[0].source == "notice.png"
    print_summary(report)
    out = capsys.readouterr().out
    assert "pages read by OCR" in out and "3" in out
