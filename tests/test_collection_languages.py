"""The languages of a collection (issue 25 point 5, issue 28 point 1): each file's language is
recorded at ingest (py3langid), the collection's are shown by `rag stats` / `stats --json`, and
OCR under RAG_OCR_LANGUAGES=auto reads with the installed Tesseract packs of those languages.
Real Chroma, the real bundled model, the real tesseract (Debian's; German with
tesseract-ocr-deu)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from ingest.loaders.ocr import TESSERACT_CODES, collection_ocr_languages, installed_languages
from rag_app.index.store import UNKNOWN_COUNT, UNKNOWN_LANGUAGE, FileRecord, collection_languages
from tests.conftest import make_settings

GERMAN = ("Die Größe des Wärmetauschers muss jährlich überprüft werden. Öffnen Sie die "
          "Klappe und prüfen Sie die Dichtungen auf Schäden. Für Rückfragen wenden Sie sich "
          "an den Kundendienst in Düsseldorf.")
GERMAN_NOTE = ("# Wartung\n\nDer Heizkessel wird einmal im Jahr von einem Fachbetrieb gewartet. "
               "Dabei werden der Brenner gereinigt und die Abgaswerte gemessen. Bitte halten "
               "Sie das Wartungsheft bereit, damit der Techniker die Arbeiten eintragen kann.\n")
ENGLISH_NOTE = ("# Service\n\nThe boiler is serviced once a year by a licensed engineer, who "
                "cleans the burner and measures the flue gas. Keep the service booklet at hand "
                "so that the engineer can record the work done.\n")


def needs_tesseract(*packs: str) -> None:
    if shutil.which("tesseract") is None:
        pytest.skip("tesseract is not installed: run `make ocr` (Debian's tesseract-ocr)")
    missing = [p for p in packs if p not in installed_languages()]
    if missing:
        pytest.skip(f"Tesseract pack(s) {', '.join(missing)} not installed: apt-get install "
                    + " ".join(f"tesseract-ocr-{p}" for p in missing))


def test_auto_reads_with_eng_and_the_installed_packs_of_the_collections_languages() -> None:
    needs_tesseract("eng")
    installed = installed_languages()
    codes, notice = collection_ocr_languages("auto", ["de", "ru", "en", "zu"])
    wanted = [p for p in ("deu", "rus") if p in installed]
    assert codes == "+".join([*wanted, "eng"])  # most common first, eng always
    missing = [p for p in ("deu", "rus") if p not in installed]
    assert notice is not None and "zu" in notice  # Zulu: no Tesseract pack at all
    for pack in missing:  # named once, with the package that reads it
        assert notice.count(f"tesseract-ocr-{pack}") == 1
    # nothing recorded yet (a new collection): English only, nothing to say
    assert collection_ocr_languages("auto", []) == ("eng", None)
    assert collection_ocr_languages("auto", ["en"]) == ("eng", None)


def test_an_explicit_setting_is_kept_and_ocr_off_looks_nothing_up() -> None:
    assert collection_ocr_languages("eng+fra", ["de"]) == ("eng+fra", None)
    assert collection_ocr_languages("auto", ["ru"], mode="off") == ("eng", None)
    assert TESSERACT_CODES["de"] == "deu" and TESSERACT_CODES["ru"] == "rus"
    assert TESSERACT_CODES["fr"] == "fra" and TESSERACT_CODES["zh"] == "chi_sim+chi_tra"


def test_a_record_from_an_older_index_reads_as_unknown() -> None:
    old = FileRecord.from_row("k", {"root": "/r", "source": "a.pdf", "size": 1, "mtime_ns": 1,
                                    "sha256": "x", "state": "done", "pages": 3, "kind": "pdf"})
    assert old.ocr_pages == UNKNOWN_COUNT and old.language == UNKNOWN_LANGUAGE
    new = FileRecord("k2", "/r", "b.md", 1, 1, "x", "done", language="de", ocr_pages=0)
    none = FileRecord("k3", "/r", "c.md", 1, 1, "x", "done", language="", ocr_pages=0)
    found, unknown = collection_languages([old, new, none])
    assert dict(found) == {"de": 1} and unknown == 1


@pytest.mark.slow
def test_languages_are_recorded_shown_by_stats_and_followed_by_ocr(
        embedder: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    needs_tesseract("eng", "deu")
    from ingest.entry import sync_paths
    from rag_app.cli import main
    from rag_app.index.store import Store
    from rag_app.service import index_overview
    from tests.test_ocr import picture

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "wartung.md").write_text(GERMAN_NOTE, encoding="utf-8")
    (docs / "wartung-2.md").write_text(GERMAN_NOTE.replace("einmal", "zweimal"),
                                       encoding="utf-8")
    (docs / "service.md").write_text(ENGLISH_NOTE, encoding="utf-8")
    settings = make_settings(tmp_path / "state")  # RAG_OCR_LANGUAGES=auto, the default
    assert settings.ocr_languages == "auto"
    first = sync_paths(settings, [docs], embedder=embedder)
    assert first.counts()["ingested"] == 3
    overview = index_overview(settings)
    assert overview.languages == {"de": 2, "en": 1} and overview.languages_unknown == 0
    assert list(overview.languages) == ["de", "en"]  # most first

    # a scan of a German page, added later: OCR reads it with deu (first) and eng
    picture(tmp_path / "src.png", GERMAN).save(docs / "scan.png")
    second = sync_paths(settings, [docs], embedder=embedder)
    assert second.counts()["ingested"] == 1
    outcome = next(o for o in second.outcomes if o.source == "scan.png")
    assert any(w.startswith("OCR: page 1 read by OCR (deu+eng), ") for w in outcome.warnings)
    assert not second.notices  # every language recorded has its pack
    store = Store.open(settings)
    assert store is not None
    record = next(r for r in store.file_records().values() if r.source == "scan.png")
    assert record.ocr_pages == 1 and record.language == "de" and record.kind == "image"
    text = " ".join(text for _, pairs in store.all_chunks() for text, meta in pairs
                    if meta["source"] == "scan.png")
    # read with eng alone this comes out as "GréRe des Warmetauschers ... Uberprift"
    assert "Größe des Wärmetauschers muss jährlich überprüft" in " ".join(text.split())

    # rag stats --json and rag stats show them
    monkeypatch.chdir(tmp_path)
    for name in ("CHROMA_HOST", "RAG_OCR_LANGUAGES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RAG_STATE_DIR", str(settings.state_dir))
    monkeypatch.setenv("RAG_COLLECTION", settings.collection)
    monkeypatch.setenv("COLUMNS", "200")  # one table row a line
    assert main(["stats", "--json"], prog="rag") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["languages"] == {"de": 3, "en": 1} and info["languages_unknown"] == 0
    scan = next(f for f in info["file_list"] if f["source"] == "scan.png")
    assert scan["kind_label"] == "image" and scan["ocr_pages"] == 1 and scan["language"] == "de"
    assert scan["ocr"] == "OCR, 1 page" and scan["length"] == "1 page"
    assert main(["stats"], prog="rag") == 0
    out = capsys.readouterr().out
    assert "Languages: de 3 files, en 1 file." in out
    assert "OCR, 1 page" in out


def test_a_page_in_another_installed_language_is_read_again_with_it(tmp_path: Path) -> None:
    """RAG_OCR_LANGUAGES=auto before the collection has languages (its first ingest): the
    German page read with eng is identified as German and read again with deu first, and so
    are the file's next pages; an explicit setting (follow off) is never changed."""
    needs_tesseract("eng", "deu")
    from ingest.loaders import load_file
    from ingest.loaders.ocr import OcrOptions, followed
    from tests.test_ocr import picture, scanned_pdf

    read_with_eng = "Die GréRe des Warmetauschers muss jahrlich Uberprift werden. " * 3
    auto = OcrOptions(follow=True)
    assert followed(read_with_eng, auto) == OcrOptions(languages="deu+eng", follow=True)
    assert followed(read_with_eng, OcrOptions()) is None  # explicit: as given
    assert followed(ENGLISH_NOTE, auto) is None
    assert followed(read_with_eng, OcrOptions(languages="deu+eng", follow=True)) is None

    scan = load_file(scanned_pdf(tmp_path / "scan.pdf", GERMAN), ocr=auto)
    assert scan.warnings[0].startswith("OCR: page 1 read by OCR (deu+eng), ")
    assert "Größe des Wärmetauschers" in " ".join(scan.sections[0].text.split())
    picture(tmp_path / "src.png", GERMAN).save(tmp_path / "photo.png")
    photo = load_file(tmp_path / "photo.png", ocr=auto)
    assert photo.warnings[0].startswith("OCR: page 1 read by OCR (deu+eng), ")
    assert "jährlich überprüft" in " ".join(photo.sections[0].text.split())
    plain = load_file(tmp_path / "photo.png", ocr=OcrOptions(languages="eng"))
    assert plain.warnings[0].startswith("OCR: page 1 read by OCR (eng), ")
    assert "jährlich überprüft" not in " ".join(plain.sections[0].text.split())


@pytest.mark.slow
def test_a_new_collections_first_ingest_reads_a_german_scan_in_german(
        embedder: Any, tmp_path: Path) -> None:
    needs_tesseract("eng", "deu")
    from ingest.entry import sync_paths
    from rag_app.service import index_overview
    from tests.test_ocr import scanned_pdf

    docs = tmp_path / "docs"
    docs.mkdir()
    scanned_pdf(tmp_path / "scan.pdf", GERMAN).rename(docs / "scan.pdf")
    settings = make_settings(tmp_path / "state")
    report = sync_paths(settings, [docs], embedder=embedder)
    outcome = next(o for o in report.outcomes if o.source == "scan.pdf")
    assert outcome.status == "ingested", outcome.reason
    assert outcome.warnings[0].startswith("OCR: page 1 read by OCR (deu+eng), ")
    overview = index_overview(settings)
    assert overview.languages == {"de": 1}
    record = overview.files[0]
    assert (record.kind, record.pages, record.ocr_pages) == ("pdf", 1, 1)
