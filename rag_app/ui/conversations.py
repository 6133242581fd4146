"""Saved chats: one JSON file per conversation, so they survive a reload and a restart.

    folder/<32 hex chars>.json   one conversation (written atomically, mode 0600)
    folder/feedback.jsonl        one line per thumbs up/down: question, answer, citations

Conversation ids are made by the server and checked against a strict pattern before any path is
built from them, so an id from a URL (`?chat=../../etc/passwd`) can never name another file.
One `ConversationStore` may be shared by every Streamlit session of a process.

Two tabs (or two people) may hold the same chat: each message has a stable `id`, and `save`
merges with what is on disk under the folder's lock, so neither loses the other's messages
(REVIEW-ui-security M4). A file this version cannot read (corrupt, or written by a newer
version) is never overwritten, and `problem()` says which it is.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import re
import tempfile
import threading
import time
import unicodedata
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag_app.errors import RagError
from rag_app.ui.safety import escape_markdown

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
NEW_TITLE = "New chat"
TITLE_CHARS = 60
FEEDBACK_FILE = "feedback.jsonl"
ROLES = ("user", "assistant")
CITATION_FIELDS = ("number", "chunk_id", "source", "page_start", "page_end", "location",
                   "passage")
_ID = re.compile(r"[0-9a-f]{32}")


class UnreadableChat(RagError, ValueError):
    """A saved chat this version cannot read: corrupt, or written by a newer version (a
    ValueError too, as it was before it took the project's base error)."""


class NewerFormat(UnreadableChat):
    """A saved chat written by a newer version of the app (its `version` is higher)."""


def valid_id(conv_id: object) -> bool:
    """True for a server-made conversation id (uuid4().hex): 32 lowercase hex characters."""
    return isinstance(conv_id, str) and _ID.fullmatch(conv_id) is not None


def make_title(text: str, limit: int = TITLE_CHARS) -> str:
    """A one-line title from a question: control characters dropped, cut at a word near
    `limit` characters."""
    text = " ".join(text.split())  # newlines and tabs too, before control characters go
    text = "".join(ch for ch in text if unicodedata.category(ch) not in ("Cc", "Cf"))
    if len(text) <= limit:
        return text or NEW_TITLE
    cut = text[:limit]
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,.;:-") + "…"


@dataclass
class Conversation:
    id: str
    title: str = NEW_TITLE
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    # {"role": "user"|"assistant", "content": str, "result": Answer.to_dict() | None}
    # and, once rated, "feedback": 1 (thumbs up) | 0 (thumbs down)
    messages: list[dict[str, Any]] = field(default_factory=list)

    def add(self, role: str, content: str, result: dict[str, Any] | None = None) -> dict[str, Any]:
        """Append a message (the first question becomes the title) and return it."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        message: dict[str, Any] = {"id": new_message_id(), "role": role, "content": content,
                                   "result": result}
        self.messages.append(message)
        if role == "user" and self.title == NEW_TITLE:
            self.title = make_title(content)
        self.updated = time.time()
        return message

    def history(self, turns: int = 6) -> list[dict[str, str]]:
        """The last `turns` messages as [{"role", "content"}], for condensing a follow-up."""
        if turns <= 0:
            return []
        return [{"role": m["role"], "content": m["content"]} for m in self.messages[-turns:]]

    def to_dict(self) -> dict[str, Any]:
        return {"version": FORMAT_VERSION, "id": self.id, "title": self.title,
                "created": self.created, "updated": self.updated, "messages": self.messages}

    @classmethod
    def from_dict(cls, data: object) -> Conversation:
        """A conversation from its JSON form; ValueError says what is wrong with it."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        version = data.get("version", 1)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"format version {version!r} is not a positive whole number")
        if version > FORMAT_VERSION:
            raise NewerFormat(f"it was saved in format {version} by a newer version of the app; "
                              f"this one reads up to format {FORMAT_VERSION}")
        if not valid_id(data.get("id")):
            raise ValueError(f"invalid id {data.get('id')!r}")
        if not isinstance(data.get("title"), str):
            raise ValueError("title is not a string")
        for key in ("created", "updated"):
            value = data.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{key} is not a number")
        messages = data.get("messages")
        if not isinstance(messages, list):
            raise ValueError("messages is not a list")
        for i, m in enumerate(messages):
            if (not isinstance(m, dict) or m.get("role") not in ROLES
                    or not isinstance(m.get("content"), str)
                    or not isinstance(m.get("result"), dict | None)):
                raise ValueError(f"message {i} is not a {{role, content, result}} object")
            if "id" in m and not isinstance(m["id"], str):
                raise ValueError(f"message {i} has an id that is not a string")
        ids = [m["id"] for m in messages if "id" in m]
        if len(set(ids)) != len(ids):
            raise ValueError("two messages share one id")
        for i, m in enumerate(messages):
            # saved before messages had ids: the same id in every tab that loads the file
            m.setdefault("id", f"legacy-{i}")
        return cls(data["id"], data["title"], float(data["created"]), float(data["updated"]),
                   messages)


def new_message_id() -> str:
    return uuid.uuid4().hex[:16]


def _ensure_ids(conv: Conversation) -> None:
    """Give an id to every message appended without one (chat.py appends plain dicts)."""
    for m in conv.messages:
        if not isinstance(m.get("id"), str):
            m["id"] = new_message_id()


def merge_messages(disk: list[dict[str, Any]], mine: list[dict[str, Any]]
                   ) -> list[dict[str, Any]]:
    """The messages of two copies of one chat, none lost. Messages are matched by `id`; of a
    message in both, the copy edited last (`edited`, set by a rating) wins. Messages only in
    `mine` are added: a question at the end, an answer right after the message before it in
    `mine` (its question), so a turn stays together."""
    out = list(disk)
    position = {m["id"]: i for i, m in enumerate(out)}
    previous: str | None = None
    for m in mine:
        i = position.get(m["id"])
        if i is not None:
            if float(m.get("edited") or 0) >= float(out[i].get("edited") or 0):
                out[i] = m
        else:
            at = len(out)
            if m.get("role") == "assistant" and previous in position:
                at = position[previous] + 1
            out.insert(at, m)
            position = {x["id"]: j for j, x in enumerate(out)}
        previous = m["id"]
    return out


@dataclass(frozen=True)
class ConversationSummary:
    id: str
    title: str
    updated: float
    messages: int  # how many


# Every store of one folder in this process shares one lock (each Streamlit session may make
# its own store object).
_LOCKS: dict[Path, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_for(folder: Path) -> threading.RLock:
    key = folder.resolve()
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.RLock())


class ConversationStore:
    """Conversations as JSON files in `folder` (created on first save)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._lock = _lock_for(self.folder)
        # file name -> (inode, mtime_ns, size, summary): list() parses only changed files
        self._summaries: dict[str, tuple[int, int, int, ConversationSummary]] = {}

    def new(self) -> Conversation:
        """A new, empty conversation with a fresh id; nothing is written until `save`."""
        return Conversation(uuid.uuid4().hex)

    def _path(self, conv_id: str) -> Path:
        if not valid_id(conv_id):  # the only way from an id to a path
            raise ValueError(f"invalid conversation id {conv_id!r}: expected 32 hex characters")
        return self.folder / f"{conv_id}.json"

    def load(self, conv_id: str) -> Conversation | None:
        """The conversation, or None if the id is invalid, the file is missing or cannot be
        read (`problem()` says which, in words for the page)."""
        if not valid_id(conv_id):
            return None
        try:
            return self._read(conv_id)
        except UnreadableChat as exc:
            log.warning("cannot read conversation %s: %s", self._path(conv_id), exc)
            return None

    def _read(self, conv_id: str) -> Conversation | None:
        """The conversation; None when there is no file; UnreadableChat says what is wrong."""
        path = self._path(conv_id)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except UnicodeDecodeError as exc:
            raise UnreadableChat(f"it is not UTF-8 text ({exc.reason})") from exc
        except OSError as exc:
            raise UnreadableChat(f"it cannot be opened ({exc.strerror})") from exc
        try:
            conv = Conversation.from_dict(json.loads(text))
        except UnreadableChat:
            raise
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            raise UnreadableChat(str(exc)) from exc
        if conv.id != conv_id:
            raise UnreadableChat(f"it holds another chat's id ({conv.id})")
        return conv

    def problem(self, conv_id: str) -> str:
        """Why `load(conv_id)` gives None, as a sentence for the page (what happened, what
        was done): the link is wrong, the chat was deleted, its file is corrupt or unreadable,
        or a newer version wrote it. An empty string when it loads."""
        if not valid_id(conv_id):
            return ("That conversation no longer exists, or never did: the link does not name "
                    "a saved chat (a chat id is 32 letters and digits). A new chat was started.")
        try:
            conv = self._read(conv_id)
        except NewerFormat as exc:
            return (f"This chat cannot be opened: {exc}. Its file was left as it is; update "
                    "the app to read it. A new chat was started.")
        except UnreadableChat as exc:
            return (f"This chat file is corrupt or unreadable ({exc}). It was left as it is "
                    f"({conv_id}.json in the chats folder). A new chat was started.")
        if conv is None:
            return ("That conversation no longer exists (it was deleted, or the link is "
                    "wrong). A new chat was started.")
        return ""

    def save(self, conv: Conversation) -> None:
        """Merge the conversation with its file (another tab may have added messages: they
        are kept, and `conv` gets them too), write it atomically and stamp `updated`."""
        conv.updated = time.time()
        self._write(conv)

    def refresh(self, conv: Conversation) -> None:
        """Add to `conv` what other tabs saved meanwhile (nothing is written)."""
        with self._lock:
            try:
                disk = self._read(conv.id)
            except UnreadableChat:
                return
            if disk is not None:
                self._merge_into(conv, disk)
                conv.updated = max(conv.updated, disk.updated)

    @staticmethod
    def _merge_into(conv: Conversation, disk: Conversation) -> None:
        conv.messages[:] = merge_messages(disk.messages, conv.messages)
        if conv.title == NEW_TITLE:
            conv.title = disk.title
        conv.created = min(conv.created, disk.created)

    def _write(self, conv: Conversation) -> None:
        path = self._path(conv.id)
        with self._lock:
            _ensure_ids(conv)
            try:
                disk = self._read(conv.id)
            except UnreadableChat as exc:  # never overwrite what cannot be read: set aside
                aside = path.with_name(f"{path.name}.unreadable-{time.time_ns()}")
                log.warning("conversation %s cannot be read (%s): kept as %s", path, exc,
                            aside.name)
                os.replace(path, aside)
                disk = None
            if disk is not None:
                self._merge_into(conv, disk)
            data = json.dumps(conv.to_dict(), ensure_ascii=False, indent=1)
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(prefix=f".{conv.id}.", suffix=".tmp", dir=self.folder)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    os.fchmod(f.fileno(), 0o600)
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise

    def list(self, limit: int = 50) -> list[ConversationSummary]:
        """Saved conversations, most recently updated first; unreadable files are skipped."""
        try:
            entries = [e for e in os.scandir(self.folder)
                       if e.name.endswith(".json") and valid_id(e.name[:-5])]
        except FileNotFoundError:
            return []
        out: list[ConversationSummary] = []
        with self._lock:
            seen = set()
            for entry in entries:
                seen.add(entry.name)
                summary = self._summary(entry)
                if summary is not None:
                    out.append(summary)
            for name in set(self._summaries) - seen:
                del self._summaries[name]
        out.sort(key=lambda s: (s.updated, s.id), reverse=True)
        return out[:max(limit, 0)]

    def _summary(self, entry: os.DirEntry[str]) -> ConversationSummary | None:
        try:
            st = entry.stat()
        except OSError:
            return None  # deleted meanwhile
        cached = self._summaries.get(entry.name)
        if cached and cached[:3] == (st.st_ino, st.st_mtime_ns, st.st_size):
            return cached[3]
        conv = self.load(entry.name[:-5])  # logs why, if it cannot
        if conv is None:
            self._summaries.pop(entry.name, None)
            return None
        summary = ConversationSummary(conv.id, conv.title, conv.updated, len(conv.messages))
        self._summaries[entry.name] = (st.st_ino, st.st_mtime_ns, st.st_size, summary)
        return summary

    def delete(self, conv_id: str) -> bool:
        """Remove a conversation; False if the id is invalid or there was none. Its feedback
        lines stay in feedback.jsonl."""
        if not valid_id(conv_id):
            return False
        with self._lock:
            try:
                self._path(conv_id).unlink()
            except FileNotFoundError:
                return False
        return True

    # --- feedback ----------------------------------------------------------------------------
    @property
    def feedback_path(self) -> Path:
        return self.folder / FEEDBACK_FILE

    def add_feedback(self, conv: Conversation, message_index: int, rating: int,
                     comment: str = "") -> None:
        """Record a thumbs up (1) or down (0) for an assistant message: one line in
        feedback.jsonl (question, answer, citations: material for an evaluation set) and
        `feedback` on the message itself, then save. Rating again replaces it on the message;
        the file keeps every line and the later one wins in `feedback()`."""
        if isinstance(rating, bool) or rating not in (0, 1):
            raise ValueError(f"rating must be 1 (thumbs up) or 0 (thumbs down), not {rating!r}")
        if not 0 <= message_index < len(conv.messages):
            raise ValueError(f"conversation {conv.id} has no message {message_index}")
        message = conv.messages[message_index]
        _ensure_ids(conv)
        if message.get("role") != "assistant":
            raise ValueError(f"message {message_index} is not an answer: only answers are rated")
        question = next((m["content"] for m in reversed(conv.messages[:message_index])
                         if m.get("role") == "user"), "")
        result = message.get("result") or {}
        record = {
            "time": time.time(),
            "conversation": conv.id,
            "message": message_index,
            "message_id": message.get("id"),  # indexes differ between two tabs' copies
            "rating": rating,
            "comment": comment,
            "question": question,
            "query": result.get("query", question),
            "answer": message.get("content", ""),
            "found": result.get("found"),
            "grounded": result.get("grounded"),
            "mode": result.get("mode"),
            "citations": [{k: c.get(k) for k in CITATION_FIELDS}
                          for c in result.get("citations") or [] if isinstance(c, dict)],
            "retrieved": [h.get("chunk_id") for h in result.get("hits") or []
                          if isinstance(h, dict)],
        }
        line = json.dumps(record, ensure_ascii=True) + "\n"  # \u2028 etc. stay escaped
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.feedback_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode("utf-8"))  # one write: lines never interleave
            finally:
                os.close(fd)
            message["feedback"] = rating
            message["edited"] = time.time()  # this copy wins when merged with another tab's
            if comment:
                message["feedback_comment"] = comment
            else:
                message.pop("feedback_comment", None)
            self._write(conv)  # a rating does not move the chat to the top of the list

    def feedback(self) -> builtins.list[dict[str, Any]]:
        """feedback.jsonl parsed: the latest rating per (conversation, message), in the order
        they were last given. Corrupt lines are skipped with a warning."""
        try:
            text = self.feedback_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        bad = 0
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key = (str(record["conversation"]),
                       str(record.get("message_id") or int(record["message"])))
            except (ValueError, KeyError, TypeError):
                bad += 1
                continue
            latest.pop(key, None)  # re-inserted: ordered by the latest rating
            latest[key] = record
        if bad:
            log.warning("skipped %d corrupt line(s) in %s", bad, self.feedback_path)
        return list(latest.values())


# --- export ----------------------------------------------------------------------------------
def _location(citation: dict[str, Any]) -> str:
    if citation.get("location"):
        return str(citation["location"])
    source = str(citation.get("source") or "?")
    start, end = citation.get("page_start"), citation.get("page_end")
    if start is None:
        return source
    return f"{source} pp. {start}-{end}" if end and end != start else f"{source} p. {start}"


def _quote(text: str, indent: str = "") -> list[str]:
    return [f"{indent}> {line}" if line else f"{indent}>"
            for line in escape_markdown(text).split("\n")]


def export_markdown(conv: Conversation) -> str:
    """The conversation as Markdown. Everything that came from the user, the model or the
    documents is escaped, so the export shows text only: no links, images or HTML."""
    out = [f"# {escape_markdown(make_title(conv.title))}", ""]
    for message in conv.messages:
        who = "You" if message.get("role") == "user" else "Assistant"
        out += [f"**{who}:** {escape_markdown(str(message.get('content', '')))}", ""]
        result = message.get("result") or {}
        citations = [c for c in result.get("citations") or [] if isinstance(c, dict)]
        if not citations:
            continue
        out += ["Sources:", ""]
        for i, c in enumerate(citations, start=1):
            number = c.get("number") if isinstance(c.get("number"), int) else i
            out.append(f"- \\[{number}\\] {escape_markdown(make_title(_location(c), 200))}")
            passage = str(c.get("passage") or "")
            if passage.strip():
                out += ["", *_quote(passage, indent="  "), ""]
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def export_json(conv: Conversation) -> str:
    """The whole conversation (the file's format) as indented JSON."""
    return json.dumps(conv.to_dict(), indent=2, ensure_ascii=False)
