"""Document text is untrusted: keep its instructions from the model and its links out of answers.

Two checks around generation:

- `neutralise(text)` removes the sentences of a source that address the reader as a model
  ("ignore the previous instructions", "reply only with …", "system prompt: …", "send … to
  http://…") before the source goes into the prompt. Fencing alone is not enough: measured with
  the bundled 1.5B model, a question about such a document made it obey the document. The
  original passage is still what a citation shows, so nothing is hidden from the user.
- `strip_unsourced_links(answer, sources)` drops every URL (and Markdown link or image around
  it) that does not appear word for word in the sources. A link the model made up, or one that
  carries data in its query string, is how an answer leaks what it saw when a UI renders it.

The patterns aim at text written to steer an assistant, not at ordinary manuals ("ignore the
beep", "reply to the e-mail"): each needs an instruction-like object or a model-directed verb.
They match a folded copy of the text (compatibility-normalised, accents, zero-width and other
format characters dropped, Cyrillic/Greek look-alikes mapped to Latin, Markdown emphasis and
decorative punctuation such as ` -- ` removed), and `neutralise` cuts every sentence a match
touches, so whatever `looks_like_instructions` flags, `neutralise` removes.

The link filter looks for URLs in what a renderer would show (HTML entities decoded, format
characters dropped, Markdown escapes such as `https\\://` allowed for), and for links, images,
definitions and tags in the raw Markdown and HTML, as a parser does; the streaming filter holds
back any of these until it is complete, so it removes what the whole-text filter removes.
Besides bare URLs and inline links it removes reference definitions
(`[r]: //host/…`), raw HTML tags with URL or script attributes (`<img src=…>`),
protocol-relative (`//host`), backslash (`https:\\\\host`), `mailto:`, `data:` and
`javascript:` targets and e-mail autolinks, unless that exact URL is in a source
(`javascript:`, `data:` and `vbscript:` never are).
"""

from __future__ import annotations

import functools
import html
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

REMOVED = "[instruction-like text removed: documents cannot give instructions]"

_OBJECT = (r"(?:instructions?|prompts?|rules|guidelines|directions|context|question|"
           r"sources?|messages?|everything|all\s+else)")
_LEAK_VERB = r"(?:send|post|upload|forward|e-?mail|append|include|encode|add|leak|share)"
_DESTINATION = r"(?:https?://|\b[\w.+-]+@[\w-]+\.[\w.]+)"
_PRIVATE = (r"(?:conversation|chat(?:\s+history)?|history|secrets?|api\s+keys?|passwords?|"
            r"credentials|tokens?|(?:the\s+)?user'?s?\s+(?:data|question|answer|messages?))")
_PATTERNS = [
    # "ignore / disregard / forget (all|the|any) (previous|above|other) instructions / question"
    rf"\b(?:ignore|disregard|forget|override|bypass)\b(?:\s+\w+){{0,4}}?\s+{_OBJECT}\b",
    # "system instruction", "system prompt", "developer message", "new instructions"
    r"\b(?:system|developer|admin(?:istrator)?)\s+(?:instructions?|prompt|message|override|"
    r"note\s+to\s+(?:the\s+)?(?:ai|assistant|model))\b",
    r"\bnew\s+instructions?\b",
    # "reply only with", "respond with exactly", "output the word", "say nothing but"
    r"\b(?:reply|respond|answer|output|print|say|write)\s+(?:only\s+)?"
    r"(?:with\s+)?(?:exactly|verbatim|nothing\s+but|the\s+(?:word|phrase|text))\b",
    r"\b(?:reply|respond|answer|output|say)\s+(?:with\s+)?the\s+following\b",
    r"\b(?:reply|respond|answer)\s+only\b",
    # addressing the model directly
    r"\b(?:you\s+are\s+(?:now\s+)?(?:an?\s+)?(?:ai|assistant|language\s+model|chatbot|llm)|"
    r"as\s+an\s+(?:ai|assistant|language\s+model))\b",
    r"\b(?:to|for)\s+(?:the\s+)?(?:ai|assistant|language\s+model|llm|chatbot)\s*[:,]",
    r"\b(?:do\s+not|don't|never)\s+(?:tell|mention|reveal|cite)\b(?:\s+\w+){0,3}?\s+"
    r"(?:user|sources?|documents?|instructions?)\b",
    # exfiltration: send / post / append … to a URL or an address
    rf"\b{_LEAK_VERB}\b[^\n]{{0,120}}?{_DESTINATION}[^\n]{{0,120}}?\b{_PRIVATE}\b",
    rf"\b{_LEAK_VERB}\b[^\n]{{0,120}}?\b{_PRIVATE}\b[^\n]{{0,120}}?{_DESTINATION}",
    r"\b(?:tell|ask|instruct)\s+the\s+user\s+to\s+(?:visit|open|click|go\s+to)\b",
    # chat-template markers
    r"<\|(?:im_start|im_end|system|assistant|user|endoftext)\|>",
    r"^\s*(?:###\s*)?(?:system|assistant)\s*:",
    # "ignore (all) previous instructions" in German, French, Spanish and Italian (matched
    # without accents: "précédentes" is "precedentes" in the folded text)
    r"\b(?:ignorier\w*|vergiss|vergessen|missacht\w*|ubergeh\w*|verwirf|verwerfen)\b"
    r"(?:\s+\w+){0,4}?\s+(?:vorherigen?|vorhergehenden?|vorigen?|bisherigen?|obigen?|"
    r"fruheren?|alle[nms]?)\b(?:\s+\w+){0,2}?\s+(?:anweisungen|instruktionen|befehle|regeln|"
    r"vorgaben|anordnungen|prompts?)\b",
    r"\b(?:ignore[rz]?|oublie[rz]?|neglige[rz]?|ne\s+(?:tenez|tiens)\s+pas\s+compte)\b"
    r"(?:\s+[\w'’]+){0,4}?\s+(?:instructions?|consignes?|directives?|regles|indications|"
    r"messages?)\s+(?:precedentes?|anterieures?|ci-dessus|precedemment)\b",
    r"\b(?:ignor\w*|olvid\w*|omit\w*|descart\w*|haz\s+caso\s+omiso\s+de|dimentica\w*)\b"
    r"(?:\s+\w+){0,4}?\s+(?:instrucciones|indicaciones|reglas|ordenes|mensajes|directrices|"
    r"istruzioni|regole)\s+(?:anteriores|previas|precedentes|precedenti|previe)\b",
]
_INSTRUCTION = re.compile("|".join(f"(?:{p})" for p in _PATTERNS),
                          re.IGNORECASE | re.MULTILINE)
# Sentences end at . ! ? followed by white space, or at a line break.
_SENTENCE_BREAK = re.compile(r"((?<=[.!?])\s+|\n+)")

# --- the folded text the patterns see -------------------------------------------------------
# Letters of other scripts that look like Latin ones (after NFKD), mapped for matching only.
_LOOKALIKES = (  # pairs: a letter, then the Latin letter it looks like
    "АAВBЕEЅSІIЈJКKМMНHОOРPСCТTХXУYҮYӀIԚQԜW"  # Cyrillic capitals
    "аaеeіiјjоoрpсcѕsхxуyүyһhӏlԁdԛqԝwпnвbгrкkмmнhтtьbѵv"  # Cyrillic small letters
    "ΑAΒBΕEΖZΗHΙIΚKΜMΝNΟOΡPΤTΥYΧX"  # Greek capitals
    "αaβbγyεeηnιiκkνvοoρpτtυuχxωwϲcϳj"  # Greek small letters
    "ıiɩiɑaɡgօoսuհh"  # dotless i, Latin and Armenian look-alikes
)
_HOMOGLYPHS = dict(zip(_LOOKALIKES[0::2], _LOOKALIKES[1::2], strict=True))
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
# Emphasis and decoration between words: "**Ignore** all", "Ignore -- all", "__Ignore__".
_DECORATION = re.compile(
    r"(?P<gap>(?<!\S)[-=~>+#.*_\u2022\u00b7]+(?!\S)|-{2,}|(?<![^\W_])_+|_+(?![^\W_]))"
    r"|(?P<drop>[*`~]+)")


@functools.lru_cache(maxsize=8192)
def _fold_char(ch: str) -> str:
    """One character as the patterns see it: NFKD, marks and format characters dropped,
    look-alike letters and dashes mapped to ASCII."""
    out = []
    for c in unicodedata.normalize("NFKD", ch):
        category = unicodedata.category(c)
        if category in ("Mn", "Me", "Cf"):
            continue
        if category == "Pd" or c == "\u2212":
            c = "-"
        elif category in ("Zs", "Zl", "Zp"):
            c = " " if category == "Zs" else "\n"
        out.append(_HOMOGLYPHS.get(c, c))
    return "".join(out)


_Index = list[int] | None  # for each character of a rewritten text, its position in the original


def _rewrite(text: str, index: _Index, pattern: re.Pattern[str],
             repl: Callable[[re.Match[str]], str]) -> tuple[str, _Index]:
    """`pattern.sub(repl, text)`, also mapping each new character back to the original."""
    out: list[str] = []
    mapped: list[int] = []
    pos = 0
    for m in pattern.finditer(text):
        new = repl(m)
        if new == m.group(0):
            continue
        out += [text[pos : m.start()], new]
        if index is not None:
            mapped += index[pos : m.start()]
            mapped += [index[m.start()]] * len(new)
        pos = m.end()
    if not out:
        return text, index
    out.append(text[pos:])
    if index is not None:
        mapped += index[pos:]
    return "".join(out), mapped if index is not None else None


def _fold(text: str, index: _Index = None) -> tuple[str, _Index]:
    table = {ord(c): _fold_char(c) for c in set(text) if ord(c) > 0x7f}
    if table and (index is None or all(len(v) == 1 for v in table.values())):
        text = text.translate(table)  # one character for one: the index still holds
    elif table:
        text, index = _rewrite(text, index, _NON_ASCII, lambda m: table[ord(m.group())])
    if index is None:
        return _DECORATION.sub(lambda m: " " if m.group("gap") else "", text), None
    return _rewrite(text, index, _DECORATION, lambda m: " " if m.group("gap") else "")


@dataclass(frozen=True, slots=True)
class Neutralised:
    text: str
    removed: int  # sentences taken out

    @property
    def flagged(self) -> bool:
        return self.removed > 0

    @property
    def attribute(self) -> str:
        """The text for a double-quoted attribute (`location="…"`): one line, `& < > " '`
        escaped, so a file name or heading cannot end the attribute or the tag."""
        return _LINE_BREAKS.sub(" ", html.escape(self.text, quote=True))


_LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")


def looks_like_instructions(text: str) -> bool:
    return _INSTRUCTION.search(_fold(text)[0]) is not None


def neutralise(text: str) -> Neutralised:
    """The text with every instruction-like sentence replaced by one `REMOVED` marker.

    The patterns run over the folded text as a whole, as in `looks_like_instructions`, and every
    sentence a match touches is cut (both lines of "Ignore all\\nprevious instructions"), until
    nothing matches: flagged text always loses at least one sentence."""
    if not looks_like_instructions(text):
        return Neutralised(text, 0)
    current, removed = text, 0
    while True:
        folded, index = _fold(current, list(range(len(current))))
        if index is None:  # pragma: no cover - an index in gives an index out
            break
        spans = [(index[m.start()], index[m.end() - 1] + 1)
                 for m in _INSTRUCTION.finditer(folded) if m.end() > m.start()]
        current, cut = _cut_sentences(current, spans)
        if cut == 0:
            break
        removed += cut
    return Neutralised(current.strip(), removed)


def _cut_sentences(text: str, spans: list[tuple[int, int]]) -> tuple[str, int]:
    """(text with each sentence that overlaps a span replaced by `REMOVED`, how many)."""
    out: list[str] = []
    removed = pos = 0
    breaks = [*_SENTENCE_BREAK.finditer(text), None]
    for brk in breaks:
        end = brk.start() if brk else len(text)
        sentence, gap = text[pos:end], brk.group() if brk else ""
        hit = sentence != REMOVED and any(a < end and b > pos for a, b in spans)
        pos = brk.end() if brk else len(text)
        if hit or sentence == REMOVED:
            removed += hit
            if len(out) >= 2 and out[-2] == REMOVED:
                out[-1] = gap  # one marker for a run of removed sentences
                continue
            sentence = REMOVED
        out += [sentence, gap]
    return "".join(out), removed


# --- links ----------------------------------------------------------------------------------
_URL_CHAR = r"[^\s<>()\[\]\"'`]"
# Every target a renderer may follow to another site, whatever the Markdown or HTML around it.
# Matched in the rendered view of the text (entities decoded, format characters dropped), so
# `https&#58;//…` is a URL too; `\:` and `\\` are Markdown escapes.
_URL = re.compile(
    # script and inline data, up to white space: `javascript:alert('…')`
    r"(?<![\w+.-])(?:javascript|vbscript|data)\\?:[^\s<>\"`]+"
    # http(s):anything (`https:\\host`, `https:host`), mailto:, …
    r"|(?<![\w+.-])(?:(?:https?|ftps?|wss?|file|mailto|blob)\\?:(?=[^\s<>\"'`])"
    # any other scheme followed by // or \\
    r"|[a-z][\w+.-]{1,31}\\?:[/\\]{2})" + _URL_CHAR + "*"
    # www.host (GFM links it)
    r"|(?<![\w.-])www\\?\." + _URL_CHAR + "+"
    # protocol-relative //host, \\host
    r"|(?<![\w:/\\.-])[/\\]{2,}[\w\[]" + _URL_CHAR + "*"
    # an e-mail address (GFM makes it a mailto: link)
    r"|(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+",
    re.IGNORECASE)
# Constructs whose target is not in the text a reader sees (matched in the raw text, as a
# Markdown or HTML parser does; entities in their targets are decoded when checked).
_LINK_STRUCTURE = re.compile(
    # a CommonMark reference definition, `[r]: //host/x "title"` (target maybe on the next line)
    r"(?P<ref>^ {0,3}\[(?:[^\]\\\n]|\\.){1,999}\]:[ \t]*\n?[ \t]*(?P<ref_url><[^<>\n]*>|\S+)"
    r"(?:[ \t]+(?:\"[^\"\n]*\"|'[^'\n]*'|\([^()\n]*\)))?[ \t]*(?=\n|\Z))"
    # a raw HTML tag, `<img src=…>`, `<a href=…>`
    r"|(?P<tag><[A-Za-z][A-Za-z0-9-]*(?=[\s/>])(?P<attrs>(?:\"[^\"]*\"|'[^']*'|[^'\"<>])*)>)"
    # an inline link or image, `[label](url "title")`, `![alt](<url>)`
    r"|(?P<md>!?\[(?P<label>[^\]]{0,1000})\]\(\s*(?P<md_url><[^<>\n]*>|[^)\s]+)[^)]{0,1000}\))",
    re.MULTILINE)
# The start of a construct above that has not finished streaming in yet.
_LINK_PENDING = re.compile(
    r"!?\[[^\]]{0,1000}(?:\](?:\([^)]{0,1000})?)?\Z"
    r"|<(?:[A-Za-z][A-Za-z0-9-]*(?:[\s/](?:\"[^\"]*\"|'[^']*'|[^'\"<>])*(?:\"[^\"]*|'[^']*)?)?)?\Z"
    # a reference definition (or a line's indent before one): hold its line, and the next
    # one, where its target may be
    r"|^ {0,3}(?:\[(?:[^\]\\\n]|\\.)*(?:\\|\](?::[^\n]*(?:\n[^\n]*)?)?)?)?\Z",
    re.MULTILINE)
_HTML_ATTR = re.compile(r"([^\s\"'>/=]+)(?:\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s\"'>]+))?")
_SAFE_ATTRS = frozenset(
    "alt title width height class id lang dir rel target name align valign colspan rowspan "
    "scope start type value role hidden open reversed span".split())
_URL_ATTRS = frozenset({"href", "src", "xlink:href", "cite"})
_NEVER_ALLOWED = re.compile(r"(?:javascript|data|vbscript):", re.IGNORECASE)
_RENDERED = re.compile(
    r"&(?:#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[A-Za-z][A-Za-z0-9]{1,31};)|[^\x00-\x7f]")
_MD_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")
_INVISIBLE = re.compile(r"[\x00-\x20\x7f]+")
_TRAILING = ".,;:!?*_~'\""
LINK_REMOVED = "[link removed]"


def _rendered(text: str) -> tuple[str, list[int]]:
    """The text as a renderer reads it: entities decoded, format characters dropped; with, for
    each character, where it starts in `text`."""
    def repl(m: re.Match[str]) -> str:
        s = m.group()
        if s.startswith("&"):
            return html.unescape(s)
        return "" if unicodedata.category(s) == "Cf" else s

    view, index = _rewrite(text, list(range(len(text))), _RENDERED, repl)
    return view, index or []


def _target(url: str) -> str:
    """A link target as a browser follows it, for comparing with the sources' URLs."""
    url = url.strip().removeprefix("<").removesuffix(">")
    url = _MD_ESCAPE.sub(r"\1", html.unescape(url))
    return _INVISIBLE.sub("", "".join(c for c in url if unicodedata.category(c) != "Cf")
                          ).rstrip(_TRAILING)


def _source_urls(sources: Iterable[str]) -> frozenset[str]:
    """Every URL in the sources, as `_target` writes it: the only ones an answer may hold."""
    urls = {_target(m.group()) for text in sources for m in _URL.finditer(_rendered(text)[0])}
    return frozenset(u for u in urls if u and not _NEVER_ALLOWED.match(u))


def _allowed(url: str, allowed: frozenset[str]) -> bool:
    target = _target(url)
    return target in allowed and not _NEVER_ALLOWED.match(target)


def _tag_is_safe(attrs: str, allowed: frozenset[str]) -> bool:
    for m in _HTML_ATTR.finditer(attrs):
        name, value = m.group(1).lower(), m.group(2)
        if name in _SAFE_ATTRS or name.startswith("aria-"):
            continue
        if name in _URL_ATTRS and value is not None and _allowed(value.strip("\"'"), allowed):
            continue
        return False  # a URL no source holds, a script, a style, or unknown
    return True


def _spans(text: str, pattern: re.Pattern[str], line_start: bool, index: list[int] | None = None,
           pos: int = 0) -> Iterator[tuple[re.Match[str], int, int]]:
    """Matches in `text` with their span, in the original text if `text` is a view of it with
    this `index` (end -1: the original's end). `^` matches at the start only if `line_start`:
    a streamed piece may start mid-line."""
    ctx = ("\n" if line_start else " ") + text
    for m in pattern.finditer(ctx, pos + 1):
        if m.start() > len(text):
            break  # an empty match at the very end holds nothing back
        start, end = m.start() - 1, m.end() - 1
        if index is not None:
            start, end = index[start], index[end] if end < len(index) else -1
        yield m, start, end


def _splice(text: str, edits: list[tuple[int, int, str]]) -> str:
    out, pos = [], 0
    for start, end, new in edits:
        end = len(text) if end < 0 else end
        out += [text[pos:start], new]
        pos = end
    return "".join(out) + text[pos:]


def _strip_structure(text: str, allowed: frozenset[str], line_start: bool) -> tuple[str, int]:
    """Reference definitions, HTML tags and inline links/images whose target is not allowed:
    definitions and tags removed, links and images reduced to their label."""
    edits: list[tuple[int, int, str]] = []
    for m, start, end in _spans(text, _LINK_STRUCTURE, line_start):
        if m.group("ref") is not None:
            if not _allowed(m.group("ref_url"), allowed):
                edits.append((start, end, ""))
        elif m.group("tag") is not None:
            if not _tag_is_safe(m.group("attrs"), allowed):
                edits.append((start, end, ""))
        elif not _allowed(m.group("md_url"), allowed):
            edits.append((start, end, m.group("label")))
    return _splice(text, edits), len(edits)


def _strip_urls(text: str, allowed: frozenset[str]) -> tuple[str, int]:
    """Every other URL, autolink or address that is not allowed becomes `LINK_REMOVED`."""
    view, index = _rendered(text)
    edits: list[tuple[int, int, str]] = []
    for m, start, end in _spans(view, _URL, line_start=False, index=index):
        if not _allowed(m.group(), allowed):
            original = text[start : len(text) if end < 0 else end]
            kept = original.rstrip(_TRAILING)
            edits.append((start, end, LINK_REMOVED + original[len(kept) :]))
    return _splice(text, edits), len(edits)


def _strip_links(text: str, allowed: frozenset[str], line_start: bool = True) -> tuple[str, int]:
    removed = 0
    for _ in range(4):  # a label put back can complete a new link: look again
        text, n = _strip_structure(text, allowed, line_start)
        removed += n
        if not n:
            break
    text, n = _strip_urls(text, allowed)
    return text, removed + n


def strip_unsourced_links(answer: str, sources: Iterable[str]) -> tuple[str, int]:
    """(answer without links that are not in the sources verbatim, how many were removed)."""
    return _strip_links(answer, _source_urls(sources))


class LinkFilter:
    """`strip_unsourced_links` over a stream: holds back only an unfinished word or link."""

    def __init__(self, sources: Iterable[str]) -> None:
        self._allowed = _source_urls(sources)
        self._buf = ""
        self._line_start = True  # the held-back text starts a line
        self.removed = 0

    def feed(self, piece: str) -> str:
        self._buf += piece
        cut = self._safe_cut()
        if cut <= 0:
            return ""
        ready, self._buf = self._buf[:cut], self._buf[cut:]
        return self._check(ready)

    def flush(self) -> str:
        ready, self._buf = self._buf, ""
        return self._check(ready)

    def _safe_cut(self) -> int:
        """The end of the longest prefix that ends in white space and splits no link, tag or
        reference definition, finished or not: the rest may still become one."""
        buf = self._buf
        limit = len(buf)
        for _, start, _ in _spans(buf, _LINK_PENDING, self._line_start,
                                  pos=max(0, len(buf) - 2000)):
            limit = start  # the first (leftmost) unfinished construct
            break
        inside = [(start, end) for _, start, end in _spans(buf, _LINK_STRUCTURE,
                                                          self._line_start)]
        for cut in range(limit, 0, -1):
            if buf[cut - 1].isspace() and not any(s < cut < e for s, e in inside):
                return cut
        return 0

    def _check(self, text: str) -> str:
        if not text:
            return ""
        clean, removed = _strip_links(text, self._allowed, self._line_start)
        self._line_start = text.endswith("\n")
        self.removed += removed
        return clean
