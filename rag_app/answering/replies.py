"""Reading the model's replies: the JSON answer or claims (whole, or cut off at the token limit),
streamed as they arrive (`StringFields`), the answer check's verdict, and an answer's text rules
(a refusal, a last sentence announcing what never came).
"""

from __future__ import annotations

import json
import re
from typing import Any

from rag_app.answering.prompts import NOT_FOUND
from rag_app.text.sentences import sentence_breaks

MARK = re.compile(r"\[(\d{1,3})\]")  # a source number the answer text shows: [2]


def is_refusal(text: str) -> bool:
    """An empty answer, or one saying "not found"."""
    return not text.strip() or NOT_FOUND.lower().rstrip(".") in text.lower()


def without_dangling_colon(text: str) -> str:
    """The answer without a last sentence that announces what never came ("…with the
    following content:"): the JSON string ends where the model wanted a line break. An answer
    that is that sentence alone stays."""
    stripped = text.rstrip()
    if not stripped.endswith(":"):
        return text
    breaks = sentence_breaks(stripped)
    return stripped[: breaks[-1]] if breaks else text


def parse_claims(reply: str) -> list[dict[str, Any]] | None:
    """The claims of a quoted-answer reply; None when the reply is not one (prose, or the
    older {"answer", "sources"} shape, which carries no quotes to check)."""
    try:
        data = json.loads(reply)
    except Exception:  # noqa: BLE001 - any failure (RecursionError on [[[[… too): not JSON
        if not re.match(r'\s*\{\s*"claims"', reply):
            return None
        # cut short (the token limit, a stop): the claims that are complete
        data = {"claims": [{"source": int(m[1]), "quote": json.loads(m[2]),
                            "statement": json.loads(m[3])} for m in _CLAIM.finditer(reply)]}
    if not isinstance(data, dict) or not isinstance(data.get("claims"), list):
        return None
    claims, seen = [], set()
    for c in data["claims"]:  # a small model may repeat itself
        key = json.dumps(c, sort_keys=True, default=str)
        if isinstance(c, dict) and key not in seen:
            seen.add(key)
            claims.append(c)
    return claims


_STRING = r'"(?:[^"\\]|\\.)*"'
_CLAIM = re.compile(rf'\{{\s*"source"\s*:\s*(-?\d{{1,4}})\s*,\s*"quote"\s*:\s*({_STRING})\s*,'
                    rf'\s*"statement"\s*:\s*({_STRING})\s*\}}')


def parse_verdict(reply: str) -> bool | None:
    try:
        value = json.loads(reply).get("supported")
    except Exception:  # noqa: BLE001 - any failure (RecursionError on [[[[… too): not JSON
        value = None
    if isinstance(value, bool):
        return value
    word = reply.strip().lower()
    if word.startswith("yes") or '"supported": true' in word:
        return True
    if word.startswith("no") or '"supported": false' in word:
        return False
    return None


def parse_reply(raw: str) -> tuple[str, list[int]]:
    """(answer text, cited numbers) from the JSON reply, or from plain text with [n] marks."""
    try:
        data = json.loads(raw)
        text = str(data.get("answer", ""))
        numbers = [int(n) for n in data.get("sources", []) if isinstance(n, int | float | str)
                   and str(n).strip().lstrip("-").isdigit()]
    except Exception:  # noqa: BLE001 - any failure (RecursionError on [[[[… too): prose
        text = raw
        numbers = []
        if raw.lstrip().startswith("{"):
            # a JSON reply cut off (the token limit, a dropped stream): its answer as far as
            # it came, decoded as it was streamed, not the raw JSON with its escapes
            fields = StringFields("answer")
            partial = fields.feed(raw)
            if fields.seen:
                text = partial
    numbers += [int(n) for n in MARK.findall(text)]
    return text, numbers


class StringFields:
    """Streams the string values of some keys of a JSON reply as they arrive (the statements of
    a quoted answer, joined by spaces; or an older reply's "answer"), skipping the rest."""

    def __init__(self, *keys: str) -> None:
        self._keys = frozenset(keys)
        self._pending = ""  # an escape sequence split across pieces
        self._in_string = False
        self._escape = False
        self._streaming = False
        self._key: list[str] = []  # the string being read, when it may be a key
        self._last = ""  # the last string read outside a value
        self._after_colon = False
        self._values = 0
        self.seen = False

    def feed(self, piece: str) -> str:
        out: list[str] = []
        text, self._pending = self._pending + piece, ""
        i = 0
        while i < len(text):
            ch = text[i]
            if not self._in_string:
                if ch == '"':
                    self._in_string = True
                    self._key = []
                    self._streaming = self._after_colon and self._last in self._keys
                    if self._streaming:
                        self.seen = True
                        if self._values:
                            out.append(" ")
                        self._values += 1
                elif ch == ":":
                    self._after_colon = True
                elif not ch.isspace():
                    self._after_colon = False
                    self._last = ""
                i += 1
                continue
            if ch == "\\":
                if i + 1 >= len(text):
                    self._pending = text[i:]
                    break
                nxt = text[i + 1]
                if nxt == "u":
                    if i + 6 > len(text):
                        self._pending = text[i:]
                        break
                    try:
                        decoded = chr(int(text[i + 2 : i + 6], 16))
                    except ValueError:
                        decoded = ""
                    i += 6
                else:
                    decoded = {"n": "\n", "t": "\t", "r": "", "b": "", "f": ""}.get(nxt, nxt)
                    i += 2
                self._take(decoded, out)
                continue
            if ch == '"':
                self._in_string = False
                if self._streaming:
                    self._streaming = False
                elif not self._after_colon:
                    self._last = "".join(self._key)
                self._after_colon = False
                i += 1
                continue
            self._take(ch, out)
            i += 1
        return "".join(out)

    def _take(self, ch: str, out: list[str]) -> None:
        if self._streaming:
            out.append(ch)
        elif not self._after_colon and len(self._key) < 64:
            self._key.append(ch)
