"""Find the chunks that answer a question: dense (cosine in Chroma) plus BM25, fused.

The query is embedded with the same model and prompt conventions as the collection; a
collection built with another model is refused (the fingerprint check). Each retriever gives
`depth` candidates, `fusion.fuse` ranks them (default: the measured adaptive fusion), and then
every candidate gets its true cosine similarity to the query, so a minimum relevance threshold
and MMR diversification work the same for chunks that only BM25 found.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from rag_app.errors import ConfigError, StoreError
from rag_app.fusion import FusionConfig, Mode, fuse
from rag_app.language import foreign_question
from rag_app.names import mentions, question_names, unmatched

if TYPE_CHECKING:
    from rag_app.embedders.base import Embedder
    from rag_app.index.store import Store, StoredChunk
    from rag_app.rerank import Reranker
    from rag_app.settings import Settings

# At most this many hits are added after the k best for names of the question they lack.
MAX_NAMED_HITS = 2
# What must match between the collection and the query side (chunking may differ).
QUERY_FINGERPRINT_KEYS = ("model", "dimension", "normalized", "query_prompt", "document_prompt")


@dataclass(frozen=True, slots=True)
class Part:
    """Where one chunk's text lies in a hit widened with its neighbours (`with_context`)."""

    start: int
    end: int
    page_start: int | None
    page_end: int | None


@dataclass(frozen=True, slots=True)
class Hit:
    """One retrieved chunk, with where it came from and how it scored."""

    chunk_id: str
    text: str
    source: str
    root: str
    page_start: int | None
    page_end: int | None
    headings: tuple[str, ...]
    title: str | None
    score: float  # the fused score the ranking used
    similarity: float  # cosine similarity to the query (every hit has one)
    dense_rank: int | None  # 1-based rank in the dense candidates, None if not there
    lexical_rank: int | None  # 1-based rank in the BM25 candidates, None if not there
    rerank_score: float | None = None  # the cross-encoder's score, when a reranker ran
    file_key: str = ""
    chunk_index: int | None = None  # its place in its file; None from stores before it
    # Widened with the chunks before and after it (`Retriever.with_context`): each chunk's
    # stretch of `text` and pages. Empty: `text` is the retrieved chunk alone.
    parts: tuple[Part, ...] = ()

    @property
    def location(self) -> str:
        return describe_location(self.source, self.page_start, self.page_end, self.headings)

    @property
    def named_text(self) -> str:
        """Where a name of the question may appear: text, headings, title, file."""
        return f"{self.text} {' '.join(self.headings)} {self.title or ''} {self.source}"

    def pages_of(self, spans: Sequence[tuple[int, int]]) -> tuple[int | None, int | None]:
        """The pages of these stretches of `text` (where the quotes are): in a widened hit,
        those of the chunks they fall in; else, or when none is given, the hit's own."""
        touched = [p for p in self.parts if p.page_start is not None
                   and any(a < p.end and p.start < b for a, b in spans)]
        if not touched:
            return self.page_start, self.page_end
        return (min(p.page_start for p in touched if p.page_start is not None),
                max(p.page_end or p.page_start for p in touched if p.page_start is not None))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: what `Answer.to_dict` stores and the chat draws its source cards from."""
        return {"chunk_id": self.chunk_id, "location": self.location, "score": self.score,
                "similarity": self.similarity, "rerank_score": self.rerank_score,
                "source": self.source, "root": self.root, "page_start": self.page_start,
                "page_end": self.page_end, "headings": list(self.headings), "text": self.text}


def describe_location(source: str, page_start: int | None, page_end: int | None,
                      headings: Sequence[str] = ()) -> str:
    """'file.pdf p. 3' / 'file.pdf pp. 3-4' / 'guide.md § Setup > Filling'."""
    if page_start is not None:
        if page_end and page_end != page_start:
            return f"{source} pp. {page_start}-{page_end}"
        return f"{source} p. {page_start}"
    if headings:
        return f"{source} § {' > '.join(headings)}"
    return source


@dataclass(frozen=True, slots=True)
class RetrievalOptions:
    k: int = 5
    mode: Mode = "hybrid"
    min_similarity: float | None = None  # drop hits less similar to the query than this
    mmr: bool = False  # diversify: trade relevance for less overlap between hits
    mmr_lambda: float = 0.7  # 1.0: pure relevance
    source: str | None = None  # only files whose path starts with this (a folder or a file)
    rerank: bool = True  # use the configured reranker (RAG_RERANKER_MODEL), if any
    # Hybrid and BM25: for each name of the question (rag_app.names: a code, an identifier, a
    # version) that none of the k hits mentions, add the best candidate that does, after them.
    names: bool = True

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"k must be at least 1, not {self.k}")
        if not 0.0 <= self.mmr_lambda <= 1.0:
            raise ConfigError(f"mmr_lambda must be between 0 and 1, not {self.mmr_lambda}")


class Retriever:
    """Searches one collection. Build once (it holds the model and the BM25 index)."""

    def __init__(self, settings: Settings, *, embedder: Embedder | None = None,
                 store: Store | None = None, fusion: FusionConfig | None = None,
                 reranker: Reranker | None = None) -> None:
        from rag_app.embedders.auto import follow_collection, make_embedder
        from rag_app.index.store import Store

        opened = store if store is not None else Store.open(settings)
        if opened is None:
            raise StoreError(
                f"Collection {settings.collection!r} in the {settings.describe_store()} is "
                "empty. Add documents first: python -m ingest PATH"
            )
        self.store = opened
        self.embedder = embedder if embedder is not None else make_embedder(settings)
        follow_collection(self.embedder, opened)  # auto: query with the collection's model
        self.fusion = fusion or FusionConfig()
        if reranker is None and settings.reranker_model.strip():
            from rag_app.rerank import Reranker

            reranker = Reranker(settings.reranker_model, device=settings.embedding_device,
                                batch_size=settings.embedding_batch_size)
        self.reranker = reranker
        self.rerank_depth = settings.reranker_depth
        self._checked = False
        self._lexical: Any = None

    def _check(self) -> None:
        if not self._checked:
            self.store.check_fingerprint(
                self.embedder.fingerprint(), keys=QUERY_FINGERPRINT_KEYS,
                rebuild_hint="python -m ingest PATH --rebuild, with the model you query with",
            )
            self._checked = True

    @property
    def lexical(self) -> Any:
        """The BM25 index (`Store.load_lexical`). One built in memory because the saved one was
        dirty or stale (an ingest was running) is replaced by the saved one as soon as a
        writer has saved a current one; until then each search checks that cheaply."""
        current = self._lexical
        if current is not None and current.saved_in is None \
                and not self.store.lexical_is_dirty():
            self._lexical = None
        if self._lexical is None:
            self._lexical = self.store.load_lexical()
        return self._lexical

    def reload(self) -> None:
        """Pick up a new BM25 index after an ingest."""
        self._lexical = None

    def search(self, query: str, options: RetrievalOptions | None = None) -> list[Hit]:
        opts = options or RetrievalOptions()
        if not query.strip():
            return []
        self._check()
        depth = max(self.fusion.depth, opts.k)
        where, allowed = self._filter(opts.source)
        if where is not None and not allowed:
            return []
        qvec = self.embedder.embed_query(query)
        dense: list[tuple[str, float]] = []
        if opts.mode in ("dense", "hybrid"):
            # no count() first to cap k: Chroma returns what it holds, and a count scans the
            # collection (10 ms a search at 100k passages, a third of the whole search)
            dense = self.store.nearest(qvec, depth, where)
        lexical: list[tuple[str, float]] = []
        if opts.mode in ("lexical", "hybrid"):
            lexical = self.lexical.search(query, depth, allowed=(allowed.__contains__
                                                                 if allowed is not None
                                                                 else None))
        fused = fuse(dense, lexical, self.fusion_for(query, opts.mode))
        rerank = self.reranker is not None and opts.rerank
        size = max(opts.k * 4, 20) if opts.mmr else opts.k * 2 + 10
        if rerank:
            size = max(size, self.rerank_depth)
        found = self._hits(fused[:size], qvec, dense, lexical)
        if rerank and self.reranker is not None:
            found = self._rerank(query, found)
        if opts.min_similarity is not None:
            found = [(h, v) for h, v in found if h.similarity >= opts.min_similarity]
        top = _mmr(found, opts) if opts.mmr else [h for h, _ in found[: opts.k]]
        if opts.names and opts.mode != "dense":
            top = self._add_named(query, top, found, qvec, allowed)
        return top

    def fusion_for(self, query: str, mode: Mode) -> FusionConfig:
        """The fusion for this query: the configured one, leaning on BM25 (its dense weight
        `foreign_alpha`) when the query is not in English and the model reads English only
        (rag_app.fusion: measured on the multilingual dev set)."""
        config = replace(self.fusion, mode=mode)
        if mode != "hybrid" or config.alpha <= config.foreign_alpha:
            return config
        if foreign_question(query, str(getattr(self.embedder, "name", "") or "")) is None:
            return config
        return replace(config, alpha=config.foreign_alpha)

    def with_context(self, hits: Sequence[Hit], neighbours: int) -> list[Hit]:
        """Each hit widened with up to `neighbours` chunks of its file before and after it
        (their overlap with it counted once), for the model to read a passage that a chunk
        boundary cut (a command after "the following command:"). A chunk that is itself a
        hit, or already taken by a better hit, is not repeated; the widening stops there.
        The hits' order, ids and own pages stay; `Hit.parts` says where each chunk's text is."""
        if neighbours <= 0 or not hits:
            return list(hits)
        taken = {(h.file_key, h.chunk_index) for h in hits if h.chunk_index is not None}
        wanted = {(h.file_key, h.chunk_index + d) for h in hits if h.chunk_index is not None
                  for d in range(-neighbours, neighbours + 1) if d} - taken
        found = self.store.chunks_at(wanted)
        out: list[Hit] = []
        for hit in hits:
            if hit.chunk_index is None:
                out.append(hit)
                continue
            sides: list[list[StoredChunk]] = []
            for step in (-1, 1):
                side: list[StoredChunk] = []
                for d in range(1, neighbours + 1):
                    place = (hit.file_key, hit.chunk_index + step * d)
                    if place in taken or place not in found:
                        break
                    side.append(found[place])
                    taken.add(place)
                sides.append(side)
            if not sides[0] and not sides[1]:
                out.append(hit)
                continue
            pieces = [(c.text, c.page_start, c.page_end) for c in reversed(sides[0])]
            pieces += [(hit.text, hit.page_start, hit.page_end)]
            pieces += [(c.text, c.page_start, c.page_end) for c in sides[1]]
            text, parts = _joined(pieces)
            out.append(replace(hit, text=text, parts=parts))
        return out

    # -- internals ----------------------------------------------------------------------------
    def _add_named(self, query: str, top: list[Hit], found: list[tuple[Hit, np.ndarray]],
                   qvec: np.ndarray, allowed: set[str] | None) -> list[Hit]:
        """`top`, then for each name of the query that no hit of it mentions, the first fused
        candidate that does, else the first of BM25's top 20 for the name itself that does
        (at most MAX_NAMED_HITS). A name the documents never mention adds nothing: the answer
        path then says "not found" (rag_app.answering)."""
        missing = unmatched(question_names(query), (h.named_text for h in top))
        chosen = {h.chunk_id for h in top}
        added: list[Hit] = []
        for name in missing:
            if len(added) >= MAX_NAMED_HITS:
                break
            if any(mentions(h.named_text, name) for h in added):
                continue
            hit = next((h for h, _ in found if h.chunk_id not in chosen
                        and mentions(h.named_text, name)), None)
            if hit is None:
                pool = self.lexical.search(name, 20, allowed=(allowed.__contains__
                                                              if allowed is not None else None))
                hit = next((h for h, _ in self._hits(pool, qvec, (), ())
                            if h.chunk_id not in chosen and mentions(h.named_text, name)), None)
            if hit is not None:
                added.append(hit)
                chosen.add(hit.chunk_id)
        return top + added

    def _rerank(self, query: str, found: list[tuple[Hit, np.ndarray]]
                ) -> list[tuple[Hit, np.ndarray]]:
        """The first `rerank_depth` candidates ordered by the cross-encoder; the rest after."""
        if self.reranker is None or not found:
            return found
        head, tail = found[: self.rerank_depth], found[self.rerank_depth :]
        scores = self.reranker.score(query, [h.text for h, _ in head])
        order = sorted(range(len(head)), key=lambda i: -float(scores[i]))
        return [(replace(head[i][0], rerank_score=float(scores[i])), head[i][1])
                for i in order] + tail

    def _filter(self, source: str | None) -> tuple[dict[str, Any] | None, set[str] | None]:
        """A Chroma `where` and the allowed chunk ids for a path prefix, or (None, None)."""
        if not source:
            return None, None
        prefix = source.strip().strip("/")
        sources = sorted({r.source for r in self.store.file_records().values()
                          if r.source == prefix or r.source.startswith(prefix + "/")})
        if not sources:
            return {"source": {"$in": ["\x00none"]}}, set()
        where: dict[str, Any] = {"source": {"$in": sources}}
        return where, self.store.chunk_ids(where)

    def _hits(self, pool: Sequence[tuple[str, float]], qvec: np.ndarray,
              dense: Sequence[tuple[str, float]], lexical: Sequence[tuple[str, float]]
              ) -> list[tuple[Hit, np.ndarray]]:
        """The pool's chunks with their stored vectors, in pool order."""
        if not pool:
            return []
        rows = self.store.get_chunks([cid for cid, _ in pool], vectors=True)
        dense_rank = {cid: i + 1 for i, (cid, _) in enumerate(dense)}
        lexical_rank = {cid: i + 1 for i, (cid, _) in enumerate(lexical)}
        hits = []
        for cid, score in pool:
            row = rows.get(cid)
            if row is None or row.vector is None:  # deleted since the BM25 index was built
                continue
            hits.append((Hit(
                chunk_id=cid, text=row.text, source=row.source, root=row.root,
                page_start=row.page_start, page_end=row.page_end, headings=row.headings,
                title=row.title, score=float(score), similarity=float(row.vector @ qvec),
                dense_rank=dense_rank.get(cid), lexical_rank=lexical_rank.get(cid),
                file_key=row.file_key, chunk_index=row.chunk_index,
            ), row.vector))
        return hits

def _overlap(before: str, after: str, least: int = 12) -> int:
    """How many characters `after` starts with that `before` ends with (consecutive chunks
    share their overlap tokens); 0 below `least`, where a shared word may be chance."""
    probe = after[:least]
    if len(probe) < least:
        return 0
    tail = before[-8000:]
    pos = tail.find(probe)
    while pos >= 0:
        if after.startswith(tail[pos:]):
            return len(tail) - pos
        pos = tail.find(probe, pos + 1)
    return 0


def _joined(pieces: Sequence[tuple[str, int | None, int | None]]
            ) -> tuple[str, tuple[Part, ...]]:
    """Consecutive chunks' texts as one, their overlaps once, and where each one lies."""
    text = ""
    parts: list[Part] = []
    for piece, page_start, page_end in pieces:
        shared = _overlap(text, piece) if text else 0
        start = len(text) - shared
        if text and not shared:
            text += "\n"
            start = len(text)
        text += piece[shared:]
        parts.append(Part(start, len(text), page_start, page_end))
    return text, tuple(parts)


def _mmr(found: list[tuple[Hit, np.ndarray]], opts: RetrievalOptions) -> list[Hit]:
    """Maximal marginal relevance over the candidates' own vectors."""
    if not found:
        return []
    vecs = np.stack([v for _, v in found])
    relevance = np.array([h.similarity for h, _ in found])
    chosen: list[int] = []
    left = list(range(len(found)))
    while left and len(chosen) < opts.k:
        overlap = (vecs[left] @ vecs[chosen].T).max(axis=1) if chosen else np.zeros(len(left))
        gain = opts.mmr_lambda * relevance[left] - (1 - opts.mmr_lambda) * overlap
        best = left[int(np.argmax(gain))]
        chosen.append(best)
        left.remove(best)
    return [found[i][0] for i in chosen]

