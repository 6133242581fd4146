"""Parse files in a separate process, under a time limit.

A malicious or broken file can make a parser spin or crash; running the loaders in a child
process lets the run kill it and go on. The child is started once (spawn, so it does not inherit
the parent's model threads) and parses the next file while the parent embeds the current one.
`LimitedChild` (spawn, limits, kill on a deadline, restart on demand) is shared with the chat's
citation viewer (rag_app/ui/viewer.py).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from rag_app.errors import FileTooLarge, LoadError, ParseError, ParseTimeout, RagError
from rag_app.records import LoadedDocument
from rag_app.settings import Settings

_DEFAULTS = Settings.model_fields


@dataclass(frozen=True)
class ParseLimits:
    """What a child may use: text per file (the parser), address space; and whose child it
    is."""

    max_text_chars: int = _DEFAULTS["max_text_chars"].default  # 0: no limit
    max_memory_mb: int = _DEFAULTS["parse_max_memory_mb"].default  # 0: no limit
    parent_pid: int = 0


def requests(conn: Connection) -> Iterator[Any]:
    """What a child is sent, in order, until None or its parent's end of the pipe closes."""
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        yield request


def guard_child(limits: ParseLimits) -> None:
    """In the child: cap its address space, and make it exit when the parent dies (kill -9
    included), even in the middle of a long parse."""
    import sys
    import threading

    if limits.max_memory_mb > 0:
        try:
            import resource

            _, hard = resource.getrlimit(resource.RLIMIT_AS)
            soft = limits.max_memory_mb * 1024 * 1024
            if hard != resource.RLIM_INFINITY:
                soft = min(soft, hard)
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        except (ImportError, ValueError, OSError):  # no such limit here (Windows, some macOS)
            pass
    if sys.platform.startswith("linux"):
        # PR_SET_PDEATHSIG: the kernel kills the child when its parent ends (strictly, the
        # thread that started it: the one that uses the ParseWorker). A Python watchdog
        # cannot run while a C call (a regex, a parser) holds the GIL; this needs none.
        try:
            import ctypes
            import signal

            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass

    def watch() -> None:  # elsewhere, and if prctl failed: poll the parent's pid
        while os.getppid() == limits.parent_pid:
            time.sleep(0.5)
        os._exit(1)

    if limits.parent_pid:
        if os.getppid() != limits.parent_pid:  # the parent died before the guard was set
            os._exit(1)
        threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _out_of_memory(path: str, limits: ParseLimits) -> ParseError:
    return ParseError(f"{path}: parse ran out of memory (over RAG_PARSE_MAX_MEMORY_MB="
                      f"{limits.max_memory_mb}); raise it if the file is just large")


def _too_much_text(path: str, doc: LoadedDocument, limits: ParseLimits) -> LoadError | None:
    size = sum(len(section.text) for section in doc.sections)
    if 0 < limits.max_text_chars < size:
        return FileTooLarge(f"{path}: too much text ({size:,} characters > RAG_MAX_TEXT_CHARS="
                            f"{limits.max_text_chars}); raise it or split the file")
    return None


def _serve(conn: Connection, limits: ParseLimits | None = None) -> None:  # runs in the child
    import logging

    from ingest.loaders import load_file

    limits = limits or ParseLimits()
    guard_child(limits)
    # pypdf logs every repair it makes on a damaged file; the run reports the outcome instead.
    logging.getLogger("pypdf").setLevel(logging.ERROR)

    for request in requests(conn):
        path, passwords, max_bytes, pdf_parser, ocr = request

        def progress(done: int, total: int, last: list[float] = [0.0]) -> None:  # noqa: B006
            now = time.monotonic()  # at most two progress messages a second
            if now - last[0] >= 0.5 and total:
                last[0] = now
                conn.send(("progress", done, total))

        started = time.monotonic()
        conn.send(("started", started))  # the time limit counts from here
        try:
            result: Any = load_file(Path(path), passwords=passwords, max_bytes=max_bytes,
                                    pdf_parser=pdf_parser, progress=progress, ocr=ocr)
            result = _too_much_text(path, result, limits) or result
        except LoadError as exc:
            result = exc
        except MemoryError:  # RLIMIT_AS: what it held is freed with the traceback; go on
            result = _out_of_memory(path, limits)
        except Exception as exc:  # noqa: BLE001 - any parser bug becomes this file's failure
            result = ParseError(f"{type(exc).__name__}: {exc}"[:500])
        elapsed = time.monotonic() - started
        try:
            conn.send(("result", result, elapsed))
        except Exception as exc:  # noqa: BLE001 - e.g. unpicklable exception
            failure = (_out_of_memory(path, limits) if isinstance(exc, MemoryError) else
                       ParseError(f"could not return the parse result: {exc}"[:500]))
            conn.send(("result", failure, elapsed))


class ChildTimeout(RagError):
    """The child did not answer before the deadline; it was killed."""


class ChildDied(RagError):
    """The child ended (crashed, killed) without answering."""

    def __init__(self, exitcode: int | None) -> None:
        super().__init__(f"the child process died (exit code {exitcode})")
        self.exitcode = exitcode


_MAIN_FREE: set[str] = set()  # names of the processes LimitedChild starts
_PATCH_LOCK = threading.Lock()


def _spawn_without_main(process: str) -> None:
    """Children named `process` do not import the parent's `__main__` again. Spawn re-runs it by
    default: a Streamlit page script (the UI's `__main__` while a page runs) or a script left
    by AppTest ran in the child and died there (NameError: __args), or would start a page's
    work in it. The child needs only its target, imported by module name."""
    from multiprocessing import spawn

    with _PATCH_LOCK:
        _MAIN_FREE.add(process)
        if getattr(spawn.get_preparation_data, "main_free", False):
            return
        original = spawn.get_preparation_data

        def get_preparation_data(name: str) -> dict[str, Any]:
            data: dict[str, Any] = original(name)
            if name in _MAIN_FREE:
                data.pop("init_main_from_path", None)
                data.pop("init_main_from_name", None)
            return data

        get_preparation_data.main_free = True  # type: ignore[attr-defined]
        spawn.get_preparation_data = get_preparation_data


class LimitedChild:
    """One spawned child process running `target(conn, limits)` (a loop that answers requests;
    it calls `guard_child(limits)` first), started on the first `send` and again after it was
    killed or died. `receive` waits until a deadline and kills the child when it passes: what
    ingest's parser and the chat's citation viewer share. With `import_main` the child runs the
    parent's `__main__` first, as spawn does by default (the parser keeps that: a test makes
    its parser hang that way); else it imports only its target's module.

    Spawned, not forked: the child does not inherit the parent's model threads. With
    PR_SET_PDEATHSIG the child ends with the parent *thread* that started it, so use one from a
    thread that lives as long as it is needed."""

    def __init__(self, target: Callable[[Connection, ParseLimits], None], *, name: str,
                 max_text_chars: int = 0, max_memory_mb: int = 0,
                 import_main: bool = False) -> None:
        self.target, self.name, self.import_main = target, name, import_main
        self.max_text_chars, self.max_memory_mb = max_text_chars, max_memory_mb
        self._ctx = mp.get_context("spawn")
        self._proc: Any = None
        self._conn: Connection | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _start(self) -> None:
        if not self.import_main:
            _spawn_without_main(self.name)
        parent, child = self._ctx.Pipe()
        limits = ParseLimits(self.max_text_chars, self.max_memory_mb, parent_pid=os.getpid())
        self._proc = self._ctx.Process(target=self.target, args=(child, limits), daemon=True,
                                       name=self.name)
        self._proc.start()
        child.close()
        self._conn = parent

    def send(self, request: Any) -> None:
        if self._proc is None or not self._proc.is_alive():
            self._start()
        if self._conn is None:
            raise RuntimeError(f"the {self.name} process did not start")
        self._conn.send(request)

    def receive(self, deadline: float) -> Any:
        """The child's next message; ChildTimeout (the child killed) when none came by
        `deadline` (time.monotonic), ChildDied when the child ended."""
        conn = self._conn
        if conn is None:
            raise RuntimeError(f"the {self.name} process is gone")
        remaining = max(deadline - time.monotonic(), 0.0)
        try:
            ready = conn.poll(remaining)
        except (EOFError, OSError):
            ready = True
        if not ready:
            self.kill()
            raise ChildTimeout
        try:
            return conn.recv()
        except (EOFError, OSError):
            code = self._proc.exitcode if self._proc is not None else None
            self.kill()
            raise ChildDied(code) from None

    def kill(self) -> None:
        if self._proc is not None and self._proc.pid is not None:  # pid None: never started
            self._proc.kill()
            self._proc.join(5)
        if self._conn is not None:
            self._conn.close()
        self._proc, self._conn = None, None

    def close(self) -> None:
        """Ask the child to stop (None), then make sure it did."""
        if self._conn is not None and self._proc is not None and self._proc.is_alive():
            try:
                self._conn.send(None)
                self._proc.join(2)
            except OSError:
                pass
        self.kill()


@dataclass
class _Pending:
    path: Path
    deadline: float


class ParseWorker:
    """One child process; `submit` a file, then `result` for it (one file in flight at a time)."""

    def __init__(self, timeout_s: float, *,
                 max_text_chars: int = ParseLimits.max_text_chars,
                 max_memory_mb: int = ParseLimits.max_memory_mb,
                 pdf_parser: str = "auto", ocr: Any = None) -> None:
        self.timeout_s = timeout_s
        self.pdf_parser = pdf_parser  # RAG_PDF_PARSER
        self.ocr = ocr  # ingest.loaders.ocr.OcrOptions (RAG_OCR, RAG_OCR_LANGUAGES); None: defaults
        self._child = LimitedChild(_serve, name="ingest-parser", import_main=True,
                                   max_text_chars=max_text_chars,  # RAG_MAX_TEXT_CHARS
                                   max_memory_mb=max_memory_mb)  # RAG_PARSE_MAX_MEMORY_MB
        self._pending: _Pending | None = None

    @property
    def _proc(self) -> Any:  # the child process, or None (tests read its pid)
        return self._child._proc

    def submit(self, path: Path, passwords: Sequence[str], max_bytes: int | None) -> None:
        if self._pending is not None:
            raise RuntimeError("a file is already being parsed")
        self._child.send((str(path), list(passwords), max_bytes, self.pdf_parser, self.ocr))
        # until the child says it started (spawning takes a moment), allow a generous margin
        self._pending = _Pending(path, time.monotonic() + self.timeout_s + 60)

    def result(self, on_progress: Callable[[float], None] | None = None) -> LoadedDocument:
        """The parsed document, or raise the file's LoadError (ParseTimeout after the limit).

        `on_progress(fraction)` is called as the parser reports pages done (large PDFs)."""
        pending, self._pending = self._pending, None
        if pending is None:
            raise RuntimeError("nothing was submitted")
        while True:
            got = self._receive(pending)
            if isinstance(got, tuple) and got and got[0] == "started":
                # CLOCK_MONOTONIC is system-wide, so the child's start time is comparable
                pending.deadline = got[1] + self.timeout_s
                continue
            if isinstance(got, tuple) and got and got[0] == "progress":
                if on_progress is not None:
                    on_progress(got[1] / got[2])
                continue
            break
        _, got, elapsed = got
        if elapsed > self.timeout_s:  # finished while nobody was waiting, but too late
            raise ParseTimeout(self._timeout_message(pending.path))
        if isinstance(got, LoadError):
            raise got
        if not isinstance(got, LoadedDocument):
            raise ParseError(f"{pending.path.name}: unexpected parser result {type(got)!r}")
        return got

    def _receive(self, pending: _Pending) -> Any:
        try:
            return self._child.receive(pending.deadline)
        except ChildTimeout:
            raise ParseTimeout(self._timeout_message(pending.path)) from None
        except ChildDied as exc:
            raise ParseError(f"{pending.path.name}: the parser process died (exit code "
                             f"{exc.exitcode})") from None

    def _timeout_message(self, path: Path) -> str:
        return (f"{path.name}: parsing took longer than {self.timeout_s:g} s and was stopped "
                "(raise RAG_PARSE_TIMEOUT_S if the file is just large)")

    def close(self) -> None:
        self._child.close()

    def __enter__(self) -> ParseWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
