"""The one way text that is not ours reaches the page.

Streamlit renders Markdown in many more places than `st.markdown`: widget labels (buttons,
expanders, check boxes, status boxes), image captions, progress text, `st.error` / `st.warning`
/ `st.info` / `st.success`, and an image in any of them is fetched by every viewer's browser
(../shared/REVIEW-ui-security.md H1, L2). So every piece of text that comes from a document (a
heading, a title, a passage), a file or folder name, an error message, the model or the user goes
through `md` before it is handed to any of them, and absolute paths go through `short_paths`
first (the page is shared by everyone who can reach the server: L8).

tests/test_ui_render.py checks every call site in rag_app/ui: an argument of a Markdown-rendering
call is a literal, a number, or `md(...)`. Select box options and data frames are shown as plain
text by Streamlit and stay unescaped (escaping them would show the backslashes).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rag_app.ui.safety import escape_markdown

# An absolute POSIX path: a "/" that starts a word (not inside a URL, a relative path or a
# number), then characters up to white space, a quote or a bracket.
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~\\-])/(?=[^\s/])[^\s'\"`()\[\]<>,;]*")


def md(text: object) -> str:
    """`text` as Markdown that every Streamlit surface shows literally: no link, image, HTML,
    LaTeX, directive, emphasis or bare URL (rag_app.ui.safety.escape_markdown)."""
    return escape_markdown("" if text is None else str(text))


def short_paths(text: str) -> str:
    """`text` with every absolute path in it made short (`short_path`). A path is taken to end
    at white space, a quote, a bracket or a comma; a full stop or colon that ends it is kept
    out of it."""

    def short(match: re.Match[str]) -> str:
        raw = match.group()
        tail = raw.rstrip(".:")  # a path that ends a sentence
        return short_path(tail) + raw[len(tail):]

    return _ABSOLUTE_PATH.sub(short, text)


def short_path(path: str | Path) -> str:
    """An absolute path made short: relative to the working directory when it is inside it
    ("data/store"), else from the home folder ("~/docs/a.pdf"), else only its last part
    ("…/a.pdf"). A relative path is returned as it is."""
    path = Path(path)
    if not path.is_absolute():
        return str(path)
    for base, prefix in ((_base(Path.cwd()), ""), (_base(Path.home()), "~/")):
        if base is not None and path.is_relative_to(base):
            rel = path.relative_to(base).as_posix()
            return prefix + rel if rel != "." else (prefix.rstrip("/") or ".")
    return f"…/{path.name}" if path.name else str(path)


def _base(path: Path) -> Path | None:
    """A folder worth shortening against (never "/")."""
    return path if len(path.parts) > 1 else None


def folder_label(root: str | Path, uploads: Path) -> str:
    """A folder as the page names it: "uploads" for the chat's own upload folder, else the
    folder made short (`short_path`)."""
    path = Path(root)
    try:
        if path.resolve() == uploads.resolve():
            return "uploads"
    except OSError:
        pass
    return short_path(path)


# --- a document's own Markdown, shown as it is meant to look -------------------------------------
# Passages, quotes and previews come from documents that are often written in Markdown (and the
# loaders turn HTML, Word, Excel… tables into Markdown tables): "**2-year warranty**", `code`,
# table pipes. `md_rich` shows that formatting without letting anything live through: the text is
# parsed as Markdown (raw HTML off: it stays text) and written out again, every piece of text
# through `md`, keeping only emphasis, strike-through, code, lists, quotes, tables and code
# blocks. A link keeps only its text and an image only its alt text, so no URL reaches the page.
PLAIN_TEXT_SUFFIXES = (".txt", ".text", ".rst")  # shown as written: no Markdown in them


def md_rich(text: object, *, flat: bool = False, limit: int | None = None) -> str:
    """`text` (Markdown from a document) as Markdown that Streamlit renders safely: bold,
    italics, strike-through, inline code, lists, block quotes, tables and code blocks render;
    links show their text, images their alt text, HTML its source as text. `flat` writes it
    as one line (a preview or a quote: blocks joined by spaces, table cells by " · ", rows by
    " / "); `limit` cuts it after about that many characters of text, at a word, with " …"."""
    from markdown_it.tree import SyntaxTreeNode

    source = "" if text is None else str(text)
    writer = _Writer(flat=flat, limit=limit)
    return writer.blocks(SyntaxTreeNode(_parser().parse(source))).strip()


def shown_md(text: object, source: str | None, *, flat: bool = False,
             limit: int | None = None) -> str:
    """A passage of the file `source` for the page: its Markdown rendered (`md_rich`), except
    in plain text files, which are shown as written (`md`)."""
    if source and str(source).lower().endswith(PLAIN_TEXT_SUFFIXES):
        raw = "" if text is None else str(text)
        if flat:
            raw = " ".join(raw.split())
        if limit is not None and len(raw) > limit:
            raw = raw[:limit].rsplit(" ", 1)[0] + " …"
        return md(raw)
    return md_rich(text, flat=flat, limit=limit)


def _parser() -> Any:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])


_MARKS = {"strong": "**", "em": "*", "s": "~~"}
_STRAY_STARS = re.compile(r"\*{2,}")


class _Writer:
    def __init__(self, *, flat: bool, limit: int | None) -> None:
        self.flat = flat
        self.left = limit if limit is not None else -1  # characters of text still allowed
        self.cut = False

    # blocks
    def blocks(self, node: Any) -> str:
        parts = [p for p in (self.block(child) for child in node.children) if p.strip()]
        return (" " if self.flat else "\n\n").join(parts)

    def block(self, node: Any) -> str:
        if self.cut:
            return ""
        kind = node.type
        if kind == "paragraph":
            return self.inline(node)
        if kind == "heading":
            body = self.inline(node)
            return f"**{body}**" if body.strip() else ""
        if kind in ("bullet_list", "ordered_list"):
            return self.items(node)
        if kind == "blockquote":
            body = self.blocks(node)
            if self.flat:
                return body
            return "\n".join(f"> {line}" if line else ">" for line in body.split("\n"))
        if kind == "table":
            return self.table(node)
        if kind in ("fence", "code_block"):
            return self.code_block(node.content)
        if kind == "hr":
            return "" if self.flat else "---"
        return self.blocks(node) if node.children else ""

    def items(self, node: Any) -> str:
        start = int(node.attrs.get("start", 1)) if node.type == "ordered_list" else 0
        out = []
        for n, item in enumerate(node.children):
            marker = f"{start + n}." if node.type == "ordered_list" else "-"
            if self.flat:
                marker = f"{start + n}." if node.type == "ordered_list" else "•"
                marker = md(marker)
            body = "\n".join(p for p in map(self.block, item.children) if p.strip())
            if self.flat:
                body = " ".join(body.split("\n"))
            if not body.strip():
                continue
            if self.flat:
                out.append(f"{marker} {body}")
            else:
                pad = " " * (len(marker) + 1)
                lines = body.split("\n")
                out.append("\n".join([f"{marker} {lines[0]}",
                                      *(pad + line if line else "" for line in lines[1:])]))
        return " ".join(out) if self.flat else "\n".join(out)

    def table(self, node: Any) -> str:
        rows = [row for part in node.children for row in part.children]
        cells = [[self.inline(cell).replace("\n", " ") for cell in row.children] for row in rows]
        if self.flat:
            return " / ".join(" · ".join(c for c in row if c) for row in cells)
        if not cells:
            return ""
        width = max(len(row) for row in cells)
        lines = ["| " + " | ".join(row + [""] * (width - len(row))) + " |" for row in cells]
        lines.insert(1, "|" + "---|" * width)
        return "\n".join(lines)

    def code_block(self, content: str) -> str:
        content = content.rstrip("\n")
        if self.flat:
            return self.code(" ".join(content.split()))
        if self.left >= 0:
            content = self._budget(content)
        fence = "`" * max(3, _longest_run(content, "`") + 1)
        return f"{fence}\n{content}\n{fence}"

    # inline
    def inline(self, node: Any) -> str:
        open_marks: list[str] = []
        out = self.pieces(node, open_marks)
        return out + "".join(reversed(open_marks))  # markers a cut left open

    def pieces(self, node: Any, open_marks: list[str]) -> str:
        out = []
        for child in node.children:
            if self.cut:
                break
            kind = child.type
            if kind == "text":
                out.append(_spaced(self._budget(child.content)))
            elif kind in ("softbreak", "hardbreak"):
                out.append(" " if self.flat or kind == "softbreak" else "  \n")
            elif kind == "code_inline":
                out.append(self.code(self._budget(child.content)))
            elif kind in _MARKS:
                mark = _MARKS[kind]
                open_marks.append(mark)
                inner = self.pieces(child, open_marks)
                if open_marks and open_marks[-1] is mark:
                    open_marks.pop()
                    out.append(f"{mark}{inner}{mark}" if inner.strip() else inner)
                else:  # cut inside: the caller closes it
                    out.append(f"{mark}{inner}")
            elif kind in ("link", "image", "inline") or child.children:
                out.append(self.pieces(child, open_marks))  # a link's text, an image's alt
        return "".join(out)

    def code(self, content: str) -> str:
        if not content.strip():
            return md(content)
        content = content.replace("|", "\\|") if "|" in content else content
        fence = "`" * (_longest_run(content, "`") + 1)
        pad = " " if content.startswith("`") or content.endswith("`") else ""
        return f"{fence}{pad}{content}{pad}{fence}"

    def _budget(self, text: str) -> str:
        if self.left < 0:
            return text
        if len(text) <= self.left:
            self.left -= len(text)
            return text
        kept = text[: self.left].rsplit(" ", 1)[0] if " " in text[: self.left] else ""
        self.left, self.cut = 0, True
        return kept.rstrip() + " …"


def _spaced(text: str) -> str:
    """`md(text)` with the spaces around it kept as spaces (`md` drops a blank piece and turns
    leading spaces into no-break spaces, right for a whole line, not for a piece of one). A run
    of two or more asterisks left in the text is emphasis a cut left unmatched ("a **2-year"
    quoted from "a **2-year warranty**"): dropped, not shown."""
    text = _STRAY_STARS.sub("", text)
    core = text.strip()
    if not core:
        return " " if text else ""
    lead = " " if text[:1].isspace() else ""
    trail = " " if text[-1:].isspace() else ""
    return lead + md(core) + trail


def _longest_run(text: str, char: str) -> int:
    best = run = 0
    for ch in text:
        run = run + 1 if ch == char else 0
        best = max(best, run)
    return best
