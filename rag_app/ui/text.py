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

from rag_app.safety import escape_markdown

# An absolute POSIX path: a "/" that starts a word (not inside a URL, a relative path or a
# number), then characters up to white space, a quote or a bracket.
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~\\-])/(?=[^\s/])[^\s'\"`()\[\]<>,;]*")


def md(text: object) -> str:
    """`text` as Markdown that every Streamlit surface shows literally: no link, image, HTML,
    LaTeX, directive, emphasis or bare URL (rag_app.safety.escape_markdown)."""
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
