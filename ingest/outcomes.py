"""What a sync reports: one outcome per file, the run's report, and what a front end is told
while the run goes on (the `Reporter` the CLI's progress bar and the UI's upload jobs implement).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

PARSE_SHARE = 0.3  # of a file's progress bar: parsing, then embedding
STATUSES = ("ingested", "updated", "unchanged", "removed", "skipped", "failed")


@dataclass


class FileOutcome:
    source: str
    status: str  # one of STATUSES (with dry_run: what would happen)
    reason: str = ""
    root: str = ""
    chunks_added: int = 0
    chunks_removed: int = 0
    pages: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    cut: str = ""  # "budget N": only the file's first N chunks were indexed


@dataclass


class SyncReport:
    collection: str
    store: str
    dry_run: bool = False
    rebuilt: bool = False
    outcomes: list[FileOutcome] = field(default_factory=list)
    seconds: float = 0.0
    chunks_total: int = 0
    embedder: str = ""
    notices: list[str] = field(default_factory=list)  # run-level news for people (also logged)
    # seconds this process spent per stage: "parse" is the wait for the parser child (it
    # parses the next file while this one is embedded), "model" loading the embedding model
    stages: dict[str, float] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for o in self.outcomes:
            counts[o.status] += 1
        return counts

    @property
    def failed(self) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def chunks_added(self) -> int:
        return sum(o.chunks_added for o in self.outcomes)

    @property
    def chunks_removed(self) -> int:
        return sum(o.chunks_removed for o in self.outcomes)

    @property
    def pages(self) -> int:
        return sum(o.pages for o in self.outcomes if o.status in ("ingested", "updated"))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(counts=self.counts(), chunks_added=self.chunks_added,
                    chunks_removed=self.chunks_removed, pages=self.pages)
        return data


class Reporter(Protocol):
    """What a front end is told while a sync runs (the CLI draws a progress bar from it)."""

    def start(self, files: int, total_bytes: int) -> None: ...

    def file_started(self, source: str, size: int) -> None: ...

    def file_progress(self, done_fraction: float) -> None: ...

    def file_done(self, outcome: FileOutcome) -> None: ...


class SilentReporter:
    def start(self, files: int, total_bytes: int) -> None: ...

    def file_started(self, source: str, size: int) -> None: ...

    def file_progress(self, done_fraction: float) -> None: ...

    def file_done(self, outcome: FileOutcome) -> None: ...
