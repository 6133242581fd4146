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
"""

from __future__ import annotations

import re
from collections.abc import Iterable
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
]
_INSTRUCTION = re.compile("|".join(f"(?:{p})" for p in _PATTERNS),
                          re.IGNORECASE | re.MULTILINE)
# Sentences end at . ! ? followed by white space, or at a line break.
_SENTENCE_BREAK = re.compile(r"((?<=[.!?])\s+|\n+)")
_URL = re.compile(r"(?:https?|ftp)://[^\s<>()\[\]\"'`]+|\bwww\.[^\s<>()\[\]\"'`]+",
                  re.IGNORECASE)
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\(\s*([^)\s]+)[^)]*\)")


@dataclass(frozen=True, slots=True)
class Neutralised:
    text: str
    removed: int  # sentences taken out

    @property
    def flagged(self) -> bool:
        return self.removed > 0


def looks_like_instructions(text: str) -> bool:
    return _INSTRUCTION.search(text) is not None


def neutralise(text: str) -> Neutralised:
    """The text with every instruction-like sentence replaced by one `REMOVED` marker."""
    if not looks_like_instructions(text):
        return Neutralised(text, 0)
    parts = _SENTENCE_BREAK.split(text)  # sentence, break, sentence, break, ...
    out: list[str] = []
    removed = 0
    for i in range(0, len(parts), 2):
        sentence, gap = parts[i], parts[i + 1] if i + 1 < len(parts) else ""
        if _INSTRUCTION.search(sentence):
            removed += 1
            if len(out) >= 2 and out[-2] == REMOVED:
                out[-1] = gap  # one marker for a run of removed sentences
                continue
            sentence = REMOVED
        out += [sentence, gap]
    return Neutralised("".join(out).strip(), removed)


def _trim(url: str) -> str:
    return url.rstrip(".,;:!?")


def strip_unsourced_links(answer: str, sources: Iterable[str]) -> tuple[str, int]:
    """(answer without URLs that are not in the sources verbatim, how many were removed)."""
    corpus = "\n".join(sources)
    removed = 0

    def allowed(url: str) -> bool:
        return _trim(url) in corpus

    def md(m: re.Match[str]) -> str:
        nonlocal removed
        label, url = m.group(1), m.group(2)
        if allowed(url):
            return m.group(0)
        removed += 1
        return label

    def bare(m: re.Match[str]) -> str:
        nonlocal removed
        url = _trim(m.group(0))
        if allowed(url):
            return m.group(0)
        removed += 1
        return "[link removed]" + m.group(0)[len(url):]

    text = _MD_LINK.sub(md, answer)
    text = _URL.sub(bare, text)
    return text, removed


class LinkFilter:
    """`strip_unsourced_links` over a stream: holds back only an unfinished word or link."""

    def __init__(self, sources: Iterable[str]) -> None:
        self._sources = list(sources)
        self._buf = ""
        self.removed = 0

    def feed(self, piece: str) -> str:
        self._buf += piece
        cut = max(self._buf.rfind(" "), self._buf.rfind("\n"))
        done = max((m.end() for m in _MD_LINK.finditer(self._buf)), default=0)
        cut = max(cut, done - 1)  # never split a finished Markdown link
        opened = self._buf.rfind("[", done)
        if opened >= 0 and len(self._buf) - opened < 300:
            cut = min(cut, opened - 1)  # a Markdown link may still be coming
        if cut < 0:
            return ""
        ready, self._buf = self._buf[: cut + 1], self._buf[cut + 1 :]
        return self._check(ready)

    def flush(self) -> str:
        ready, self._buf = self._buf, ""
        return self._check(ready)

    def _check(self, text: str) -> str:
        clean, removed = strip_unsourced_links(text, self._sources)
        self.removed += removed
        return clean
