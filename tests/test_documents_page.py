"""The chat's Documents page shows what each file is (issue 28 point 4): its kind (PDF, scanned
PDF, image, Word, PowerPoint, Excel, CSV, EPUB, Markdown, HTML, text), its length in pages,
slides or sheets, "OCR" with how many pages where OCR read it, its language, and the
collection's languages; a file recorded by an older index shows "unknown", never a crash; the
uploader takes every kind the ingest reads, and an uploaded deck and photo come out right.
Through Streamlit's AppTest with the real pages, real Chroma, the real bundled model and the
real tesseract."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.openai_stub import openai_stub
from tests.pdfgen import make_pdf

pytestmark = pytest.mark.slow

APP = str(Path(__file__).resolve().parents[1] / "rag_app" / "ui" / "app.py")
DOCS_PAGE = "views/documents_page.py"
HEATER = ("The Nordlys heater model NH-42 must be serviced every 18 months by an authorised "
          "technician. Replace the dust filter when the amber lamp blinks twice.")
PROSE = ("The Aurora kettle boils one litre of water in three minutes. Descale it every month "
         "with citric acid, and never run it empty: the heating plate can crack when dry.")
OLD = {"root": "/gone", "source": "old-scan.pdf", "size": 10, "mtime_ns": 1, "sha256": "x",
       "state": "done", "chunks": 0, "pages": 4, "kind": "pdf", "error": "", "cut": ""}


@pytest.fixture(autouse=True)
def tesseract() -> None:
    if shutil.which("tesseract") is None:
        pytest.skip("tesseract is not installed: run `make ocr` (Debian's tesseract-ocr)")


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Path:
    """A folder with a file of nearly every kind, ingested once through the library's entry
    point; plus a file record as an index made before kinds' facts were recorded has it."""
    from ingest.entry import sync_paths
    from rag_app.index.store import Store
    from tests.conftest import make_settings
    from tests.test_ocr import mixed_pdf, scanned_pdf
    from tests.test_office import make_docx, make_epub, make_xlsx

    base = tmp_path_factory.mktemp("docs-page")
    docs = base / "docs"
    work = base / "work"
    docs.mkdir()
    work.mkdir()
    make_pdf(docs / "manual.pdf", [PROSE, PROSE.replace("one litre", "two litres")])
    shutil.move(scanned_pdf(work / "scan.pdf", HEATER), docs / "scan.pdf")  # not its source
    mixed_pdf(docs / "mixed.pdf", work)  # page 1 text, pages 2-3 scans
    make_docx(docs / "manual.docx")
    make_xlsx(docs / "prices.xlsx")
    make_epub(docs / "book.epub")
    (docs / "prices.csv").write_text("Product,Price\nAurora kettle,49\nNordlys heater,199\n")
    (docs / "notes.md").write_text(f"# Kettle\n\n{PROSE}\n")
    (docs / "page.html").write_text(f"<html><body><h1>Kettle</h1><p>{PROSE}</p></body></html>")
    (docs / "readme.txt").write_text(PROSE)
    settings = make_settings(base / "state", collection="docs-page")
    report = sync_paths(settings, [docs], embedder=embedder)
    assert not report.failed, [(o.source, o.reason) for o in report.outcomes if o.reason]
    store = Store.open(settings)
    assert store is not None
    store.files.upsert(ids=["old"], embeddings=[[1.0]], metadatas=[OLD])  # no new fields
    return base


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, index_dir: Path, tmp_path: Path
        ) -> Iterator[dict[str, str]]:
    from streamlit import config

    for name in ("OPENAI_API_KEY", "CHROMA_HOST", "RAG_LLM_MODEL_PATH", "RAG_OCR_LANGUAGES"):
        monkeypatch.delenv(name, raising=False)
    with openai_stub() as stub:
        values = {
            "RAG_STATE_DIR": str(index_dir / "state"), "RAG_COLLECTION": "docs-page",
            "RAG_CHATS_DIR": str(tmp_path / "chats"),
            "RAG_DOCUMENTS_DIR": str(tmp_path / "uploads"),
            "OPENAI_BASE_URL": stub.base_url, "RAG_LLM_MODEL": "json",
        }
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(tmp_path)  # no developer .env is read
        before = config.get_option("server.address")
        config.set_option("server.address", "127.0.0.1")
        try:
            yield values
        finally:
            config.set_option("server.address", before)


def documents_page() -> Any:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=180).run()
    at.switch_page(DOCS_PAGE)
    return ok(at.run())


def ok(at: Any) -> Any:
    if at.exception:
        pytest.fail(f"the page raised: {[e.value for e in at.exception]}")
    return at


def rows(at: Any) -> dict[str, dict[str, Any]]:
    """The indexed files' table, by file name."""
    frame = at.dataframe[-1].value
    return {str(row["file"]): dict(row) for row in frame.to_dict("records")}


def captions(at: Any) -> str:
    return "\n".join(str(c.value) for c in at.caption).replace("\\", "").replace("\u2060", "")


def test_each_file_shows_its_kind_length_ocr_and_language(env: dict[str, str]) -> None:
    at = documents_page()
    table = rows(at)
    wanted = {  # file: (kind, length, OCR, language)
        "manual.pdf": ("PDF", "2 pages", "", "en"),
        "scan.pdf": ("scanned PDF", "1 page", "OCR, 1 page", "en"),
        "mixed.pdf": ("PDF", "3 pages", "OCR, 2 of 3 pages", "en"),
        "manual.docx": ("Word", "", "", "en"),
        "prices.xlsx": ("Excel", "2 sheets", "", ""),  # a table of models: no language
        "book.epub": ("EPUB", "", "", "en"),
        "notes.md": ("Markdown", "", "", "en"),
        "page.html": ("HTML", "", "", "en"),
        "readme.txt": ("text", "", "", "en"),
        "old-scan.pdf": ("PDF", "4 pages", "unknown", "unknown"),  # an older index's record
    }
    for name, (kind, length, ocr, language) in wanted.items():
        got = table[name]
        assert (got["kind"], got["length"], got["OCR"], got["language"]) == (
            kind, length, ocr, language), name
    assert table["prices.csv"]["kind"] == "CSV"
    text = captions(at)
    assert "Languages: en " in text
    assert "(1 file indexed before languages were recorded: a rebuild records them)" in text
    # the total counts pages (PDFs, images), not a workbook's sheets
    assert "files, 10 pages," in text


def test_the_uploader_takes_every_kind_and_an_uploaded_deck_and_photo_show_right(
        env: dict[str, str], tmp_path: Path) -> None:
    from ingest.loaders import SUPPORTED_SUFFIXES
    from rag_app.ui.state import services
    from tests.test_ocr import picture
    from tests.test_office import make_pptx

    at = documents_page()
    accepted = set(at.file_uploader[0].proto.type)
    assert accepted == set(SUPPORTED_SUFFIXES), set(SUPPORTED_SUFFIXES) ^ accepted
    deck = make_pptx(tmp_path / "deck.pptx").read_bytes()
    picture(tmp_path / "src.png", HEATER).save(tmp_path / "photo.png")
    photo = (tmp_path / "photo.png").read_bytes()
    at.file_uploader[0].set_value([
        ("Quarterly deck.pptx", deck,
         "application/vnd.openxmlformats-officedocument.presentationml.presentation"),
        ("heater photo.png", photo, "image/png")])
    at = ok(at.run())
    at = ok(at.button(key="upload-go").click().run())
    deadline = time.monotonic() + 300
    while services().busy():
        if time.monotonic() > deadline:
            pytest.fail("the background ingest did not finish")
        time.sleep(0.5)
    table = rows(ok(at.run()))
    assert (table["Quarterly deck.pptx"]["kind"], table["Quarterly deck.pptx"]["length"],
            table["Quarterly deck.pptx"]["OCR"]) == ("PowerPoint", "2 slides", "")
    assert (table["heater photo.png"]["kind"], table["heater photo.png"]["length"],
            table["heater photo.png"]["OCR"], table["heater photo.png"]["language"]) == (
        "image", "1 page", "OCR, 1 page", "en")
