"""PDF text extraction: pypdf vs pypdfium2 vs "auto" (RAG_PDF_PARSER), words kept and time.

    python bench/pdf_text.py [FILE.pdf | FOLDER ...] [--repeat N] [--large]

Default files: the R manuals in ../shared/docs/pdf (if present), data/samples/*.pdf, and a
generated page set like the manual of the user study (words placed by TJ offsets without
spaces, which pypdf runs together: `make_glued_pdf`). `--large` adds the 2,415-page
../shared/docs/pdf-large/R-refman-2415p.pdf (pypdf needs about a minute for it).

Each file is loaded with `ingest.loaders.load_file(path, pdf_parser=…)`, i.e. with the same
cleaning the index gets; the time is the best of `--repeat` runs (1 for files over 2 MB), the
parsers taking turns. Words are runs of letters; a 20+-letter word is the sign of words run
together. "vs pypdf" is the time over pypdf's time. "changed pages" counts the pages whose text
differs from pypdf's. Compare ratios, not absolute times: machines differ.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from pypdf import PdfWriter
from pypdf.generic import ArrayObject, ContentStream, DictionaryObject, NameObject, NumberObject

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ingest.loaders import load_file  # noqa: E402
from ingest.loaders.pdf import GLUED_WORD_LETTERS, PdfParser  # noqa: E402
from rag_app.hardware import detect  # noqa: E402
from rag_app.records import LoadedDocument  # noqa: E402

PARSERS: tuple[PdfParser, ...] = ("pypdf", "pypdfium2", "auto")
WORD = re.compile(r"[^\W\d_]+")
STUDY = (  # the sentence the user study quoted glued, then some of this project's own words
    "In addition to the remotely fetched metadata, the APT tool after lenny stores its locally "
    "generated installation state information in the file used to track all auto-installed "
    "packages. Descale the kettle every month with citric acid when the water is hard."
)


# --- a PDF like the manual of the user study ---------------------------------------------
def _escape(word: str) -> bytes:
    raw = word.encode("cp1252", errors="replace")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def _tj_line(line: str, gap: int) -> bytes:
    """`[(In) -250 (addition) -250 (to)] TJ`: words apart by positioning only, no spaces."""
    words = b" ".join(b"(" + _escape(word) + b") " + str(-gap).encode() for word in line.split())
    return b"[" + words + b"] TJ"


def make_glued_pdf(path: Path, pages: list[str], *, title: str | None = None,
                   gap: int = 250) -> Path:
    """A PDF whose words are set apart by TJ offsets of `gap`/1000 em, with no space characters.

    One page per string, wrapped at ~80 characters; an empty string gives a page that draws a
    rectangle and no text. The font is Helvetica with /Widths that declare code 32 1000 units
    wide (fonts whose code 32 is not a word space do): pypdf then needs gaps of 475+ to see a
    space, and gives the words of this file run together.
    """
    writer = PdfWriter()
    widths = [1000] + [556] * (126 - 32)
    font = DictionaryObject({
        NameObject("/Type"): NameObject("/Font"),
        NameObject("/Subtype"): NameObject("/Type1"),
        NameObject("/BaseFont"): NameObject("/Helvetica"),
        NameObject("/Encoding"): NameObject("/WinAnsiEncoding"),
        NameObject("/FirstChar"): NumberObject(32),
        NameObject("/LastChar"): NumberObject(126),
        NameObject("/Widths"): ArrayObject(NumberObject(width) for width in widths),
    })
    for text in pages:
        page = writer.add_blank_page(width=612, height=792)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
        )
        if text.strip():
            lines = [b"BT", b"/F1 10 Tf", b"14 TL", b"72 720 Td"]
            for index, line in enumerate(textwrap.wrap(text, 80)):
                lines.extend(([b"T*"] if index else []) + [_tj_line(line, gap)])
            lines.append(b"ET")
            data = b"\n".join(lines) + b"\n"
        else:
            data = b"0.8 g\n72 300 468 400 re\nf\n"
        stream = ContentStream(None, writer)
        stream.set_data(data)
        page.replace_contents(stream)
    if title is not None:
        writer.add_metadata({"/Title": title})
    with path.open("wb") as handle:
        writer.write(handle)
    return path


# --- the measurement ------------------------------------------------------------------------
def default_files(large: bool, scratch: Path) -> list[Path]:
    shared = REPO.parent / "shared" / "docs"
    files = sorted((shared / "pdf").glob("*.pdf")) if (shared / "pdf").exists() else []
    if large and (shared / "pdf-large").exists():
        files += sorted((shared / "pdf-large").glob("*.pdf"))
    files += sorted((REPO / "data" / "samples").glob("*.pdf"))
    files.append(make_glued_pdf(scratch / "glued-study-like.pdf", [STUDY] * 5))
    return files


def measure(path: Path, repeat: int) -> dict[PdfParser, tuple[LoadedDocument, float]]:
    """Each parser's document and best time; the parsers take turns, so that a machine busy
    with something else for a while slows all of them alike."""
    best: dict[PdfParser, tuple[LoadedDocument, float]] = {}
    for _ in range(max(repeat, 1)):
        for name in PARSERS:
            started = time.perf_counter()
            doc = load_file(path, pdf_parser=name)
            seconds = time.perf_counter() - started
            if name not in best or seconds < best[name][1]:
                best[name] = (doc, seconds)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--large", action="store_true")
    args = parser.parse_args()

    print(f"CPU: {detect().summary()}")
    with tempfile.TemporaryDirectory() as scratch:
        files: list[Path] = []
        for given in args.paths:
            files += sorted(given.glob("*.pdf")) if given.is_dir() else [given]
        files = files or default_files(args.large, Path(scratch))
        print()
        print("| file | parser | pages | words | 20+-letter words | seconds | vs pypdf "
              "| changed pages |")
        print("|---|---|---|---|---|---|---|---|")
        totals: dict[str, float] = dict.fromkeys(PARSERS, 0.0)
        for path in files:
            repeat = 1 if path.stat().st_size > 2_000_000 else args.repeat
            results = measure(path, repeat)
            baseline, base_seconds = results["pypdf"]
            before = {s.page_start: s.text for s in baseline.sections}
            for name, (doc, seconds) in results.items():
                totals[name] += seconds
                words = [w for s in doc.sections for w in WORD.findall(s.text)]
                long = sum(len(w) >= GLUED_WORD_LETTERS for w in words)
                changed = sum(before.get(s.page_start) != s.text for s in doc.sections)
                print(f"| {path.name} | {name} | {doc.pages} | {len(words):,} "
                      f"| {100 * long / max(len(words), 1):.3f}% | {seconds:.3f} "
                      f"| {seconds / base_seconds:.2f}x | {changed} |")
        print()
        print("total seconds: " + ", ".join(f"{n} {t:.2f}" for n, t in totals.items()))


if __name__ == "__main__":
    main()
