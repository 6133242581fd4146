"""Markdown files: split at ATX (`## Title`) and setext (`Title` / `-----`) headings outside
fenced code blocks (attribute lists such as `{: #anchor }` are cut from heading text); front
matter is dropped from the text and its `title` becomes the title, else the first level-1
heading. Every section begins with its own heading (see ingest/loaders/__init__.py)."""

from __future__ import annotations

import re
from pathlib import Path

import frontmatter

from ingest.loaders.common import _decode, _short, normalise_text
from rag_app.errors import EmptyDocument
from rag_app.records import LoadedDocument, Section

__all__ = ["FRONT_MATTER_MAX_CHARS", "TITLE_MAX_CHARS", "load_markdown"]

TITLE_MAX_CHARS = 300  # a longer front matter title is ignored (it is copied into every chunk)
FRONT_MATTER_MAX_CHARS = 100_000  # larger front matter is not read (only its title would be)
# Heading patterns must stay linear on any line: no part that can match spaces may be followed
# by another that can (`(.*?)[ \t]*$` retried the spaces at every character: quadratic). The
# closing #s and `{: #anchor }` attribute lists are cut in code (_atx_text, _strip_attr_list).
_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*))?$")
_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_ATTR_START = re.compile(r"\{:?[ \t]*[#.]")  # `## Title {: #anchor }`
_SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_NOT_PARAGRAPH_START = re.compile(r"^(?: {4}|\t| {0,3}(?:[-*+>|<]|\d+[.)]|!!!|\?\?\?|:))")


def load_markdown(path: Path, data: bytes) -> LoadedDocument:
    text = normalise_text(_decode(path, data))
    meta_title, body, warnings = _split_front_matter(path, text)
    splitter = _MarkdownSplitter()
    for line in body.split("\n"):
        splitter.feed(line)
    sections = splitter.finish()
    if not sections:
        raise EmptyDocument(f"{path} has no text outside its front matter")
    first_h1 = splitter.first_h1
    if first_h1 is not None and len(first_h1) > TITLE_MAX_CHARS:
        first_h1 = None  # a "heading" this long is not a title
    return LoadedDocument(
        kind="markdown",
        sections=tuple(sections),
        title=meta_title or first_h1,
        warnings=warnings,
    )


def _split_front_matter(path: Path, text: str) -> tuple[str | None, str, tuple[str, ...]]:
    """(title from front matter, text without it, warnings). Bad front matter is dropped.

    Only the title is read, and nothing else is built: YAML is composed into nodes, where an
    alias stays a reference to its anchor (an alias bomb stays as small as its text), and
    only a scalar `title` node is turned into a value. A title that is not a string or a
    number, or is longer than TITLE_MAX_CHARS, is ignored with a warning."""
    if not text.startswith(("---", "+++")):
        return None, text, ()
    handler = frontmatter.detect_format(text, frontmatter.handlers)
    if handler is None:  # e.g. TOML front matter without the toml package: as frontmatter does
        return None, text.strip(), ()
    try:
        front, body = handler.split(text.strip())
    except ValueError:  # no closing delimiter: not front matter
        return None, text.strip(), ()
    body = body.strip()
    if len(front) > FRONT_MATTER_MAX_CHARS:
        return None, body, (f"{path}: front matter ignored, it is over "
                            f"{FRONT_MATTER_MAX_CHARS:,} characters long",)
    try:
        if isinstance(handler, frontmatter.YAMLHandler):
            title = _yaml_title(front)
        else:
            data = handler.load(front)
            title = data.get("title") if isinstance(data, dict) else None
    except Exception as exc:  # noqa: BLE001 - YAML errors of every kind: keep the body
        return None, body, (f"{path}: front matter ignored, it is not valid YAML ({_short(exc)})",)
    if title is None:
        return None, body, ()
    if isinstance(title, bool) or not isinstance(title, str | int | float):
        kind = {"SequenceNode": "a list", "MappingNode": "a mapping", "list": "a list",
                "dict": "a mapping"}.get(type(title).__name__, f"a {type(title).__name__}")
        return None, body, (f"{path}: front matter title ignored, it is {kind}, not text",)
    title_text = " ".join(str(title).split())
    if len(title_text) > TITLE_MAX_CHARS:
        return None, body, (f"{path}: front matter title ignored, it is {len(title_text):,} "
                            f"characters long (at most {TITLE_MAX_CHARS})",)
    return title_text or None, body, ()


def _yaml_title(front: str) -> object:
    """The `title` of YAML front matter: the value of a scalar title, the node itself of a list
    or mapping title (never built), None without one. Other keys are never built."""
    import yaml

    root = yaml.compose(front, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    if not isinstance(root, yaml.MappingNode):
        return None
    node = None
    for key, value in root.value:  # the last `title` wins, as in a dict
        if isinstance(key, yaml.ScalarNode) and key.tag == "tag:yaml.org,2002:str" \
                and key.value == "title":
            node = value
    if node is None or not isinstance(node, yaml.ScalarNode):
        return node
    return yaml.constructor.SafeConstructor().construct_object(node)


def _atx_text(raw: str) -> str:
    """An ATX heading's text: trailing spaces and a closing run of #s (after a space) cut."""
    text = raw.rstrip(" \t")
    bare = text.rstrip("#")
    if len(bare) < len(text) and (not bare or bare[-1] in " \t"):
        text = bare
    return text.strip()


def _strip_attr_list(heading: str) -> str:
    """`Title {: #anchor }` -> `Title`, in linear time; a heading that is nothing but an
    attribute list is kept as it is."""
    end = heading.rstrip(" \t")
    if not end.endswith("}"):
        return heading
    brace = end.find("{", end.rfind("}", 0, len(end) - 1) + 1)  # after any other "}"
    while brace >= 0:
        if _ATTR_START.match(end, brace):
            return end[:brace].rstrip(" \t") or heading
        brace = end.find("{", brace + 1)
    return heading


class _MarkdownSplitter:
    """Cuts Markdown into sections at headings, line by line, skipping fenced code."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self.first_h1: str | None = None
        self._path: list[tuple[int, str]] = []  # (level, heading text), outermost first
        self._lines: list[str] = []  # current section; [0] is its heading when it has one
        self._has_heading = False
        self._paragraph_start: int | None = None  # index in _lines of the open paragraph
        self._other_block = False  # inside a list, quote, table …: no setext heading here
        self._fence: str | None = None  # the opening fence while inside fenced code

    def feed(self, line: str) -> None:
        if self._fence is not None:
            self._lines.append(line)
            stripped = line.strip()
            if stripped.startswith(self._fence) and not stripped.strip(self._fence[0]):
                self._fence = None
            return
        fence = _FENCE_OPEN.match(line)
        if fence and not (fence.group(1)[0] == "`" and "`" in fence.group(2)):
            self._fence = fence.group(1)
            self._paragraph_start = None
            self._other_block = False
            self._lines.append(line)
            return
        atx = _ATX_HEADING.match(line)
        if atx:
            heading = _atx_text(atx.group(2) or "")
            if heading:
                self._start_section(len(atx.group(1)), heading)
                return
        underline = _SETEXT_UNDERLINE.match(line)
        if underline and self._paragraph_start is not None:
            heading = " ".join(" ".join(self._lines[self._paragraph_start :]).split())
            del self._lines[self._paragraph_start :]
            self._start_section(1 if underline.group(1)[0] == "=" else 2, heading)
            return
        if not line.strip():
            self._paragraph_start = None
            self._other_block = False
        elif self._paragraph_start is None and not self._other_block:
            if _NOT_PARAGRAPH_START.match(line) or underline:
                self._other_block = True
            else:
                self._paragraph_start = len(self._lines)
        self._lines.append(line)

    def finish(self) -> list[Section]:
        self._flush()
        return self.sections

    def _start_section(self, level: int, heading: str) -> None:
        self._flush()
        heading = _strip_attr_list(heading)
        while self._path and self._path[-1][0] >= level:
            self._path.pop()
        self._path.append((level, heading))
        if level == 1 and self.first_h1 is None:
            self.first_h1 = heading
        self._lines = [heading, ""]
        self._has_heading = True
        self._paragraph_start = None
        self._other_block = False

    def _flush(self) -> None:
        body = self._lines[1:] if self._has_heading else self._lines
        if "\n".join(body).strip():
            text = normalise_text("\n".join(self._lines))
            self.sections.append(Section(text=text, headings=tuple(h for _, h in self._path)))
        self._lines = []
        self._has_heading = False
        self._paragraph_start = None
        self._other_block = False
