"""HTML files (BeautifulSoup): the visible text of the main content only, split at
`<h1>`–`<h6>`; every section begins with its own heading. `html_sections` also reads the
chapters of EPUB books (ingest/loaders/office.py)."""

from __future__ import annotations

import re
from pathlib import Path

from bs4 import BeautifulSoup, FeatureNotFound
from bs4.element import NavigableString, PageElement, PreformattedString, Tag

from ingest.loaders.common import _decode, _short, normalise_text
from rag_app.errors import EmptyDocument, ParseError
from rag_app.records import LoadedDocument, Section

__all__ = ["html_sections", "load_html"]

_HTML_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.I)
_XML_ENCODING = re.compile(rb"""^<\?xml[^>]+encoding\s*=\s*["']([A-Za-z0-9._:-]+)""")
_DROPPED_TAGS = [
    "script", "style", "noscript", "template", "svg", "nav", "aside", "form", "button",
    "iframe", "select", "textarea", "canvas", "object", "embed", "audio", "video", "footer",
]  # fmt: skip
_DROPPED_CLASSES = frozenset({"headerlink", "sphinxsidebar", "related"})
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)
_SKIPPED_IN_WALK = frozenset({"head", "title", "meta", "link", "base"})
_HEADING_TAGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_LINE_TAGS = frozenset({"li", "tr", "dt", "dd", "caption", "figcaption", "option"})
_BLOCK_TAGS = frozenset(
    {
        "address", "article", "blockquote", "body", "center", "details", "dialog", "div", "dl",
        "fieldset", "figure", "hgroup", "hr", "html", "main", "menu", "ol", "p", "section",
        "summary", "table", "tbody", "tfoot", "thead", "ul",
    }
)  # fmt: skip
_CELL_TAGS = frozenset({"td", "th"})
_WHITESPACE = re.compile(r"\s+")
_HEADING_MARKS = "¶§🔗 \t\n"  # permalink symbols after a heading


def load_html(path: Path, data: bytes) -> LoadedDocument:
    text = _decode(path, data, _declared_charset(data))
    try:
        soup = _parse_html(text)
        title = _html_title(soup)
        root = _main_content(soup)
        _drop_invisible(root)
        builder = _HtmlSectionBuilder()
        builder.walk(root)
        sections = builder.finish()
    except RecursionError as exc:
        raise ParseError(f"{path}: HTML nested too deeply to read ({_short(exc)})") from exc
    if not sections:
        raise EmptyDocument(f"{path} has no visible text in its main content")
    return LoadedDocument(kind="html", sections=tuple(sections), title=title or builder.first_h1)


def html_sections(data: bytes) -> list[Section]:
    """The sections of an HTML (or XHTML) document's main content, as `load_file` makes them
    for an .html file; used for the chapters of EPUB books."""
    import warnings

    from bs4 import XMLParsedAsHTMLWarning

    with warnings.catch_warnings():  # XHTML read as HTML, on purpose (as browsers do)
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = _parse_html(_decode(Path("chapter.xhtml"), data, _declared_charset(data)))
    root = _main_content(soup)
    _drop_invisible(root)
    builder = _HtmlSectionBuilder()
    builder.walk(root)
    return builder.finish()


def _declared_charset(data: bytes) -> str | None:
    head = data[:4096]
    match = _XML_ENCODING.match(head) or _HTML_CHARSET.search(head)
    return match.group(1).decode("ascii") if match else None


def _parse_html(text: str) -> BeautifulSoup:
    try:
        return BeautifulSoup(text, "lxml")
    except FeatureNotFound:
        return BeautifulSoup(text, "html.parser")


def _html_title(soup: BeautifulSoup) -> str | None:
    for title in soup.find_all("title"):
        if title.find_parent("svg") is None:  # an SVG <title> is a tooltip, not the page's
            return " ".join(title.get_text().split()) or None
    return None


def _main_content(soup: BeautifulSoup) -> Tag:
    """`<main>`, `[role=main]`, Sphinx's `div.body` or a lone `<article>`; else `<body>`."""
    candidates = (
        soup.find("main"),
        soup.find(True, attrs={"role": "main"}),
        soup.find("div", class_="body"),
    )
    for candidate in candidates:
        if isinstance(candidate, Tag):
            return candidate
    articles = soup.find_all("article")
    if len(articles) == 1 and isinstance(articles[0], Tag):
        return articles[0]
    return soup.body if soup.body is not None else soup


def _is_hidden(tag: Tag) -> bool:
    if tag.attrs is None:
        return False
    if tag.has_attr("hidden"):
        return True
    if str(tag.get("aria-hidden", "")).strip().lower() == "true":
        return True
    if str(tag.get("role", "")).strip().lower() == "navigation":
        return True
    classes = tag.get("class")
    if isinstance(classes, list) and _DROPPED_CLASSES.intersection(classes):
        return True
    return bool(_HIDDEN_STYLE.search(str(tag.get("style", ""))))


def _drop_invisible(root: Tag) -> None:
    """Remove what a reader does not see as content: scripts, navigation, hidden elements.

    A `<header>` keeps only its headings (an article's title often sits in one).
    """
    for tag in root.find_all(_DROPPED_TAGS):
        if not tag.decomposed:
            tag.decompose()
    for tag in [tag for tag in root.find_all(True) if _is_hidden(tag)]:
        if not tag.decomposed:
            tag.decompose()
    for header in root.find_all("header"):
        if header.decomposed:
            continue
        for heading in header.find_all(list(_HEADING_TAGS)):
            header.insert_before(heading.extract())
        header.decompose()


def _inline_text(tag: Tag) -> str:
    return " ".join("".join(tag.strings).split())


class _TextBuffer:
    """Collects text with HTML whitespace rules: runs collapse, blocks break lines."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._pending_breaks = 0

    def inline(self, text: str) -> None:
        text = _WHITESPACE.sub(" ", text)
        if self._pending_breaks or not self._parts or self._parts[-1].endswith((" ", "\n")):
            text = text.lstrip(" ")
        if text:
            self._emit_breaks()
            self._parts.append(text)

    def at_line_start(self) -> bool:
        return bool(self._pending_breaks) or not self._parts or self._parts[-1].endswith("\n")

    def raw(self, text: str) -> None:
        """Preformatted text, kept as it is, as its own block."""
        self.line_break(2)
        if text.strip("\n"):
            self._emit_breaks()
            self._parts.append(text.strip("\n"))
        self.line_break(2)

    def line_break(self, count: int = 1) -> None:
        if self._parts:
            self._pending_breaks = max(self._pending_breaks, count)

    def take(self) -> str:
        text = "".join(self._parts)
        self._parts = []
        self._pending_breaks = 0
        return text

    def _emit_breaks(self) -> None:
        if self._pending_breaks and self._parts:
            self._parts.append("\n" * self._pending_breaks)
        self._pending_breaks = 0


class _HtmlSectionBuilder:
    """Walks the DOM (iteratively: hostile nesting must not exhaust the stack) into sections."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self.first_h1: str | None = None
        self._path: list[tuple[int, str]] = []
        self._heading: str | None = None
        self._buffer = _TextBuffer()

    def walk(self, root: Tag) -> None:
        stack: list[tuple[PageElement, bool]] = [(root, False)]
        while stack:
            node, leaving = stack.pop()
            if isinstance(node, NavigableString):
                if not isinstance(node, PreformattedString):  # comments, doctype, CDATA …
                    self._buffer.inline(str(node))
                continue
            if not isinstance(node, Tag):
                continue
            name = (node.name or "").lower()
            if leaving:
                self._close(name)
                continue
            if name in _SKIPPED_IN_WALK:
                continue
            if name in _HEADING_TAGS:
                self._start_section(int(name[1]), _inline_text(node).rstrip(_HEADING_MARKS))
                continue
            if name == "pre":
                self._buffer.raw(node.get_text())
                continue
            if name == "br":
                self._buffer.line_break()
                continue
            self._open(name)
            stack.append((node, True))
            stack.extend((child, False) for child in reversed(node.contents))

    def finish(self) -> list[Section]:
        self._flush()
        return self.sections

    def _open(self, name: str) -> None:
        if name in _BLOCK_TAGS:
            self._buffer.line_break(2)
        elif name in _LINE_TAGS:
            self._buffer.line_break(1)
        elif name in _CELL_TAGS and not self._buffer.at_line_start():
            self._buffer.inline(" | ")

    def _close(self, name: str) -> None:
        if name in _BLOCK_TAGS:
            self._buffer.line_break(2)
        elif name in _LINE_TAGS:
            self._buffer.line_break(1)

    def _start_section(self, level: int, heading: str) -> None:
        if not heading:
            return
        self._flush()
        while self._path and self._path[-1][0] >= level:
            self._path.pop()
        self._path.append((level, heading))
        if level == 1 and self.first_h1 is None:
            self.first_h1 = heading
        self._heading = heading

    def _flush(self) -> None:
        body = normalise_text(self._buffer.take())
        if body.strip():
            text = f"{self._heading}\n\n{body}" if self._heading else body
            self.sections.append(Section(text=text, headings=tuple(h for _, h in self._path)))
        self._heading = None
