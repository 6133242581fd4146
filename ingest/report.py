"""Progress while a sync runs, and the summary after it.

On a terminal: a progress bar (by bytes of files to process) with ETA. Elsewhere (CI, pipes):
one plain line per file. Progress goes to stderr; the summary to stdout.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ingest.loaders.common import read_ocr_note
from ingest.outcomes import STATUSES, FileOutcome, SyncReport
from rag_app.index.store import length_text


class PlainReporter:
    def __init__(self) -> None:
        self._total = 0
        self._done = 0

    def start(self, files: int, total_bytes: int) -> None:
        self._total = files
        if files:
            print(f"processing {files} new or changed file(s), {_size(total_bytes)}",
                  file=sys.stderr, flush=True)

    def file_started(self, source: str, size: int) -> None: ...

    def file_progress(self, done_fraction: float) -> None: ...

    def file_done(self, outcome: FileOutcome) -> None:
        if outcome.status == "unchanged":
            return
        self._done += 1
        print(f"[{self._done}/{max(self._total, self._done)}] {_line(outcome)}",
              file=sys.stderr, flush=True)


class RichReporter:
    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("files"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=self.console, transient=True,
        )
        self._bytes_task: Any = None
        self._size = 0
        self._base = 0.0
        self._files = 0
        self._done = 0

    def start(self, files: int, total_bytes: int) -> None:
        self._files = files
        if files:
            self.progress.start()
            self._bytes_task = self.progress.add_task("ingesting", total=max(total_bytes, 1))

    def file_started(self, source: str, size: int) -> None:
        self._size = size
        if self._bytes_task is not None:
            self.progress.update(self._bytes_task, description=_short(source))

    def file_progress(self, done_fraction: float) -> None:
        if self._bytes_task is not None:
            self.progress.update(self._bytes_task, completed=self._base + self._size *
                                 done_fraction)

    def file_done(self, outcome: FileOutcome) -> None:
        if outcome.status == "unchanged":
            return
        if outcome.status != "removed":
            self._base += self._size
            self._done += 1
        if self._bytes_task is not None:
            self.progress.update(self._bytes_task, completed=self._base)
            if self._done >= self._files:
                self.progress.stop()
        if outcome.status in ("failed",) or outcome.warnings:
            self.console.print(_line(outcome), markup=False, highlight=False)


def make_reporter(*, interactive: bool, quiet: bool) -> Any:
    if quiet:
        return None
    return RichReporter() if interactive else PlainReporter()


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB"):
        if n < 1000 or unit == "MB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n:.1f} GB"


def _short(source: str, width: int = 40) -> str:
    return source if len(source) <= width else "…" + source[-(width - 1) :]


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _line(o: FileOutcome) -> str:
    detail = o.reason
    if o.status in ("ingested", "updated"):
        length = length_text(o.pages, Path(o.source).suffix.lower().lstrip("."))
        detail = _count(o.chunks_added, "passage") + (f", {length}" if length else "")
        detail += f", {o.seconds:.1f} s"
    elif o.status == "removed":
        detail = f"{_count(o.chunks_removed, 'passage')} removed"
    text = f"{o.status:<9} {o.source}" + (f" — {detail}" if detail else "")
    for w in o.warnings:  # the OCR note is news, not a problem
        text += f"\n          {'note' if read_ocr_note(w) else 'warning'}: {w}"
    return text


def ocr_totals(report: SyncReport) -> tuple[int, float]:
    """(pages read by OCR, seconds OCR took) over the files this run parsed."""
    pages, seconds = 0, 0.0
    for outcome in report.outcomes:
        if outcome.status not in ("ingested", "updated"):
            continue
        for warning in outcome.warnings:
            found = read_ocr_note(warning)
            if found is not None:
                pages += found[0]
                seconds += found[1]
    return pages, seconds


def print_summary(report: SyncReport) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    title = "Dry run: nothing was written" if report.dry_run else "Ingest summary"
    counts = report.counts()
    notable = [o for o in report.outcomes if o.status in ("failed", "skipped")]
    if notable:
        issues = Table(title="Files not indexed", title_justify="left")
        issues.add_column("status")
        issues.add_column("file")
        issues.add_column("reason")
        for o in notable[:50]:  # names and reasons are data, never markup
            issues.add_row(o.status, escape(o.source), escape(o.reason))
        if len(notable) > 50:
            issues.add_row("…", f"{len(notable) - 50} more", "(use --json for all)")
        console.print(issues)
    cut = [o for o in report.outcomes if o.cut]
    if cut:  # bounded by RAG_MAX_CHUNKS_PER_FILE: say what was kept and the setting to raise
        part = Table(title="Files indexed in part", title_justify="left")
        part.add_column("file")
        part.add_column("what was kept")
        for o in cut[:50]:
            kept = next((w for w in o.warnings if w.startswith("only its first")), o.cut)
            part.add_row(escape(o.source), escape(kept))
        if len(cut) > 50:
            part.add_row(f"{len(cut) - 50} more", "(use --json for all)")
        console.print(part)
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for status in STATUSES:
        table.add_row(f"files {status}", str(counts[status]))
    if not report.dry_run:
        rate = report.chunks_added / report.seconds if report.seconds else 0.0
        table.add_row("chunks added", str(report.chunks_added))
        table.add_row("chunks removed", str(report.chunks_removed))
        table.add_row("pages read", str(report.pages))
        ocr_pages, ocr_seconds = ocr_totals(report)
        if ocr_pages:
            table.add_row("pages read by OCR", str(ocr_pages))
            table.add_row("OCR seconds", f"{ocr_seconds:.1f}")
        table.add_row("chunks in collection", str(report.chunks_total))
        table.add_row("seconds", f"{report.seconds:.1f}")
        table.add_row("chunks/s", f"{rate:.1f}")
    table.add_row("collection", f"{report.collection} ({report.store})")
    if report.embedder:
        table.add_row("embedding", report.embedder)
    console.print(table)
    for notice in report.notices:
        console.print(f"note: {escape(notice)}", highlight=False)
