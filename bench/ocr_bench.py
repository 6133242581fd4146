"""OCR speed per page on this CPU: scanned PDFs and a photo read the way ingest reads them.

    python bench/ocr_bench.py [FILE.pdf | IMAGE ...] [--dpi 300 200] [--threads]

Default files: the scans in ../shared/docs/pdf-scanned (if present) and a generated scan (a
page of text drawn with pypdfium2 at 200 dpi and saved as an image-only PDF). Each file is
loaded with `ingest.loaders.load_file(path, ocr=OcrOptions(dpi=…))`, i.e. in the same way as the
index gets it (pages drawn with pypdfium2, Tesseract with one OpenMP thread). "s/page" is the
OCR time over the pages read by OCR; "words" counts runs of letters in the text, and "dict
words" the share of them found in the generated page's text (generated scan only: how much of
the text came back).

`--threads` also times one page with Tesseract's default OpenMP threads against one thread
(OMP_THREAD_LIMIT=1), the reason ingest/loaders/ocr.py runs the command itself. Compare ratios, not
absolute times: machines differ, and on a shared machine other work slows every row.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ingest.loaders import load_file  # noqa: E402
from ingest.loaders.common import read_ocr_note  # noqa: E402
from ingest.loaders.ocr import OcrOptions  # noqa: E402
from rag_app.hardware import detect  # noqa: E402
from tests.pdfgen import make_pdf  # noqa: E402

WORD = re.compile(r"[^\W\d_]+")
SHARED = REPO.parent / "shared" / "docs" / "pdf-scanned"
PAGE = (
    "Warranty and service. The Aurora kettle has a two-year warranty from the date of purchase; "
    "registering it online within thirty days extends the warranty to five years. Descale it "
    "every month with citric acid: fill it to the maximum mark, add two spoons, boil, wait an "
    "hour and rinse twice. Error code E3 means the heating plate is too hot; let it cool for "
    "ten minutes. The Nordlys heater model NH-42 must be serviced every 18 months by an "
    "authorised technician, and its dust filter replaced when the amber lamp blinks twice. "
) * 4


def generated_scan(folder: Path, dpi: int = 200) -> Path:
    import pypdfium2 as pdfium

    source = make_pdf(folder / "page.pdf", [PAGE])
    document = pdfium.PdfDocument(source)
    try:
        image = document[0].render(scale=dpi / 72, grayscale=True).to_pil()
    finally:
        document.close()
    path = folder / "generated-scan.pdf"
    image.save(path, "PDF", resolution=dpi)
    image.save(folder / "generated-photo.png")
    return path


def measure(path: Path, dpi: int) -> tuple[int, float, float, int, float | None]:
    """(pages read by OCR, OCR seconds, wall seconds, words, share of known words)."""
    started = time.monotonic()
    doc = load_file(path, ocr=OcrOptions(dpi=dpi))
    wall = time.monotonic() - started
    pages, seconds = 0, 0.0
    for warning in doc.warnings:
        found = read_ocr_note(warning)
        if found is not None:
            pages, seconds = found
    words = [w.lower() for s in doc.sections for w in WORD.findall(s.text)]
    known = None
    if path.name.startswith("generated-"):
        vocabulary = {w.lower() for w in WORD.findall(PAGE)}
        known = sum(w in vocabulary for w in words) / max(len(words), 1)
    return pages, seconds, wall, len(words), known


def thread_study(path: Path, dpi: int) -> list[tuple[str, float]]:
    """One page through the tesseract command, OpenMP's default threads against one."""
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(path)
    try:
        image = document[0].render(scale=dpi / 72, grayscale=True).to_pil()
    finally:
        document.close()
    buffer = io.BytesIO()
    image.save(buffer, format="PPM")
    exe = shutil.which("tesseract") or "tesseract"
    rows = []
    for label, limit in (("OpenMP default", None), ("OMP_THREAD_LIMIT=1", "1")):
        env = {k: v for k, v in os.environ.items() if k != "OMP_THREAD_LIMIT"}
        if limit:
            env["OMP_THREAD_LIMIT"] = limit
        started = time.monotonic()
        subprocess.run([exe, "stdin", "stdout", "-l", "eng", "--dpi", str(dpi), "tsv"],
                       input=buffer.getvalue(), capture_output=True, env=env, check=True)
        rows.append((label, time.monotonic() - started))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--dpi", nargs="+", type=int, default=[300, 200])
    parser.add_argument("--threads", action="store_true",
                        help="also time OpenMP's default threads against one")
    args = parser.parse_args()
    if shutil.which("tesseract") is None:
        sys.exit("tesseract is not installed: run `make ocr`")
    hw = detect()
    print(f"CPU: {hw.cpu_model or 'unknown'}, {os.cpu_count()} logical cores; "
          f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        files = list(args.files)
        if not files:
            files = sorted(SHARED.glob("*.pdf")) if SHARED.is_dir() else []
            scan = generated_scan(Path(tmp))
            files += [scan, scan.with_name("generated-photo.png")]
        header = (f"{'file':<28} {'dpi':>4} {'pages':>5} {'OCR s':>7} {'s/page':>7} "
                  f"{'wall s':>7} {'words':>6} {'known':>6}")
        print(header)
        print("-" * len(header))
        for path in files:
            for dpi in args.dpi:
                pages, seconds, wall, words, known = measure(path, dpi)
                per_page = seconds / pages if pages else float("nan")
                shown = "" if known is None else f"{known:.0%}"
                print(f"{path.name[:28]:<28} {dpi:>4} {pages:>5} {seconds:>7.1f} "
                      f"{per_page:>7.1f} {wall:>7.1f} {words:>6} {shown:>6}")
        if args.threads:
            pdfs = [f for f in files if f.suffix.lower() == ".pdf"]
            if pdfs:
                print(f"\none page of {pdfs[0].name} at {args.dpi[0]} dpi, tesseract alone:")
                for label, seconds in thread_study(pdfs[0], args.dpi[0]):
                    print(f"  {label:<20} {seconds:6.1f} s")


if __name__ == "__main__":
    main()
