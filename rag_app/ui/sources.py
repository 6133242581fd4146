"""Open a citation at its place: the cited PDF page with the passage highlighted, or the cited
Markdown/HTML/text section with the passage marked. Pure library code (no UI imports).

A stored chunk is not an exact substring of what the viewer shows: chunks of Markdown/HTML
sections start with a heading-path line (`Warranty > Standard warranty`), PDF text was cleaned
at ingest (ligatures, spaces) and is extracted here by another library (pdfium). So passages are
found by normalised words (`find_passage_spans`), not by string search.

Document text is untrusted: `passage_html` escapes everything except the `<mark>` tags it adds;
`markdown_html` renders a section's Markdown from escaped text with a few tags of its own (no
link, image or attribute).
"""

from __future__ import annotations

import ctypes
import html
import io
import re
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

from ingest.loaders import kind_of, load_file
from rag_app.errors import LoadError, RagError

__all__ = ["PageView", "SectionView", "SourceError", "find_passage_spans", "markdown_html",
           "passage_html", "render_pdf_pages", "section_view"]

Span = tuple[int, int]


class SourceError(RagError):
    """A cited source cannot be shown (missing, unreadable, or the page does not exist)."""


# --- matching ----------------------------------------------------------------------------------
_WORD = re.compile(r"[\w\u00ad]+")  # soft hyphens stay inside the word they split
_ATTACHED_BEFORE = re.compile(r"[^\w\s\u00ad]{1,3}\Z")  # up to 3 punctuation characters that
_ATTACHED_AFTER = re.compile(r"[^\w\s\u00ad]{1,3}")  # touch a marked word are marked with it
_CLUSTER_SLACK = 6  # extra unmatched text words tolerated between two matched runs


def _words(text: str) -> list[tuple[str, int, int]]:
    """(normalised word, start, end) for each word: NFKC (ligatures), casefolded."""
    out = []
    for m in _WORD.finditer(text):
        norm = unicodedata.normalize("NFKC", m.group().replace("\u00ad", "")).casefold()
        if norm:
            out.append((norm, m.start(), m.end()))
    return out


def _window(pw: list[str], tw: list[str], need: int) -> tuple[int, int] | None:
    """The stretch of `tw` worth aligning: where most of the passage's `need`-grams fall.
    None when no `need`-gram of the passage occurs in the text at all."""
    grams = {tuple(pw[i : i + need]) for i in range(len(pw) - need + 1)}
    hits = [j for j in range(len(tw) - need + 1) if tuple(tw[j : j + need]) in grams]
    if not hits:
        return None
    width = 2 * len(pw) + 50
    if len(tw) <= 2 * width:
        return 0, len(tw)
    best, best_start, lo = 0, hits[0], 0
    for hi, j in enumerate(hits):
        while j - hits[lo] > width:
            lo += 1
        if hi - lo + 1 > best:
            best, best_start = hi - lo + 1, hits[lo]
    start = max(0, best_start - len(pw))
    return start, min(len(tw), best_start + width + len(pw))


def _match(text: str, passage: str, min_words: int) -> tuple[list[Span], int]:
    """(merged spans, number of passage words matched)."""
    t_words, p_words = _words(text), _words(passage)
    if not t_words or not p_words:
        return [], 0
    first, newline, rest = passage.strip().partition("\n")
    head = len(_words(first)) if newline and _words(rest) else 0  # words of a heading line
    tw, pw = [w for w, _, _ in t_words], [w for w, _, _ in p_words]
    need = max(1, min(min_words, len(pw)))
    window = _window(pw, tw, need)
    if window is None:
        return [], 0
    w0, w1 = window
    matcher = SequenceMatcher(None, pw, tw[w0:w1], autojunk=False)
    blocks = [(a, b + w0, n) for a, b, n in matcher.get_matching_blocks() if n >= need]
    # Runs that follow each other in both texts (small gaps allowed) form one cluster.
    clusters: list[list[tuple[int, int, int]]] = []
    for block in blocks:
        if clusters:
            a0, b0, n0 = clusters[-1][-1]
            if block[1] - (b0 + n0) <= max(block[0] - (a0 + n0), 0) + _CLUSTER_SLACK:
                clusters[-1].append(block)
                continue
        clusters.append([block])
    # Next to a cluster of the body, one made only of the first line's words is a heading path
    # found elsewhere (a later chunk of a section repeats its heading).
    body = [c for c in clusters if c[-1][0] + c[-1][2] > head]
    clusters = body or clusters
    scores = [sum(n for _, _, n in c) for c in clusters]
    keep = max(need, max(scores) / 4)
    spans: list[Span] = []
    matched = 0
    for cluster, score in zip(clusters, scores, strict=True):
        if score >= keep:
            b_first, (_, b_last, n_last) = cluster[0][1], cluster[-1]
            start, end = t_words[b_first][1], t_words[b_last + n_last - 1][2]
            before = _ATTACHED_BEFORE.search(text, max(0, start - 3), start)
            start = before.start() if before else start  # "(word", "**word"
            after = _ATTACHED_AFTER.match(text, end)
            end = after.end() if after else end  # "word.", "word**"
            spans.append((start, end))
            matched += score
    return _merge(text, spans), matched


def _merge(text: str, spans: Sequence[Span], *, bridge: bool = True) -> list[Span]:
    """Sorted, clipped, non-empty spans; overlapping ones merged, and with `bridge` also ones
    with only non-word characters between them."""
    out: list[Span] = []
    for start, end in sorted((max(0, s), min(len(text), e)) for s, e in spans):
        if start >= end:
            continue
        touching = out and start <= out[-1][1]
        if touching or (out and bridge and not _WORD.search(text, out[-1][1], start)):
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def find_passage_spans(text: str, passage: str, *, min_words: int = 3) -> list[Span]:
    """Character spans of `text` that the passage covers, matched by normalised words (case,
    punctuation and whitespace do not count; a heading-path first line of the passage that is
    not in the text is ignored). Adjacent spans are merged. Empty when nothing matches.

    Matched runs shorter than `min_words` words are ignored (unless the passage is shorter).
    """
    return _match(text, passage, min_words)[0]


# --- PDF pages ---------------------------------------------------------------------------------
_PDFIUM_LOCK = threading.Lock()  # pdfium is not thread-safe, and a UI may render from threads
_MAX_PIXELS = 25_000_000  # a poster-sized page is rendered at a lower scale
_FILL = (255, 214, 0, 90)
_OUTLINE = (230, 150, 0, 200)


@dataclass(frozen=True)
class PageView:
    page: int  # 1-based
    png: bytes  # the rendered page (PNG)
    marks: int  # rectangles drawn
    width: int
    height: int


def render_pdf_pages(
    path: Path,
    page_start: int,
    page_end: int | None,
    passage: str,
    *,
    scale: float = 1.5,
    password: str | None = None,
    max_pages: int = 2,
    max_pixels: int = _MAX_PIXELS,
) -> list[PageView]:
    """Render the cited page(s) with pypdfium2 and draw translucent highlight boxes (Pillow)
    over the characters of the passage found on each page. Chunks spanning two pages get marks
    on both; at most `max_pages` pages from `page_start` are rendered, each at a lower scale when
it would have more than `max_pixels` pixels. A page out of range or an
    unreadable PDF raises SourceError with a message that says what is wrong."""
    import pypdfium2 as pdfium

    if not scale > 0:
        raise ValueError(f"scale must be positive, not {scale}")
    last = max(page_start, page_end if page_end is not None else page_start)
    last = min(last, page_start + max(1, max_pages) - 1)
    if not path.is_file():
        raise SourceError(f"{path} does not exist (moved or deleted since it was ingested?)")
    with _PDFIUM_LOCK:
        try:
            pdf = pdfium.PdfDocument(path, password=password)
        except pdfium.PdfiumError as exc:
            if getattr(exc, "err_code", None) == 4:  # FPDF_ERR_PASSWORD
                raise SourceError(
                    f"{path.name} is encrypted and "
                    + ("the given password does not open it" if password else "needs a password")
                ) from exc
            raise SourceError(f"{path.name} cannot be opened as a PDF ({exc})") from exc
        except OSError as exc:
            raise SourceError(f"{path.name} cannot be read ({exc.strerror or exc})") from exc
        try:
            count = len(pdf)
            for number in (page_start, last):
                if not 1 <= number <= count:
                    raise SourceError(
                        f"{path.name} has {count} page(s); page {number} does not exist "
                        "(the file may have changed since it was ingested)"
                    )
            return [_render_page(pdf, n, passage, scale, max_pixels)
                    for n in range(page_start, last + 1)]
        except pdfium.PdfiumError as exc:
            raise SourceError(f"{path.name}: page {page_start} cannot be rendered ({exc})") from exc
        finally:
            pdf.close()


def _render_page(pdf: Any, number: int, passage: str, scale: float, max_pixels: int
                 ) -> PageView:
    import pypdfium2.raw as pdfium_c
    from PIL import Image, ImageDraw

    page = pdf[number - 1]
    textpage = None
    try:
        width_pt, height_pt = page.get_size()
        scale = min(scale, (max_pixels / max(width_pt * height_pt, 1.0)) ** 0.5)
        bitmap = page.render(scale=scale)
        try:
            image = bitmap.to_pil().convert("RGBA")  # a copy: the bitmap's memory is freed next
        finally:
            bitmap.close()
        textpage = page.get_textpage()
        count = textpage.count_chars()
        # One character per pdfium char index (get_text_range may not keep indices aligned).
        codes = (pdfium_c.FPDFText_GetUnicode(textpage.raw, i) for i in range(count))
        chars = "".join(chr(c) if c < 0x110000 else "\ufffd" for c in codes)

        def to_device(x: float, y: float) -> tuple[int, int]:
            dx, dy = ctypes.c_int(), ctypes.c_int()
            pdfium_c.FPDF_PageToDevice(page.raw, 0, 0, image.width, image.height, 0, x, y,
                                       ctypes.byref(dx), ctypes.byref(dy))
            return dx.value, dy.value

        overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(overlay)
        marks = 0
        for start, end in find_passage_spans(chars, passage):
            for index in range(textpage.count_rects(start, end - start)):
                left, bottom, right, top = textpage.get_rect(index)
                (x0, y0), (x1, y1) = to_device(left, top), to_device(right, bottom)
                box = (min(x0, x1) - 2, min(y0, y1) - 2, max(x0, x1) + 2, max(y0, y1) + 2)
                draw.rectangle(box, fill=_FILL, outline=_OUTLINE)
                marks += 1
        if not chars.strip():  # a scanned page: OCR's word boxes give the marks
            marks = _mark_scanned(image, passage, draw)
        out = io.BytesIO()
        Image.alpha_composite(image, overlay).convert("RGB").save(out, format="PNG")
        return PageView(number, out.getvalue(), marks, image.width, image.height)
    finally:
        if textpage is not None:
            textpage.close()
        page.close()


def _mark_scanned(image: Any, passage: str, draw: Any) -> int:
    """Mark the passage's words on a drawn page that has no text layer, with the boxes of the
    words Tesseract finds on the drawing (ingest/loaders/ocr.py; none without the engine)."""
    from ingest.loaders.ocr import OcrOptions, ocr_words

    options = OcrOptions()
    if not options.enabled:
        return 0
    try:
        words = ocr_words(image, options)
    except LoadError:
        return 0
    text, starts = "", []
    for word in words:
        starts.append(len(text))
        text += word.text + " "
    marks = 0
    for start, end in find_passage_spans(text, passage):
        for word, at in zip(words, starts, strict=True):
            if at < end and at + len(word.text) > start:
                draw.rectangle((word.left - 2, word.top - 2, word.right + 2, word.bottom + 2),
                               fill=_FILL, outline=_OUTLINE)
                marks += 1
    return marks


# --- Markdown / HTML / text sections -----------------------------------------------------------
@dataclass(frozen=True)
class SectionView:
    kind: str  # "markdown" | "html" | "text"
    title: str  # the heading path joined with " > ", or the file name
    text: str  # the section's text (plain text, as the loader produced it)
    spans: list[Span]


def section_view(
    path: Path,
    passage: str,
    headings: Sequence[str] = (),
    *,
    max_bytes: int = 20 * 1024 * 1024,
    context_chars: int = 4000,
) -> SectionView:
    """The loader's section that holds the passage (prefer the one whose headings equal
    `headings`, else the one with the most matching words), with the passage's spans. Very
    long sections are cut to about `context_chars` around the marks (cuts shown as "…").
    When the passage is found nowhere, the heading's (else the first) section has no spans."""
    kind = kind_of(path)
    if kind is None or kind == "pdf":
        what = "a PDF: use render_pdf_pages" if kind == "pdf" else "not a supported type"
        raise SourceError(f"{path.name} is {what}")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise SourceError(f"{path} cannot be read ({exc.strerror or exc})") from exc
    if size > max_bytes:
        raise SourceError(
            f"{path.name} is {size / 2**20:.1f} MB, over the {max_bytes / 2**20:.1f} MB limit "
            "for showing a source; open the file itself"
        )
    try:
        doc = load_file(path, max_bytes=max_bytes)
    except LoadError as exc:
        raise SourceError(f"{path.name} cannot be shown: {exc}") from exc
    wanted = tuple(h.strip() for h in headings)
    best: tuple[tuple[int, int], int, list[Span]] | None = None  # (rank, section index, spans)
    for index, section in enumerate(doc.sections):
        spans, matched = _match(section.text, passage, 3)
        same = bool(wanted) and tuple(h.strip() for h in section.headings) == wanted
        rank = (int(same and matched > 0), matched) if matched else (-1, int(same))
        if best is None or rank > best[0]:
            best = (rank, index, spans)
    if best is None:
        raise SourceError(f"{path.name} has no text to show")
    section = doc.sections[best[1]]
    text, spans = _cut(section.text, best[2], context_chars)
    title = " > ".join(section.headings) or path.name
    return SectionView(kind=doc.kind, title=title, text=text, spans=spans)


def _cut(text: str, spans: list[Span], limit: int) -> tuple[str, list[Span]]:
    """About `limit` characters of `text` around the spans, cut at whitespace; spans shifted."""
    if len(text) <= limit * 5 // 4:
        return text, spans
    lo, hi = (spans[0][0], spans[-1][1]) if spans else (0, 0)
    if hi - lo >= limit:
        start, end = lo, hi
    else:
        start = max(0, lo - (limit - (hi - lo)) // 2)
        end = min(len(text), start + limit)
        start = max(0, end - limit)
    for sep in ("\n", " "):  # widen to a line (else word) boundary
        k = text.rfind(sep, max(0, start - 200), start)
        if start > 0 and k != -1:
            start = k + 1
            break
    for sep in ("\n", " "):
        k = text.find(sep, end, end + 200)
        if end < len(text) and k != -1:
            end = k
            break
    prefix = "…\n" if start > 0 else ""
    suffix = "\n…" if end < len(text) else ""
    shift = len(prefix) - start
    cut = [(max(s, start) + shift, min(e, end) + shift) for s, e in spans if e > start and s < end]
    return prefix + text[start:end] + suffix, cut


# --- HTML --------------------------------------------------------------------------------------
# After html.escape, characters that Markdown (and Streamlit's extensions: $math$, :emoji:) would
# act on become numeric references, and newlines become &#10; so the result is one line: one raw
# HTML block even inside st.markdown, where a blank line would otherwise end the block.
_INERT = str.maketrans({c: f"&#{ord(c)};" for c in "\n`*_[]()!~|$:\\{}"} | {"\r": ""})


def _inert(text: str) -> str:
    return html.escape(text, quote=True).translate(_INERT)


def passage_html(text: str, spans: Sequence[Span]) -> str:
    """Escaped text in a <div style="white-space: pre-wrap"> with <mark> around the spans.
    No other tags; nothing from the text can become markup (HTML or Markdown)."""
    parts: list[str] = []
    position = 0
    for start, end in _merge(text, spans, bridge=False):
        parts += [_inert(text[position:start]), "<mark>", _inert(text[start:end]), "</mark>"]
        position = end
    parts.append(_inert(text[position:]))
    return '<div style="white-space: pre-wrap">' + "".join(parts) + "</div>"


# Marks carried through the Markdown parser: private-use characters no document text keeps.
_MARK_ON, _MARK_OFF = "\ue000", "\ue001"
_BLOCK_PREFIX = re.compile(r"[ \t]{0,3}(?:(?:#{1,6}|[-*+]|\d{1,9}[.)]|>)[ \t]+)*")
_SAFE_TAGS = {"paragraph": "p", "bullet_list": "ul", "ordered_list": "ol", "list_item": "li",
              "blockquote": "blockquote", "table": "table", "thead": "thead", "tbody": "tbody",
              "tr": "tr", "th": "th", "td": "td", "strong": "strong", "em": "em", "s": "s"}


def markdown_html(text: str, spans: Sequence[Span]) -> str:
    """A section of a Markdown document (or of one the loaders wrote as Markdown: HTML, Word,
    Excel…) as HTML, its formatting rendered, with <mark> around the spans. Raw HTML in it stays
    text; a link keeps only its text, an image only its alt text; the only tags are p, strong,
    em, s, code, pre, lists, block quotes, tables, br, hr and mark, with no attribute but an
    ordered list's start, so nothing from the text can fetch or run anything."""
    from markdown_it import MarkdownIt
    from markdown_it.tree import SyntaxTreeNode

    marked = _with_marks(text.replace(_MARK_ON, "").replace(_MARK_OFF, ""), spans)
    parser = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
    state = {"on": False}
    return '<div class="rag-section">' + _html_nodes(
        SyntaxTreeNode(parser.parse(marked)).children, state) + "</div>"


def _with_marks(text: str, spans: Sequence[Span]) -> str:
    """`text` with the mark characters put around each span; a mark that would fall before a
    line's block markers (a heading's #, a list's -) goes after them, so the block is kept."""
    parts: list[str] = []
    position = 0
    for start, end in _merge(text, spans, bridge=False):
        line_start = text.rfind("\n", 0, start) + 1
        prefix = _BLOCK_PREFIX.match(text, line_start)
        if prefix is not None and line_start <= start < prefix.end():
            start = min(prefix.end(), end)
        parts += [text[position:start], _MARK_ON, text[start:end], _MARK_OFF]
        position = end
    parts.append(text[position:])
    return "".join(parts)


def _html_text(text: str, state: dict[str, bool]) -> str:
    """Escaped text, the mark characters turned into <mark> tags opened and closed within it
    (a mark that spans blocks is closed at each tag and opened again after it)."""
    out: list[str] = ["<mark>"] if state["on"] else []
    for piece in re.split(f"([{_MARK_ON}{_MARK_OFF}])", text):
        if piece == _MARK_ON:
            if not state["on"]:
                out.append("<mark>")
            state["on"] = True
        elif piece == _MARK_OFF:
            if state["on"]:
                out.append("</mark>")
            state["on"] = False
        elif piece:
            out.append(_inert(piece))
    if state["on"]:
        out.append("</mark>")
    return "".join(out).replace("<mark></mark>", "")


def _html_nodes(nodes: Sequence[Any], state: dict[str, bool]) -> str:
    out: list[str] = []
    for node in nodes:
        kind = node.type
        if kind == "text":
            out.append(_html_text(node.content, state))
        elif kind == "softbreak":
            out.append(" ")
        elif kind == "hardbreak":
            out.append("<br>")
        elif kind == "code_inline":
            out.append(f"<code>{_html_text(node.content, state)}</code>")
        elif kind in ("fence", "code_block"):
            out.append(f"<pre><code>{_html_text(node.content, state)}</code></pre>")
        elif kind == "hr":
            out.append("<hr>")
        elif kind == "heading":
            out.append(f"<p><strong>{_html_nodes(node.children, state)}</strong></p>")
        elif kind == "paragraph" and node.hidden:  # a tight list's item
            out.append(_html_nodes(node.children, state))
        elif kind == "ordered_list" and str(node.attrs.get("start", "1")).isdigit():
            start = int(node.attrs.get("start", 1))
            attr = f' start="{start}"' if start != 1 else ""
            out.append(f"<ol{attr}>{_html_nodes(node.children, state)}</ol>")
        elif kind in _SAFE_TAGS:
            tag = _SAFE_TAGS[kind]
            out.append(f"<{tag}>{_html_nodes(node.children, state)}</{tag}>")
        else:  # inline, link (its text), image (its alt text), anything else: the content only
            out.append(_html_nodes(node.children, state))
    return "".join(out)
