"""Time of a folder of hostile files, with the non-prose refusal and the chunk budget on and off.

    python bench/hostile_ingest.py [--mib 1] [--budget 10000]

The folder (written to a temporary directory): one file of each class that is not prose, each
`--mib` MiB (no word separators, base64, one token repeated, minified JSON, digits), one long
legitimate text, a PDF and three Markdown files. Each configuration ingests it into a fresh
store with the bundled model, in this process (model loaded once, before timing). Printed: the
run's time, when the last small file was indexed, the chunks embedded, and each file's status.
"off" is how ingest behaved before the refusal and the budget (files are taken smallest first
in both: that order is not a setting). Compare the rows, not the absolute times.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import string
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ingest.outcomes import FileOutcome  # noqa: E402
from ingest.sync import Ingestor  # noqa: E402
from rag_app.embedders.auto import make_embedder  # noqa: E402
from rag_app.settings import Settings  # noqa: E402
from tests.pdfgen import make_pdf  # noqa: E402

SMALL = ("manual.pdf", "guide-0.md", "guide-1.md", "guide-2.md")


class Clock:
    """Records when each file was done, from the start of the run."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.done: dict[str, float] = {}

    def start(self, files: int, total_bytes: int) -> None:
        self.t0 = time.perf_counter()

    def file_started(self, source: str, size: int) -> None: ...

    def file_progress(self, done_fraction: float) -> None: ...

    def file_done(self, outcome: FileOutcome) -> None:
        self.done[outcome.source] = time.perf_counter() - self.t0


def write_folder(root: Path, mib: float) -> None:
    rnd = random.Random(5)
    n = int(mib * 1024 * 1024)
    root.mkdir(parents=True)
    (root / "no-separators.txt").write_text("".join(rnd.choices(string.ascii_letters, k=n)))
    (root / "base64.txt").write_text(base64.encodebytes(rnd.randbytes(n * 3 // 4)).decode())
    (root / "repeated.txt").write_text("lorem " * (n // 6))
    (root / "digits.txt").write_text("".join(rnd.choices(string.digits, k=n)))
    rows: list[str] = []
    size = 0
    while size < n:
        rows.append(json.dumps({"id": len(rows), "v": rnd.random()}, separators=(",", ":")))
        size += len(rows[-1]) + 1
    (root / "minified.md").write_text("[" + ",".join(rows) + "]")
    words = ["kettle", "water", "boils", "minutes", "descale", "filter", "warranty", "lid"]
    words += ["".join(rnd.choices(string.ascii_lowercase, k=rnd.randint(3, 9)))
              for _ in range(3000)]
    (root / "long-prose.txt").write_text(" ".join(
        " ".join(rnd.choice(words) for _ in range(12)).capitalize() + "."
        for _ in range(n // 80)))
    make_pdf(root / "manual.pdf", ["The Aurora kettle boils one litre in three minutes."])
    for i in range(3):
        (root / f"guide-{i}.md").write_text(f"# Guide {i}\n\nSee the manual, chapter {i}.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=float, default=1.0, help="size of each hostile file")
    parser.add_argument("--budget", type=int, default=10_000, help="RAG_MAX_CHUNKS_PER_FILE")
    args = parser.parse_args()
    configs = {
        "on": {"refuse_non_prose": True, "max_chunks_per_file": args.budget},
        "off": {"refuse_non_prose": False, "max_chunks_per_file": 0},
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "docs"
        write_folder(folder, args.mib)
        base = Settings(_env_file=None, state_dir=Path(tmp) / "none")  # type: ignore[call-arg]
        embedder = make_embedder(base)
        embedder.warm_up()
        print(f"hostile folder: {args.mib:g} MiB per hostile file; embedding "
              f"{embedder.name} ({embedder.backend})")
        print(f"{'config':<7} {'run s':>8} {'small done s':>13} {'chunks':>7}  files")
        for name, values in configs.items():
            settings = Settings(_env_file=None, state_dir=Path(tmp) / name,  # type: ignore[call-arg]
                                collection="hostile", **values)
            clock = Clock()
            t0 = time.perf_counter()
            report = Ingestor(settings, embedder, reporter=clock).run([folder])
            seconds = time.perf_counter() - t0
            small = max(clock.done.get(s, float("nan")) for s in SMALL)
            statuses = ", ".join(f"{o.source}={o.status}/{o.chunks_added}"
                                 for o in report.outcomes if o.source not in SMALL)
            print(f"{name:<7} {seconds:8.1f} {small:13.1f} {report.chunks_added:7}  {statuses}")


if __name__ == "__main__":
    main()
