"""Read scanned pages and photos of pages with OCR: Tesseract (Debian's `tesseract-ocr`), in
the parse worker, so its time and memory limits hold (the limit on address space is inherited by
the tesseract process; each page also has `PAGE_TIMEOUT_S`).

Tesseract is run as a command (`tesseract stdin stdout tsv`) rather than through pytesseract:
it must run with one OpenMP thread (OMP_THREAD_LIMIT=1, 4x faster here on a shared 2-core CPU),
and pytesseract passes no environment of its own, only the whole process's.

- **PDF pages** (ingest/loaders/pdf.py asks, page by page): a page that draws something but has no
  text layer, or is covered by a picture and has only a little text or noise in its text layer
  (a scan with a stray page number, a bad OCR layer), is drawn with pypdfium2 at `OcrOptions.dpi`
  and read by Tesseract; the OCR text replaces the layer's when it has more letters. Page
  numbers stay those of the PDF, so a citation opens the scanned page.
- **Images** (.png, .jpg, .jpeg, .tif, .tiff; every frame of a multi-page TIFF): read whole.

OCR is on by default when the engine and the languages are installed (`make ocr` installs
them), `RAG_OCR=off` turns it off, `RAG_OCR_LANGUAGES` (Tesseract codes joined by "+",
e.g. "eng+deu") chooses the languages; its default, `auto`, follows the collection
(`collection_ocr_languages`): eng plus the installed Tesseract packs of the languages recorded
with the collection's files (`TESSERACT_CODES` maps py3langid's ISO 639-1 codes to them);
and a page whose OCR text is in another language with an installed pack is read again with it,
as are the file's next pages (`followed`: a new collection has no languages recorded yet).
Pages are drawn at most `max_pixels` big: a poster-size page is drawn smaller, not refused.

Each OCR'd document carries a warning made by `ocr_note` ("OCR: pages 1-3 read by OCR (eng),
4.2 s"; ingest/loaders/common.py), which the ingest report adds up (`read_ocr_note`).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from ingest.loaders.common import normalise_text, ocr_note
from rag_app.errors import EmptyDocument, FileTooLarge, LoadError, NeedsOCR, ParseError
from rag_app.records import LoadedDocument, Section

__all__ = ["IMAGE_SUFFIXES", "TESSERACT_CODES", "OcrOptions", "OcrWord", "PdfPageOcr",
           "collection_ocr_languages", "engine_problem", "followed", "installed_languages",
           "load_image", "ocr_image", "ocr_words"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
INSTALL_HINT = "install Tesseract with `make ocr` (Debian: apt-get install tesseract-ocr)"
IMAGE_MAX_PIXELS = 80_000_000  # larger images are refused before they are decoded
IMAGE_MAX_FRAMES = 500  # frames of a TIFF read at most
PAGE_TIMEOUT_S = 120  # one page's tesseract run is stopped after this
SCAN_COVER = 0.5  # a picture covering this share of a page makes it a scan
SCAN_MAX_LETTERS = 200  # a scan with fewer letters in its text layer is read by OCR


@dataclass(frozen=True)
class OcrOptions:
    """How OCR runs (RAG_OCR, RAG_OCR_LANGUAGES)."""

    mode: Literal["auto", "off"] = "auto"  # auto: on where Tesseract is installed
    languages: str = "eng"
    dpi: int = 300
    max_pixels: int = 40_000_000  # a page is drawn at most this big (a poster gets a lower dpi)
    budget_s: float = 0.0  # OCR time for one file, then pages are left unread; 0: no limit
    follow: bool = False  # RAG_OCR_LANGUAGES=auto: read again in the page's language (`followed`)

    @property
    def enabled(self) -> bool:
        return self.mode != "off" and engine_problem(self.languages) is None


def _tesseract() -> str | None:
    return shutil.which("tesseract")


@lru_cache(maxsize=1)
def _listed_languages() -> frozenset[str] | str:
    """The language packs Tesseract has, or why it cannot say (no tesseract, it fails)."""
    exe = _tesseract()
    if exe is None:
        return f"the OCR engine is not installed: {INSTALL_HINT}"
    try:
        listed = subprocess.run([exe, "--list-langs"], capture_output=True, timeout=30,
                                check=True, env=_env())
    except (OSError, subprocess.SubprocessError) as exc:
        return f"the OCR engine does not run ({type(exc).__name__}: {exc}); {INSTALL_HINT}"
    return frozenset(listed.stdout.decode("utf-8", "replace").split()[1:])  # after the title


def installed_languages() -> frozenset[str]:
    """The Tesseract language packs installed here (none without the engine)."""
    listed = _listed_languages()
    return frozenset() if isinstance(listed, str) else listed


@lru_cache(maxsize=8)
def engine_problem(languages: str) -> str | None:
    """Why OCR cannot run here (no tesseract, a language missing), None when it can."""
    installed = _listed_languages()
    if isinstance(installed, str):
        return installed
    missing = [code for code in languages.split("+") if code and code not in installed]
    if not languages.strip("+"):
        return "RAG_OCR_LANGUAGES is empty; give Tesseract language codes, e.g. eng or eng+deu"
    if missing:
        packages = " ".join(f"tesseract-ocr-{code.lower().replace('_', '-')}"
                            for code in missing)
        return (f"OCR language(s) {', '.join(missing)} not installed (RAG_OCR_LANGUAGES="
                f"{languages}): apt-get install {packages}, or change the setting")
    return None


def _env() -> dict[str, str]:
    """Tesseract's environment: one OpenMP thread. On this 2-core machine, shared, a page took
    32.6 s with OpenMP's default threads and 8.2 s with one (300 dpi, bench/ocr_bench.py)."""
    return {**os.environ, "OMP_THREAD_LIMIT": "1"}


@dataclass(frozen=True)
class OcrText:
    text: str
    seconds: float
    words: int = 0
    confidence: float = 0.0  # mean word confidence, 0-100


@dataclass(frozen=True)
class OcrWord:
    """A word Tesseract found, with its box in the image's pixels."""

    text: str
    left: int
    top: int
    right: int
    bottom: int
    confidence: float  # 0-100
    line: tuple[int, int, int]  # (block, paragraph, line) numbers


def ocr_words(image: Any, options: OcrOptions, dpi: int | None = None) -> list[OcrWord]:
    """Tesseract's words of a PIL image, in reading order, with their boxes. `dpi`: the
    image's resolution when known (a drawn PDF page). Raises NeedsOCR without the engine,
    ParseError when it fails or takes over PAGE_TIMEOUT_S."""
    exe = _tesseract()
    if exe is None:
        raise NeedsOCR(f"the OCR engine is not installed: {INSTALL_HINT}")
    buffer = io.BytesIO()
    image.convert("L").save(buffer, format="PPM")  # uncompressed: nothing to encode
    command = [exe, "stdin", "stdout", "-l", options.languages, "--psm", "3"]
    if dpi:
        command += ["--dpi", str(dpi)]
    try:
        done = subprocess.run([*command, "tsv"], input=buffer.getvalue(), capture_output=True,
                              timeout=PAGE_TIMEOUT_S, env=_env())
    except subprocess.TimeoutExpired as exc:
        raise ParseError(f"OCR of one page took over {PAGE_TIMEOUT_S} s and was stopped") \
            from exc
    except OSError as exc:
        raise ParseError(f"the OCR engine could not be started ({exc})") from exc
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ParseError(f"OCR failed (tesseract exit code {done.returncode}: "
                         f"{detail[-1][:200] if detail else 'no message'})")
    words: list[OcrWord] = []
    for row in done.stdout.decode("utf-8", "replace").splitlines()[1:]:
        cells = row.split("\t")
        if len(cells) < 12 or cells[0] != "5":  # level 5: a word
            continue
        text = cells[11].strip()
        try:
            confidence = float(cells[10])
            line = (int(cells[2]), int(cells[3]), int(cells[4]))
            left, top, width, height = (int(cells[i]) for i in (6, 7, 8, 9))
        except ValueError:
            continue
        if text and confidence >= 0:
            words.append(OcrWord(text, left, top, left + width, top + height, confidence, line))
    return words


def ocr_image(image: Any, options: OcrOptions, dpi: int | None = None) -> OcrText:
    """Tesseract's text of a PIL image: lines as it found them, a blank line between blocks
    and paragraphs. `dpi`: the image's resolution when known (a drawn PDF page)."""
    started = time.monotonic()
    words = ocr_words(image, options, dpi)
    parts: list[str] = []
    previous: OcrWord | None = None
    for word in words:
        if previous is not None and previous.line != word.line:
            same_paragraph = previous.line[:2] == word.line[:2]
            parts.append("\n" if same_paragraph else "\n\n")
        elif previous is not None:
            parts.append(" ")
        parts.append(word.text)
        previous = word
    mean = sum(w.confidence for w in words) / len(words) if words else 0.0
    return OcrText(normalise_text("".join(parts)), time.monotonic() - started, len(words), mean)


def letters(text: str) -> int:
    return sum(ch.isalpha() for ch in text)


@dataclass
class PdfPageOcr:
    """OCR for the pages of one PDF, drawn with pypdfium2 (opened on first need)."""

    path: Path
    password: str | None
    options: OcrOptions
    document: Any = None  # a pypdfium2 PdfDocument: given, or opened here (then closed here)
    pages: list[int] = field(default_factory=list)  # pages whose text came from OCR
    seconds: float = 0.0
    _owned: bool = False

    def _doc(self) -> Any:
        if self.document is None:
            import pypdfium2 as pdfium

            self.document = pdfium.PdfDocument(self.path, password=self.password)
            self._owned = True
        return self.document

    def looks_scanned(self, number: int) -> bool:
        """Whether a picture covers at least SCAN_COVER of the page."""
        import pypdfium2.raw as pdfium_c

        page = self._doc()[number - 1]
        try:
            width, height = page.get_size()
            area = max(width * height, 1.0)
            for obj in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=4):
                bounds = getattr(obj, "get_bounds", None) or obj.get_pos  # pypdfium2 5 / 4
                left, bottom, right, top = bounds()
                if (right - left) * (top - bottom) >= SCAN_COVER * area:
                    return True
            return False
        finally:
            page.close()

    def wants(self, number: int, text: str) -> bool:
        """Whether page `number`, whose text layer gave `text`, should be read by OCR."""
        if not text.strip():
            return True
        return letters(text) < SCAN_MAX_LETTERS and self.looks_scanned(number)

    def spent(self) -> bool:
        """Whether this file's OCR time budget (`OcrOptions.budget_s`) is used up."""
        return 0 < self.options.budget_s <= self.seconds

    def read(self, number: int, text: str) -> str:
        """The better of the layer's `text` and the OCR text of page `number`."""
        started = time.monotonic()
        page = self._doc()[number - 1]
        try:
            width, height = page.get_size()
            scale = self.options.dpi / 72
            if width * height * scale * scale > self.options.max_pixels:
                scale = (self.options.max_pixels / max(width * height, 1.0)) ** 0.5
            image = page.render(scale=scale, grayscale=True).to_pil()
        finally:
            page.close()
        result = ocr_image(image, self.options, dpi=round(scale * 72))
        better = followed(result.text, self.options)
        if better is not None:  # in another language: this page and the file's next ones
            self.options = better
            result = ocr_image(image, better, dpi=round(scale * 72))
        self.seconds += time.monotonic() - started  # drawing included
        if letters(result.text) > letters(text):
            self.pages.append(number)
            return result.text
        return text

    def close(self) -> None:
        if self._owned and self.document is not None:
            self.document.close()
        self.document = None


# --- which languages: the collection's ----------------------------------------------------------
# py3langid's languages (ISO 639-1) that Tesseract has a pack for, by the pack's code (its
# Debian package: tesseract-ocr-<code, "_" as "-">). Chinese: both scripts.
TESSERACT_CODES: dict[str, str] = {
    "af": "afr", "am": "amh", "ar": "ara", "as": "asm", "az": "aze", "be": "bel", "bg": "bul",
    "bn": "ben", "br": "bre", "bs": "bos", "ca": "cat", "cs": "ces", "cy": "cym", "da": "dan",
    "de": "deu", "dz": "dzo", "el": "ell", "en": "eng", "eo": "epo", "es": "spa", "et": "est",
    "eu": "eus", "fa": "fas", "fi": "fin", "fo": "fao", "fr": "fra", "ga": "gle", "gl": "glg",
    "gu": "guj", "he": "heb", "hi": "hin", "hr": "hrv", "ht": "hat", "hu": "hun", "hy": "hye",
    "id": "ind", "is": "isl", "it": "ita", "ja": "jpn", "jv": "jav", "ka": "kat", "kk": "kaz",
    "km": "khm", "kn": "kan", "ko": "kor", "ku": "kmr", "ky": "kir", "la": "lat", "lb": "ltz",
    "lo": "lao", "lt": "lit", "lv": "lav", "mk": "mkd", "ml": "mal", "mn": "mon", "mr": "mar",
    "ms": "msa", "mt": "mlt", "nb": "nor", "ne": "nep", "nl": "nld", "nn": "nor", "no": "nor",
    "oc": "oci", "or": "ori", "pa": "pan", "pl": "pol", "ps": "pus", "pt": "por", "qu": "que",
    "ro": "ron", "ru": "rus", "si": "sin", "sk": "slk", "sl": "slv", "sq": "sqi", "sr": "srp",
    "sv": "swe", "sw": "swa", "ta": "tam", "te": "tel", "th": "tha", "tl": "fil", "tr": "tur",
    "ug": "uig", "uk": "ukr", "ur": "urd", "vi": "vie", "zh": "chi_sim+chi_tra",
}
AUTO_LANGUAGES = "auto"  # RAG_OCR_LANGUAGES: follow the collection


def collection_ocr_languages(setting: str, found: Iterable[str], mode: str = "auto"
                             ) -> tuple[str, str | None]:
    """The Tesseract languages OCR reads with, and a notice for the ingest report when some
    of the collection's languages cannot be read (None when all can).

    `setting` is RAG_OCR_LANGUAGES: anything but `auto` is used as given. `auto`: eng, plus
    the installed packs of `found`, the collection's languages (ISO 639-1 codes, most first:
    Tesseract takes the first as its main language). A language without a pack installed (or
    none in Tesseract) is left out and named in the notice, with the package to install.
    `mode` is RAG_OCR: when off, nothing is looked up and nothing said."""
    if setting != AUTO_LANGUAGES:
        return setting, None
    if mode == "off":
        return "eng", None
    installed = installed_languages()
    codes: list[str] = []
    missing: list[str] = []
    unreadable: list[str] = []
    for lang in found:
        packs = TESSERACT_CODES.get(lang)
        if packs is None:
            unreadable.append(lang)
            continue
        for pack in packs.split("+"):
            if pack in installed and pack not in codes:
                codes.append(pack)
            elif pack not in installed and pack not in missing:
                missing.append(pack)
    if "eng" not in codes:
        codes.append("eng")
    chosen = "+".join(codes)
    if not installed or not (missing or unreadable):
        return chosen, None  # without the engine, the OCR'd files say what is missing
    parts = []
    if missing:
        packages = " ".join(f"tesseract-ocr-{code.replace('_', '-')}" for code in missing)
        parts.append(f"no Tesseract pack installed for {', '.join(missing)} (apt-get install "
                     f"{packages})")
    if unreadable:
        parts.append(f"Tesseract cannot read {', '.join(unreadable)}")
    return chosen, (f"OCR reads with {chosen} (RAG_OCR_LANGUAGES=auto: the collection's "
                    f"languages): {'; '.join(parts)}, so scans in those languages are read "
                    "with the others")


def followed(text: str, options: OcrOptions) -> OcrOptions | None:
    """Under `options.follow` (RAG_OCR_LANGUAGES=auto): when `text`, what OCR read from a
    page, is identified (py3langid, as a document is) as a language whose Tesseract pack is
    installed but not among `options.languages`, the options with that pack first; else None.
    The page is then read again with them, and so are the file's next pages: a collection's
    first ingest has no languages recorded yet, and a German scan read with eng alone loses
    its umlauts ("GréRe", "Uberprift")."""
    if not options.follow:
        return None
    from ingest.languages import identify

    got = identify(text)
    packs = TESSERACT_CODES.get(got[0]) if got is not None else None
    if packs is None:
        return None
    using = options.languages.split("+")
    new = [p for p in packs.split("+") if p in installed_languages() and p not in using]
    return replace(options, languages="+".join([*new, *using])) if new else None


# --- images ------------------------------------------------------------------------------------
def load_image(path: Path, options: OcrOptions) -> LoadedDocument:
    """A photo or scan of pages (PNG, JPEG, TIFF) read by OCR: one section a frame."""
    if options.mode == "off":
        raise NeedsOCR(f"{path} is an image: its text can only be read by OCR, which is off "
                       "(RAG_OCR=off); set RAG_OCR=auto to read it")
    problem = engine_problem(options.languages)
    if problem is not None:
        raise NeedsOCR(f"{path} is an image: its text can only be read by OCR, and {problem}")
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        image = Image.open(path)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ParseError(f"{path} is not a readable image ({type(exc).__name__}: {exc}); "
                         "re-save it as PNG or JPEG") from exc
    except Image.DecompressionBombError as exc:
        raise FileTooLarge(f"{path}: {exc}") from exc
    with image:
        width, height = image.size
        if width * height > IMAGE_MAX_PIXELS:
            raise FileTooLarge(f"{path} is {width}x{height} pixels (over "
                               f"{IMAGE_MAX_PIXELS // 1_000_000} million); scale it down")
        sections: list[Section] = []
        seconds = 0.0
        frames = 0
        warnings: list[str] = []
        try:
            for frame in ImageSequence.Iterator(image):
                frames += 1
                if frames > IMAGE_MAX_FRAMES:
                    warnings.append(f"pages from {frames} on were not read (at most "
                                    f"{IMAGE_MAX_FRAMES} pages of an image are)")
                    break
                if 0 < options.budget_s <= seconds:
                    warnings.append(f"pages from {frames} on were not read by OCR: the file's "
                                    f"OCR time ({options.budget_s:g} s, most of "
                                    "RAG_PARSE_TIMEOUT_S) was spent; raise RAG_PARSE_TIMEOUT_S "
                                    "to read them")
                    frames -= 1
                    break
                picture = frame.convert("L")
                if picture.width * picture.height > options.max_pixels:
                    factor = (options.max_pixels / (picture.width * picture.height)) ** 0.5
                    picture = picture.resize((max(1, int(picture.width * factor)),
                                              max(1, int(picture.height * factor))))
                result = ocr_image(picture, options)
                seconds += result.seconds
                better = followed(result.text, options)
                if better is not None:  # in another language: this frame and the next ones
                    options = better
                    result = ocr_image(picture, options)
                    seconds += result.seconds
                if result.text:
                    sections.append(Section(text=result.text, page_start=frames,
                                            page_end=frames))
        except LoadError:
            raise
        except (OSError, ValueError, SyntaxError) as exc:  # truncated or damaged image data
            raise ParseError(f"{path}: the image data is damaged ({type(exc).__name__}: "
                             f"{exc}); re-save it") from exc
    frames = min(frames, IMAGE_MAX_FRAMES)  # the frames looked at
    if not sections:
        raise EmptyDocument(f"{path}: OCR ({options.languages}) found no text in the image")
    if frames > 1:  # a multi-page TIFF: each page headed by its number, to cite it
        sections = [Section(text=f"page {s.page_start}\n\n{s.text}",
                            headings=(f"page {s.page_start}",), page_start=s.page_start,
                            page_end=s.page_end) for s in sections]
    note = ocr_note([s.page_start or 1 for s in sections], options.languages, seconds)
    return LoadedDocument(kind="image", sections=tuple(sections), pages=frames,
                          warnings=(note, *warnings))
