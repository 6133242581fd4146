"""The citation viewer's drawing, bounded like ingest (REVIEW M2).

A cited PDF page is rendered, and a cited Markdown/HTML/text file parsed again, from an untrusted
file: a 707-byte poster-size PDF cost the server +475 MB, an image drawn 80 times 19 s per view.
So it happens in child processes (ingest's `LimitedChild`: spawned, RLIMIT_AS, killed at the
deadline and started again on the next request), each page within a pixel budget, at most one
render per view (the quoted words are looked for in the page's text first, and the passage is
marked when they are not there), and what was drawn is kept in a cache bounded in bytes.

A view that is refused (over a limit, unreadable) raises `SourceError` with a short reason; the
page then shows the stored passage. Nothing here imports Streamlit.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ingest.worker import (
    ChildDied,
    ChildTimeout,
    LimitedChild,
    ParseLimits,
    guard_child,
    requests,
)
from rag_app.settings import Settings
from rag_app.ui.sources import SourceError

__all__ = ["PageImage", "ViewLimits", "Viewer"]

log = logging.getLogger(__name__)

PageImage = tuple[int, bytes, int]  # (page number, PNG, highlight boxes drawn)
_SPAWN_MARGIN_S = 60.0  # until the child says it started (spawn and imports), as in ingest


@dataclass(frozen=True)
class ViewLimits:
    """What drawing one citation may use (RAG_VIEW_*), and how many run at once."""

    timeout_s: float = 15.0
    max_memory_mb: int = 1024  # 0: no limit
    max_pixels: int = 4_000_000
    cache_mb: float = 64.0
    workers: int = 2

    @classmethod
    def from_settings(cls, settings: Settings) -> ViewLimits:
        return cls(timeout_s=settings.view_timeout_s, max_memory_mb=settings.view_max_memory_mb,
                   max_pixels=settings.view_max_pixels, cache_mb=settings.view_cache_mb)


# --- in the child ------------------------------------------------------------------------------
def _pdf(path: str, start: int, end: int | None, quotes: Sequence[str], passage: str,
         max_pixels: int) -> list[PageImage]:
    """The cited page(s), the quoted words marked when the pages' text holds them, else the
    passage: one render either way."""
    from rag_app.ui.sources import find_passage_spans, render_pdf_pages

    mark = passage
    quoted = " ".join(quotes)
    start = _first_drawn(Path(path), start, end, quoted)
    if quoted.strip() and any(find_passage_spans(text, quoted)
                              for text in _page_texts(Path(path), start, end)):
        mark = quoted
    return [(v.page, v.png, v.marks)
            for v in render_pdf_pages(Path(path), start, end, mark, max_pixels=max_pixels)]


def _first_drawn(path: Path, start: int, end: int | None, quoted: str) -> int:
    """The first page to draw. A passage over more pages than are drawn (`_DRAWN`: short pages
    make one passage of three) starts where the quoted words are, so that the page holding
    them is shown (a walk through issue 28 saw a quote from page 3 of a pp. 1-3 passage open
    pages 1-2). Pages without a text layer (scans) cannot tell: drawn from the start."""
    from rag_app.ui.sources import find_passage_spans

    if end is None or end - start + 1 <= _DRAWN or not quoted.strip():
        return start
    texts = _page_texts(path, start, end, max_pages=end - start + 1)
    for offset, text in enumerate(texts):
        if find_passage_spans(text, quoted):
            return min(start + offset, end - _DRAWN + 1)
    return start


_DRAWN = 2  # pages render_pdf_pages draws at most (its max_pages)


def _page_texts(path: Path, start: int, end: int | None, max_pages: int = _DRAWN) -> list[str]:
    """The text of the pages render_pdf_pages would draw (no rendering); empty when the file
    cannot be read (render_pdf_pages then says why)."""
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(path)
    except (pdfium.PdfiumError, OSError):
        return []
    try:
        last = min(max(start, end if end is not None else start), start + max_pages - 1)
        texts = []
        for number in range(max(start, 1), min(last, len(pdf)) + 1):
            page = pdf[number - 1]
            textpage = page.get_textpage()
            try:
                texts.append(textpage.get_text_range())
            finally:
                textpage.close()
                page.close()
        return texts
    except pdfium.PdfiumError:
        return []
    finally:
        pdf.close()


def _section(path: str, passage: str, headings: Sequence[str], quotes: Sequence[str]
             ) -> tuple[str, str]:
    """(title, HTML): the section holding the passage, the quotes marked (else the passage);
    its Markdown rendered (safely: `markdown_html`), except in a plain text file, shown as
    written."""
    from rag_app.ui.sources import find_passage_spans, markdown_html, passage_html, section_view

    view = section_view(Path(path), passage, headings)
    spans = [span for q in quotes for span in find_passage_spans(view.text, q, min_words=1)]
    draw = passage_html if view.kind == "text" else markdown_html
    return view.title, draw(view.text, sorted(spans) or view.spans)


def _serve(conn: Connection, limits: ParseLimits) -> None:
    """The child's loop: ("pdf" | "section", args) in, ("started", t) then ("result", value or
    SourceError) out; None ends it."""
    guard_child(limits)
    for request in requests(conn):
        kind, args = request
        conn.send(("started", time.monotonic()))  # the time limit counts from here
        result: Any
        try:
            result = _pdf(*args) if kind == "pdf" else _section(*args)
        except SourceError as exc:
            result = exc
        except MemoryError:  # RLIMIT_AS: what it held is freed with the traceback
            result = SourceError(f"drawing it needs more memory than the viewer may use "
                                 f"(RAG_VIEW_MAX_MEMORY_MB={limits.max_memory_mb})")
        except Exception as exc:  # noqa: BLE001 - any renderer bug: this view's failure
            result = SourceError(f"it cannot be drawn ({type(exc).__name__})")
        try:
            conn.send(("result", result))
        except Exception:  # noqa: BLE001 - e.g. an unpicklable value
            conn.send(("result", SourceError("it cannot be drawn")))


# --- in the server -----------------------------------------------------------------------------
class _Cache:
    """Least recently used first out, bounded by the bytes of what it holds."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: Hashable, value: Any, size: int) -> None:
        with self._lock:
            if size > self.max_bytes:
                return
            old = self._items.pop(key, None)
            self.used -= old[1] if old else 0
            while self._items and self.used + size > self.max_bytes:
                _, (_, freed) = self._items.popitem(last=False)
                self.used -= freed
            self._items[key] = (value, size)
            self.used += size


def _size(value: Any) -> int:
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str):
        return sum(len(part.encode()) for part in value)  # (title, html)
    return sum(len(png) + 64 for _, png, _ in value)


_Job = tuple[tuple[str, tuple[Any, ...]], "concurrent.futures.Future[Any]"]


class Viewer:
    """Draws citations in `limits.workers` child processes; thread-safe, shared by every
    session. Each child is owned by one long-lived thread (the kernel ends a child with the
    thread that started it, and Streamlit's script threads end after every run)."""

    def __init__(self, limits: ViewLimits) -> None:
        self.limits = limits
        self._cache = _Cache(int(limits.cache_mb * 1024 * 1024))
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._children: list[LimitedChild] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.renders = 0  # requests that reached a child (the cache missed)

    def pdf_pages(self, path: Path, page_start: int, page_end: int | None,
                  quotes: Sequence[str], passage: str) -> list[PageImage]:
        """The cited page(s) as PNGs, the quoted words (else the passage) marked."""
        return self._view("pdf", path, (page_start, page_end, tuple(quotes), passage,
                                        self.limits.max_pixels))

    def section(self, path: Path, passage: str, headings: Sequence[str],
                quotes: Sequence[str] = ()) -> tuple[str, str]:
        """(title, HTML) of the section of a Markdown/HTML/text file holding the passage."""
        return self._view("section", path, (passage, tuple(headings), tuple(quotes)))

    def _view(self, kind: str, path: Path, args: tuple[Any, ...]) -> Any:
        try:
            mtime = path.stat().st_mtime_ns
        except OSError as exc:
            raise SourceError(f"{path.name} cannot be read ({exc.strerror or exc})") from exc
        key = (kind, str(path), mtime, args)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        self._ensure_threads()
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._jobs.put(((kind, (str(path), *args)), future))
        value = future.result()
        self._cache.put(key, value, _size(value))
        return value

    def _ensure_threads(self) -> None:
        with self._lock:
            while len(self._threads) < max(1, self.limits.workers):
                child = LimitedChild(_serve, name="citation-viewer",
                                     max_memory_mb=self.limits.max_memory_mb)
                thread = threading.Thread(target=self._work, args=(child,), daemon=True,
                                          name=f"citation-viewer-{len(self._threads) + 1}")
                self._children.append(child)
                self._threads.append(thread)
                thread.start()

    def _work(self, child: LimitedChild) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                child.close()
                return
            (kind, args), future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self._draw(child, kind, args))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting session
                future.set_exception(exc)

    def _draw(self, child: LimitedChild, kind: str, args: tuple[Any, ...]) -> Any:
        name = Path(args[0]).name
        timeout = self.limits.timeout_s
        self.renders += 1
        child.send((kind, args))
        deadline = time.monotonic() + timeout + _SPAWN_MARGIN_S
        try:
            while True:
                got = child.receive(deadline)
                if got[0] == "started":
                    deadline = got[1] + timeout
                    continue
                break
        except ChildTimeout:
            log.warning("citation view of %s stopped after %g s", name, timeout)
            raise SourceError(f"drawing it took longer than {timeout:g} s and was stopped "
                              "(RAG_VIEW_TIMEOUT_S)") from None
        except ChildDied as exc:
            log.warning("citation viewer process died on %s (exit code %s)", name, exc.exitcode)
            raise SourceError("the viewer process stopped while drawing it") from None
        result = got[1]
        if isinstance(result, BaseException):
            raise result
        return result

    def close(self) -> None:
        with self._lock:
            for _ in self._threads:
                self._jobs.put(None)
            for thread in self._threads:
                thread.join(5)
            for child in self._children:
                child.kill()
            self._threads, self._children = [], []
