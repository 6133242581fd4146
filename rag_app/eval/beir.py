"""Retrieval on a BEIR-format dataset, scored by ranx.

A BEIR folder holds `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl` (`_id`,
`text`) and `qrels/<split>.tsv` (query id, corpus id, grade; a header line is allowed; grade 0
rows are dropped). Only judged queries (with at least one grade > 0) are evaluated.

The corpus goes through the project's own ingest path, into an index of the evaluation's
own: the passages are written as Markdown files, each passage one top-level section, so that
no chunk mixes two passages. A titled passage's heading is its title — each chunk then reads
"title\ntext", BEIR's "title + text" recipe — and an untitled one's heading is its first
word with the rest below, so the chunk text is the passage itself. After ingest, the stored
chunks of each file are matched to its passages in order (`map_chunks`); a passage no chunk
matched is reported. Many passages share one file: ingest costs about 3 store writes per
file, which for 5,000 one-passage files was ten times the embedding time.

Every query retrieves `DEPTH` chunks with each configuration through `rag_app.retrieve`;
chunks of one passage collapse to its best rank. ranx then computes:

- nDCG@10 with exponential gain 2^grade - 1 (Burges; ranx "ndcg_burges") — the reference
  scores of ../shared/datasets were measured so — and beside it trec_eval's linear gain;
- Recall@10, Recall@100 and Recall@k (k of the configuration); MRR@10, and with graded
  judgments MRR@10 counting only grade >= 2.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rag_app.errors import ConfigError
from rag_app.eval.configs import (
    ConfigRun,
    EvalConfig,
    EvalResult,
    check_unique,
    describe_settings,
)
from rag_app.eval.metrics import Qrels, Run, ranx_compare, ranx_evaluate, require
from rag_app.eval.qa import index_documents, read_jsonl, warm, work_dir

if TYPE_CHECKING:
    from rag_app.embedders.base import Embedder
    from rag_app.settings import Settings

Progress = Callable[[int, int, str], None]

DEPTH = 100  # chunks retrieved per query (Recall@100 needs them)
DOCS_PER_FILE = 250  # passages per Markdown file written for ingest
# Our metric name -> ranx's. "ndcg@10" is ranx's ndcg_burges@10 (exponential gain).
RANX_NAMES = {
    "ndcg@10": "ndcg_burges@10",
    "ndcg_linear@10": "ndcg@10",
    "recall@10": "recall@10",
    "recall@100": "recall@100",
    "mrr@10": "mrr@10",
    "mrr@10_grade2": "mrr@10-l2",
}
PRIMARY = "ndcg@10"


# -- the dataset -------------------------------------------------------------------------------
def passage_text(title: str, text: str) -> str:
    """BEIR's recipe for sentence-transformers models: title + " " + text."""
    return f"{title} {text}".strip() if title else text


@dataclass(frozen=True)
class Beir:
    doc_ids: list[str]
    titles: list[str]
    bodies: list[str]
    queries: dict[str, str]  # judged queries only, in file order
    qrels: Qrels  # grades > 0 only
    digest: str  # of the corpus (and the selection, after `subset`)
    name: str = ""

    @property
    def doc_texts(self) -> list[str]:
        """Title + text of every passage (what a dense model is given)."""
        return [passage_text(t, b) for t, b in zip(self.titles, self.bodies, strict=True)]

    @property
    def max_grade(self) -> int:
        return max((g for docs in self.qrels.values() for g in docs.values()), default=0)

    def subset(self, *, limit_queries: int | None = None, max_corpus: int | None = None
               ) -> Beir:
        """The first `limit_queries` judged queries, and a corpus of at most `max_corpus`
        passages: every passage judged for those queries, then the others in file order.
        (With fewer distractors, scores come out higher than on the whole corpus.)"""
        if limit_queries is None and max_corpus is None:
            return self
        if limit_queries is not None and limit_queries < 1:
            raise ConfigError(f"--limit-queries must be at least 1, not {limit_queries}")
        if max_corpus is not None and max_corpus < 1:
            raise ConfigError(f"--max-corpus must be at least 1, not {max_corpus}")
        qids = list(self.queries)[: limit_queries or None]
        queries = {q: self.queries[q] for q in qids}
        qrels = {q: self.qrels[q] for q in qids}
        keep = set(range(len(self.doc_ids)))
        if max_corpus is not None and max_corpus < len(self.doc_ids):
            judged = {d for q in qids for d in qrels[q]}
            first = [i for i, d in enumerate(self.doc_ids) if d in judged]
            rest = [i for i, d in enumerate(self.doc_ids) if d not in judged]
            keep = set(first + rest[: max(0, max_corpus - len(first))])
        order = sorted(keep)
        digest = hashlib.sha256(json.dumps([self.digest, qids, order]).encode()).hexdigest()
        return replace(self, doc_ids=[self.doc_ids[i] for i in order],
                       titles=[self.titles[i] for i in order],
                       bodies=[self.bodies[i] for i in order], queries=queries, qrels=qrels,
                       digest=digest[:16])


def load_beir(folder: str | Path, split: str = "test") -> Beir:
    """Read a BEIR folder. Errors (missing files, bad lines) raise ConfigError naming the
    file and line and saying what is expected."""
    root = Path(folder).expanduser()
    corpus = root / "corpus.jsonl"
    if not corpus.is_file():
        raise ConfigError(f"{root} is not a BEIR folder: {corpus.name} is missing (expected "
                          "corpus.jsonl, queries.jsonl and qrels/<split>.tsv)")
    ids: list[str] = []
    titles: list[str] = []
    bodies: list[str] = []
    seen: set[str] = set()
    for where, row in read_jsonl(corpus):
        doc_id = _field(row, "_id", where)
        if doc_id in seen:
            raise ConfigError(f"{where}: passage id {doc_id!r} is used twice")
        seen.add(doc_id)
        ids.append(doc_id)
        titles.append(str(row.get("title") or ""))
        bodies.append(str(row.get("text") or ""))
    qrels = _load_qrels(_qrels_file(root, split))
    queries_file = root / "queries.jsonl"
    if not queries_file.is_file():
        raise ConfigError(f"{root}: queries.jsonl is missing")
    queries: dict[str, str] = {}
    for where, row in read_jsonl(queries_file):
        qid = _field(row, "_id", where)
        if qid in qrels:
            queries[qid] = str(row.get("text") or "").strip()
    qrels = {q: docs for q, docs in qrels.items() if q in queries}
    if not queries:
        raise ConfigError(f"{root}: no query in queries.jsonl has a judged passage in the "
                          "qrels file; check that the ids match")
    digest = hashlib.sha256(corpus.read_bytes()).hexdigest()[:16]
    return Beir(ids, titles, bodies, queries, qrels, digest, name=root.resolve().name)


def _field(row: dict[str, Any], name: str, where: str) -> str:
    value = row.get(name)
    if value is None or str(value).strip() == "":
        raise ConfigError(f"{where}: {name!r} is missing")
    return str(value).strip()


def _qrels_file(root: Path, split: str) -> Path:
    folder = root / "qrels"
    wanted = folder / f"{split}.tsv"
    if wanted.is_file():
        return wanted
    found = sorted(folder.glob("*.tsv")) if folder.is_dir() else []
    if len(found) == 1 and split == "test":
        return found[0]
    have = ", ".join(p.stem for p in found) or "none"
    raise ConfigError(f"{wanted} not found (splits here: {have}); choose one with --split")


def _load_qrels(path: Path) -> Qrels:
    """query id, corpus id, grade per line (tab-separated; TREC's 4 columns also work). The
    first line may be a header."""
    qrels: Qrels = {}
    with path.open(encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, start=1):
            cols = line.rstrip("\n").split("\t") if "\t" in line else line.split()
            if not cols or not cols[0].strip():
                continue
            if len(cols) == 4:  # TREC: qid, iteration, doc id, grade
                cols = [cols[0], cols[2], cols[3]]
            if len(cols) != 3:
                raise ConfigError(f"{path}:{lineno}: expected query-id, corpus-id and score "
                                  f"separated by tabs, got {len(cols)} columns")
            qid, did, grade = (c.strip() for c in cols)
            try:
                value = int(float(grade))
            except ValueError:
                if lineno == 1:  # the header
                    continue
                raise ConfigError(f"{path}:{lineno}: the score {grade!r} is not a number"
                                  ) from None
            if value > 0:
                qrels.setdefault(qid, {})[did] = value
    if not qrels:
        raise ConfigError(f"{path} judges no passage relevant (no score above 0)")
    return qrels


# -- the corpus as files for ingest ------------------------------------------------------------
@dataclass(frozen=True)
class CorpusFile:
    """One Markdown file of passages, in the order they were written."""

    name: str  # the file's path relative to the corpus folder (its chunks' `source`)
    doc_ids: list[str]
    headings: list[str]
    bodies: list[str]


def write_corpus(beir: Beir, folder: Path) -> list[CorpusFile]:
    """Write the passages as Markdown files under `folder` (see the module text). Files are
    rewritten only when their content changes, so a second run on the same folder is an
    unchanged sync."""
    folder.mkdir(parents=True, exist_ok=True)
    files: list[CorpusFile] = []
    for start in range(0, len(beir.doc_ids), DOCS_PER_FILE):
        part = CorpusFile(f"part-{start // DOCS_PER_FILE:05d}.md", [], [], [])
        lines: list[str] = []
        for i in range(start, min(start + DOCS_PER_FILE, len(beir.doc_ids))):
            heading, body = _section(" ".join(beir.titles[i].split()),
                                     " ".join(beir.bodies[i].split()))
            part.doc_ids.append(beir.doc_ids[i])
            part.headings.append(heading)
            part.bodies.append(body.strip())
            lines += [f"# {heading}", "", body, ""]
        files.append(part)
        path = folder / part.name
        data = "\n".join(lines).encode("utf-8")
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
    names = {f.name for f in files}
    for stale in folder.glob("part-*.md"):
        if stale.name not in names:
            stale.unlink()
    return files


def _section(title: str, body: str) -> tuple[str, str]:
    """(heading, body) for one passage; both single lines that Markdown reads as written."""
    if title and _plain_heading(title):
        return title, _plain_body(body or title)
    words = body.split(maxsplit=1)
    if len(words) == 2 and _plain_heading(words[0]):
        return words[0], _plain_body(words[1])
    return "passage", _plain_body(body or title or "(empty)")


def _plain_heading(text: str) -> bool:
    """A heading Markdown keeps as it is: no closing #s, no {: attribute list}."""
    return not re.search(r"(^|\s)#+$|\{:?[ \t]*[#.][^}]*\}[ \t]*$", text)


def _plain_body(text: str) -> str:
    """Indent a line that Markdown would read as a heading or a code fence (the indent is
    stripped from the chunk again)."""
    return f"    {text}" if re.match(r"[#`~]", text) else text


def _norm(text: str) -> str:
    return " ".join(text.split())


def map_chunks(store: Any, files: Sequence[CorpusFile]) -> tuple[dict[str, str], list[str]]:
    """({chunk id: doc id}, ids of passages that no chunk matched), from the stored chunks.

    Chunks come back in file order (`chunk_index`); a section's first chunk starts like its
    passage ("heading body…"), and later ones hold a piece of the body after a header line.
    A chunk that starts the next passage moves the match on; one that lies inside the current
    passage stays with it."""
    by_source: dict[str, list[tuple[int, str, str]]] = {}
    for ids, rows in store.all_chunks():
        for chunk_id, (text, meta) in zip(ids, rows, strict=True):
            by_source.setdefault(str(meta.get("source", "")), []).append(
                (int(meta.get("chunk_index", 0)), chunk_id, text or ""))
    mapping: dict[str, str] = {}
    missing: list[str] = []
    for part in files:
        full = [_norm(f"{h} {b}") for h, b in zip(part.headings, part.bodies, strict=True)]
        bodies = [_norm(b) for b in part.bodies]
        matched = [False] * len(full)
        p = -1
        for _, chunk_id, text in sorted(by_source.get(part.name, [])):
            whole = _norm(text)
            tail = _norm(text.split("\n", 1)[1]) if "\n" in text else whole
            if p + 1 < len(full) and full[p + 1].startswith(whole):
                p += 1
            elif not (p >= 0 and (tail in bodies[p] or whole in full[p])):
                continue  # matches nothing: the passage it came from is reported missing
            mapping[chunk_id] = part.doc_ids[p]
            matched[p] = True
        missing += [d for d, ok in zip(part.doc_ids, matched, strict=True) if not ok]
    return mapping, missing


# -- running it ----------------------------------------------------------------------------------
@dataclass
class RetrievalResult(EvalResult):
    kind: ClassVar[str] = "beir"


def evaluate_beir(folder: str | Path, configs: Sequence[EvalConfig], settings: Settings, *,
                  limit_queries: int | None = None, max_corpus: int | None = None,
                  index_dir: str | Path | None = None, split: str = "test",
                  embedder: Embedder | None = None, progress: Progress | None = None,
                  compare_permutations: int = 5000) -> RetrievalResult:
    """Index the corpus (one index per chunking), retrieve for every judged query with every
    configuration, and score with ranx. Rows hold each query's scores and its ranking
    (passage ids, best first), so any other ranx measure can be computed from them later."""
    from rag_app.embedders.auto import make_embedder
    from rag_app.retrieve import Retriever

    require("ranx", "Retrieval metrics")
    started = time.perf_counter()
    configs = check_unique(configs)
    full = load_beir(folder, split)
    beir = full.subset(limit_queries=limit_queries, max_corpus=max_corpus)
    embedder = embedder or make_embedder(settings)
    ranx_metrics = dict(RANX_NAMES)
    if beir.max_grade < 2:
        del ranx_metrics["mrr@10_grade2"]
    meta: dict[str, Any] = {
        "dataset": str(Path(folder).expanduser().resolve()), "split": split,
        "queries": len(beir.queries), "corpus": len(beir.doc_ids),
        "full_corpus": len(full.doc_ids), "judged_queries_in_dataset": len(full.queries),
        "depth": DEPTH, "ranx": dict(RANX_NAMES), "indexes": [],
    }
    notes = [
        "nDCG@10 is ranx's ndcg_burges@10 (gain 2^grade − 1, as the reference scores of the "
        "shared msmarco sample); nDCG@10 linear is trec_eval's ndcg_cut_10 (gain = grade).",
        f"Every query retrieves {DEPTH} chunks; chunks of one passage count once (best rank).",
    ]
    if len(beir.doc_ids) < len(full.doc_ids) or len(beir.queries) < len(full.queries):
        notes.append(f"A subset: {len(beir.queries)} of {len(full.queries)} judged queries, "
                     f"{len(beir.doc_ids)} of {len(full.doc_ids)} passages (all judged ones "
                     "kept): fewer distractors make the scores higher than on the whole set.")
    runs: list[ConfigRun] = []
    baseline_run: Run | None = None
    comparisons: dict[str, dict[str, dict[str, float]]] = {}
    total = len(beir.queries) * len(configs)
    done = 0
    with work_dir(index_dir) as work:
        corpus_dir = work / "beir" / f"{re.sub(r'[^A-Za-z0-9]+', '-', beir.name)}-{beir.digest}"
        files = write_corpus(beir, corpus_dir)
        retrievers: dict[tuple[int, int], tuple[Retriever, dict[str, str]]] = {}
        for config in configs:
            key = config.index_key(settings)
            if key not in retrievers:
                built, info = index_documents(corpus_dir, settings, config=config,
                                              index_dir=work, embedder=embedder)
                retriever = warm(Retriever(built, embedder=embedder))
                chunk_docs, missing = map_chunks(retriever.store, files)
                info["passages_not_indexed"] = len(missing)
                if missing:
                    notes.append(f"{len(missing)} passages found no chunk in index "
                                 f"{info['collection']} (e.g. {', '.join(missing[:3])}): they "
                                 "can never be retrieved there.")
                meta["indexes"].append(info)
                retrievers[key] = (retriever, chunk_docs)
            retriever, chunk_docs = retrievers[key]
            run: Run = {}
            options = replace(config.retrieval_options(), k=max(DEPTH, config.k))
            for qid, text in beir.queries.items():
                run[qid] = _ranked_docs(retriever.search(text, options), chunk_docs)
                done += 1
                if progress is not None:
                    progress(done, total, config.name)
            names = {**ranx_metrics, "recall@k": f"recall@{config.k}"}
            means, per_query = ranx_evaluate(run, beir.qrels, list(dict.fromkeys(names.values())))
            metrics: dict[str, float | None] = {m: means[r] for m, r in names.items()}
            rows = [{"query_id": qid, "query": text,
                     **{m: per_query[r].get(qid) for m, r in names.items()},
                     "ranked": [d for d, _ in run.get(qid, [])],
                     "relevant": len(beir.qrels[qid])}
                    for qid, text in beir.queries.items()]
            runs.append(ConfigRun(label=config.name, config=config, metrics=metrics, rows=rows))
            if baseline_run is None:
                baseline_run = run
            elif len(beir.queries) >= 5:
                compared = ranx_compare(run, baseline_run, beir.qrels, [RANX_NAMES[PRIMARY]],
                                        n_permutations=compare_permutations)
                comparisons[config.name] = {PRIMARY: compared[RANX_NAMES[PRIMARY]]}
    if comparisons:
        meta["baseline"] = configs[0].name
        meta["comparisons"] = comparisons
    metric_names = ["ndcg@10", "ndcg_linear@10", "recall@k", "recall@10", "recall@100",
                    "mrr@10"] + (["mrr@10_grade2"] if "mrr@10_grade2" in ranx_metrics else [])
    meta["settings"] = describe_settings(settings, embedder)
    return RetrievalResult(runs=runs, metric_names=metric_names, notes=notes, meta=meta,
                           seconds=time.perf_counter() - started)


def _ranked_docs(hits: Sequence[Any], chunk_docs: dict[str, str]) -> list[tuple[str, float]]:
    """Chunks -> passages, best rank first; a passage split into chunks counts once."""
    out: list[tuple[str, float]] = []
    seen: set[str] = set()
    for hit in hits:
        doc_id = chunk_docs.get(hit.chunk_id)
        if doc_id is None or doc_id in seen:
            continue
        seen.add(doc_id)
        out.append((doc_id, float(hit.score)))
    return out


__all__ = ["DEPTH", "Beir", "CorpusFile", "RetrievalResult", "evaluate_beir", "load_beir",
           "map_chunks", "passage_text", "write_corpus"]
