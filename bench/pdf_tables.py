"""What keeping ruled PDF tables as tables costs per page, and that pages without one are read
as before.

    python bench/pdf_tables.py [PDF ...]      # default: the R manuals in ../shared/docs/pdf

For each file: `load_file` (default parser, OCR off) with the table finder
(ingest.loaders.pdf._PdfTables) off and on, the faster of two runs each; ms per page, whether the
sections are identical, and how many table sections were made.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ingest.loaders import load_file, pdf  # noqa: E402
from ingest.loaders.ocr import OcrOptions  # noqa: E402
from rag_app.records import LoadedDocument  # noqa: E402

NO_OCR = OcrOptions(mode="off")


def timed(path: Path, tables: bool, rounds: int = 2) -> tuple[LoadedDocument, float]:
    original = pdf._PdfTables.sections
    if not tables:
        pdf._PdfTables.sections = lambda self, number: None  # type: ignore[method-assign]
    try:
        best, doc = float("inf"), None
        for _ in range(rounds):
            start = time.perf_counter()
            doc = load_file(path, ocr=NO_OCR)
            best = min(best, time.perf_counter() - start)
    finally:
        pdf._PdfTables.sections = original  # type: ignore[method-assign]
    if doc is None:
        raise RuntimeError("no round ran")
    return doc, best


def main(argv: Sequence[str]) -> int:
    paths = [Path(a) for a in argv] or sorted((REPO.parent / "shared/docs/pdf").glob("*.pdf"))
    print("| file | pages | ms/page before | ms/page with tables | identical | table sections |")
    print("|---|---|---|---|---|---|")
    for path in paths:
        before, t0 = timed(path, False)
        after, t1 = timed(path, True)
        pages = before.pages or 1
        tables = sum(1 for s in after.sections if s.headings)
        print(f"| {path.name} | {pages} | {t0 / pages * 1000:.1f} | {t1 / pages * 1000:.1f} | "
              f"{before.sections == after.sections} | {tables} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
