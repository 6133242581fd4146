"""Hostile text in, harmless text out: Markdown that renders literally, file names the server chose.

Everything shown in the chat UI that came from a user, the model or a document goes through
`escape_markdown`; every uploaded file is stored under `safe_upload_name` at `unique_path`.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from rag_app.errors import ConfigError, RagError


class UnsafeName(RagError):
    """A client-given file name cannot be used (wrong type, or it would leave its folder)."""


# --- Markdown --------------------------------------------------------------------------------
# CommonMark lets every ASCII punctuation character be backslash-escaped, and an escaped one is
# always literal text, so escaping all of them is simpler and safer than picking the ones that
# can start markup in some context (GFM tables, Streamlit directives, remark-math, ...).
_PUNCTUATION = frozenset(string.punctuation)
# Streamlit's renderer finds autolink literals (https://…, www.…, a@b.c), emoji shortcodes
# (:smile:) and `:material/…:` icons in the *parsed* text, where backslash escapes are already
# gone, so those are broken with an invisible WORD JOINER (not a JS `\w` or `\s` character).
WORD_JOINER = "\u2060"
_LEADING_WS = re.compile(r"^[ \t]+")


def escape_markdown(text: str) -> str:
    """`text` as Markdown that Streamlit's `st.markdown` shows literally.

    Every ASCII punctuation character is backslash-escaped, so no link, image, autolink, raw
    HTML, entity, LaTeX, table, heading, list, emphasis or Streamlit directive (`:red[…]`)
    renders. An invisible U+2060 WORD JOINER after every ':' and '@' and inside 'www.' stops
    bare URLs, e-mail addresses, emoji shortcodes and `:material/…:` icons, which Streamlit
    detects after escapes are resolved. Leading spaces become no-break spaces (no indented code
    block); single newlines become hard line breaks, blank lines separate paragraphs.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out = [_escape_line(line) for line in lines]
    for i in range(len(out) - 1):
        if out[i] and out[i + 1]:
            out[i] += "  "  # a hard line break: the paragraph keeps its line structure
    return "\n".join(out)


def _escape_line(line: str) -> str:
    if not line.strip():
        return ""  # a blank line: a paragraph break
    indent = _LEADING_WS.match(line)
    prefix = ""
    if indent:  # four spaces would start a code block, where escapes show as backslashes
        prefix = indent.group().replace("\t", "    ").replace(" ", "\u00a0")
        line = line[indent.end():]
    parts: list[str] = [prefix]
    for i, ch in enumerate(line):
        if ch == "." and line[max(0, i - 3):i].lower() == "www":
            parts.append(WORD_JOINER)
        if ch in _PUNCTUATION:
            parts.append("\\" + ch)
            if ch in ":@":
                parts.append(WORD_JOINER)
        else:
            parts.append(ch)
    return "".join(parts)


# --- file names ------------------------------------------------------------------------------
# Removed outright (not replaced), so "invoice\u202efdp.md" cannot hide its real suffix.
_INVISIBLE = frozenset(
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b\u200c\u200d\u200e\u200f"
    "\u202a\u202b\u202c\u202d\u202e\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069"
    "\u3164\ufeff\uffa0"
)
_UNSAFE_CHAR = re.compile(r"[^A-Za-z0-9._ -]")
_SPACES = re.compile(r" {2,}")
_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{dev}{n}" for dev in ("COM", "LPT") for n in "0123456789"}
)


def _visible(ch: str) -> bool:
    return ch not in _INVISIBLE and unicodedata.category(ch) not in ("Cc", "Cf", "Cs")


def _normalise_suffixes(allowed: Iterable[str]) -> list[str]:
    out = []
    for s in allowed:
        s = s.strip().lower()
        out.append(s if s.startswith(".") else f".{s}")
    return sorted(set(out))


def safe_upload_name(name: str, *, allowed_suffixes: Iterable[str], max_len: int = 100) -> str:
    """A file name the server can use for a client-given `name`.

    Only the last path component is kept (both `/` and `\\` separate), after NFKC normalisation
    (so fullwidth `．／` are the dots and slashes they look like). Control, format (bidi
    overrides, zero-width) characters are removed; anything outside `[A-Za-z0-9._ -]` becomes
    `_`. No leading dots, dashes or spaces, no trailing dots or spaces; Windows device names
    (CON, NUL, COM1, …) get a `_` prefix; at most `max_len` characters, keeping the suffix,
    which is lower-cased and must be one of `allowed_suffixes` (else `UnsafeName`). A name with
    nothing left of its stem becomes `upload` + suffix.
    """
    allowed = _normalise_suffixes(allowed_suffixes)
    longest = max((len(s) for s in allowed), default=0)
    if max_len < longest + 1:
        raise ConfigError(f"max_len={max_len} leaves no room for a name before {allowed}")
    text = unicodedata.normalize("NFKC", name)
    text = "".join(ch for ch in text if _visible(ch))
    text = re.split(r"[/\\]", text)[-1]
    text = _UNSAFE_CHAR.sub("_", text)
    stem, dot, suffix = text.rpartition(".")
    if not dot:
        stem, suffix = text, ""
    suffix = f".{suffix.strip().lower()}" if dot else ""
    if suffix not in allowed:
        shown = repr(name[:80] + ("…" if len(name) > 80 else ""))
        kinds = ", ".join(allowed) or "(none)"
        raise UnsafeName(f"{shown} cannot be uploaded: only these file types are accepted: "
                         f"{kinds}")
    stem = _clean_stem(stem, max_len - len(suffix))
    if stem.split(".")[0].rstrip(" ").upper() in _RESERVED:
        stem = _clean_stem("_" + stem, max_len - len(suffix))
    return (stem or "upload") + suffix


def _clean_stem(stem: str, room: int) -> str:
    stem = _SPACES.sub(" ", stem).lstrip(" .-")
    return stem[:room].rstrip(" .")


def unique_path(folder: Path, name: str) -> Path:
    """`folder/name`, or `folder/'stem (2).suffix'`, `(3)`, … if that is taken.

    `name` must be a single, plain file name (as made by `safe_upload_name`); the result is
    checked to resolve directly inside `folder` (else `UnsafeName`). Another writer can still
    take the name before the caller does: create the file with mode "x" and retry on
    `FileExistsError`.
    """
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise UnsafeName(f"{name!r} is not a plain file name: pass it through safe_upload_name")
    base = folder.resolve()
    path = Path(name)
    stem, suffix = path.stem, path.suffix
    n = 1
    while True:
        candidate = folder / (name if n == 1 else f"{stem} ({n}){suffix}")
        if not _lexists(candidate):
            break
        n += 1
    resolved = candidate.resolve()
    if resolved.parent != base:
        raise UnsafeName(f"{candidate.name!r} would resolve to {resolved}, outside {base}")
    return candidate


def _lexists(path: Path) -> bool:
    """True for existing files and for symlinks, dangling or not."""
    return path.is_symlink() or path.exists()
