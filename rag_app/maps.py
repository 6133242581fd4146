"""A 2-D map of a collection: every chunk and some questions, placed by their embeddings.

    emap = embedding_map(retriever, questions)      # questions: texts, (id, text) or QA items
    emap.method, emap.note                          # "umap" (or "pca" for tiny collections)
    rows = emap.to_records()                        # one dict per point, for pandas / JSON
    plot_map(emap)                                  # matplotlib: retrieved chunks highlighted

The projection is fitted on the chunk vectors only and the questions are then placed with
`transform`, so adding questions never moves the chunks. UMAP needs more points than
neighbours; below `MIN_UMAP_POINTS` chunks a PCA projection (plain numpy) is used instead and
`note` says so. Everything is deterministic for a given `random_state`.

Shared by the chat's map page (rag_app.ui.services) and the evaluation (the notebook), so it
sits beside the retrieval, below both.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from rag_app.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from rag_app.embedders.base import Embedder
    from rag_app.index.store import Store
    from rag_app.retrieve import RetrievalOptions, Retriever

log = logging.getLogger(__name__)

MIN_UMAP_POINTS = 10  # fewer chunks than this: PCA (UMAP's graph is meaningless on so few)
PAGE = 1000  # chunks read from Chroma per call
PREVIEW_CHARS = 240

Kind = Literal["chunk", "question"]
Method = Literal["umap", "pca", "none"]


class QuestionLike(Protocol):
    """Anything with an id and a question text (e.g. an evaluation item)."""

    @property
    def id(self) -> str: ...

    @property
    def question(self) -> str: ...


QuestionInput = str | tuple[str, str] | QuestionLike


@dataclass(frozen=True, slots=True)
class MapPoint:
    """One point of the map: a chunk of the collection or a question."""

    x: float
    y: float
    kind: Kind
    id: str  # chunk id, or question id
    text: str  # the start of the chunk's text, or the whole question
    source: str | None = None  # chunks: file path relative to the ingested folder
    location: str = ""  # chunks: "file.pdf p. 3" / "guide.md § Setup"; questions: ""
    retrieved_by: tuple[str, ...] = ()  # chunks: ids of the questions that retrieved it
    retrieved: tuple[str, ...] = ()  # questions: ids of the chunks it retrieved, best first

    def to_dict(self) -> dict[str, Any]:
        return {
            "x": self.x, "y": self.y, "kind": self.kind, "id": self.id, "text": self.text,
            "source": self.source, "location": self.location,
            "retrieved_by": list(self.retrieved_by), "retrieved": list(self.retrieved),
        }


@dataclass(frozen=True)
class EmbeddingMap:
    """The projected points and how they were made."""

    points: list[MapPoint]
    method: Method
    note: str  # one line for people: method, counts, any fallback or sampling
    params: dict[str, Any] = field(default_factory=dict)  # e.g. n_neighbors, random_state
    total_chunks: int = 0  # chunks in the collection (the map may hold a sample)

    @property
    def chunks(self) -> list[MapPoint]:
        return [p for p in self.points if p.kind == "chunk"]

    @property
    def questions(self) -> list[MapPoint]:
        return [p for p in self.points if p.kind == "question"]

    def to_records(self) -> list[dict[str, Any]]:
        """One plain dict per point (`pandas.DataFrame(emap.to_records())`)."""
        return [p.to_dict() for p in self.points]


def embedding_map(
    source: Retriever | Store,
    questions: Sequence[QuestionInput] = (),
    *,
    embedder: Embedder | None = None,
    retrieved: Mapping[str, Sequence[str]] | None = None,
    options: RetrievalOptions | None = None,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    random_state: int = 42,
    max_chunks: int | None = 5000,
) -> EmbeddingMap:
    """Project the collection's chunk vectors and the questions' vectors to 2-D.

    `source` is a `Retriever` (its store and embedder are used, and each question is searched
    with `options`: by default hybrid, k=5) or a `Store` (then pass `embedder` to place
    questions; retrieval is dense only, top `options.k`). `retrieved` maps question ids to the
    chunk ids they retrieved (e.g. from an evaluation run) and replaces searching.
    A collection larger than `max_chunks` is sampled (seeded), always keeping retrieved chunks.
    """
    from rag_app.retrieve import QUERY_FINGERPRINT_KEYS, RetrievalOptions, Retriever

    if n_neighbors < 2:
        raise ConfigError(f"n_neighbors must be at least 2, not {n_neighbors}")
    if max_chunks is not None and max_chunks < 1:
        raise ConfigError(f"max_chunks must be at least 1 or None, not {max_chunks}")
    retriever = source if isinstance(source, Retriever) else None
    store = source.store if isinstance(source, Retriever) else source
    if retriever is not None and embedder is None:
        embedder = retriever.embedder
    items = [_question(q, i) for i, q in enumerate(questions, start=1)]
    if len({qid for qid, _ in items}) != len(items):
        raise ConfigError("question ids must be unique")
    if items and embedder is None:
        raise ConfigError("embedding_map needs an embedder to place questions: pass a "
                          "Retriever, or embedder=… with the Store")
    if items and embedder is not None:
        store.check_fingerprint(
            embedder.fingerprint(), keys=QUERY_FINGERPRINT_KEYS,
            rebuild_hint="python -m ingest PATH --rebuild, with the model you query with")

    opts = options or RetrievalOptions()
    qvecs = (np.stack([embedder.embed_query(text) for _, text in items])
             if items and embedder is not None else np.zeros((0, 0), dtype=np.float32))
    links: dict[str, tuple[str, ...]] = {}
    for (qid, text), qvec in zip(items, qvecs, strict=True):
        if retrieved is not None:
            links[qid] = tuple(retrieved.get(qid, ()))
        elif retriever is not None:
            links[qid] = tuple(h.chunk_id for h in retriever.search(text, opts))
        else:
            k = min(opts.k, max(store.count(), 1))
            links[qid] = tuple(cid for cid, _ in store.nearest(qvec, k))

    total = store.count()
    wanted = {cid for ids in links.values() for cid in ids}
    ids, vectors, docs, metas = _read_chunks(store, total, wanted, max_chunks, random_state)
    by_chunk: dict[str, list[str]] = {}
    for qid, cids in links.items():
        for cid in cids:
            by_chunk.setdefault(cid, []).append(qid)

    chunk_xy, question_xy, method, params = _project(
        vectors, qvecs, n_neighbors=n_neighbors, min_dist=min_dist, random_state=random_state)
    points = [
        MapPoint(x=float(x), y=float(y), kind="chunk", id=cid, text=_preview(doc),
                 source=str(meta.get("source", "")) or None, location=location_of(meta),
                 retrieved_by=tuple(by_chunk.get(cid, ())))
        for cid, doc, meta, (x, y) in zip(ids, docs, metas, chunk_xy, strict=True)
    ]
    points += [
        MapPoint(x=float(x), y=float(y), kind="question", id=qid, text=text,
                 retrieved=links[qid])
        for (qid, text), (x, y) in zip(items, question_xy, strict=True)
    ]
    note = _note(method, len(ids), total, len(items), params)
    log.info("embedding map: %s", note)
    return EmbeddingMap(points=points, method=method, note=note, params=params,
                        total_chunks=total)


def location_of(meta: Mapping[str, Any]) -> str:
    """'file.pdf p. 3' / 'file.pdf pp. 3-4' / 'guide.md § Setup > Filling' from chunk metadata
    (the same form as `Hit.location`)."""
    from rag_app.retrieve import describe_location

    headings = json.loads(meta["headings"]) if meta.get("headings") else []
    return describe_location(str(meta.get("source", "")), meta.get("page_start"),
                             meta.get("page_end"), headings)


def plot_map(emap: EmbeddingMap, ax: Axes | None = None, *, title: str | None = None,
             marked: Collection[str] = (), marked_label: str = "marked question") -> Axes:
    """Draw the map: chunks coloured by source, chunks some question retrieved ringed in
    black, questions as stars (a thin line to each chunk they retrieved). Questions whose id
    is in `marked` (e.g. those whose gold source was not retrieved) are drawn in a second
    colour, labelled `marked_label`."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 7))
    chunks, questions = emap.chunks, emap.questions
    sources = sorted({p.source or "" for p in chunks})
    cmap = plt.get_cmap("tab10" if len(sources) <= 10 else "tab20")
    for i, src in enumerate(sources):
        pts = [p for p in chunks if (p.source or "") == src]
        ax.scatter([p.x for p in pts], [p.y for p in pts], s=28, alpha=0.75,
                   color=cmap(i % cmap.N), label=src or "(no source)")
    hit = [p for p in chunks if p.retrieved_by]
    if hit:
        ax.scatter([p.x for p in hit], [p.y for p in hit], s=90, facecolors="none",
                   edgecolors="black", linewidths=1.2, label="retrieved by a question")
    where = {p.id: (p.x, p.y) for p in chunks}
    for q in questions:
        for cid in q.retrieved:
            if cid in where:
                ax.plot([q.x, where[cid][0]], [q.y, where[cid][1]], color="grey",
                        linewidth=0.5, alpha=0.5, zorder=0)
    for group, colour, name in (([q for q in questions if q.id not in marked], "crimson",
                                 "question"),
                                ([q for q in questions if q.id in marked], "gold",
                                 marked_label)):
        if group:
            ax.scatter([q.x for q in group], [q.y for q in group], marker="*", s=160,
                       color=colour, edgecolors="black", linewidths=0.5, label=name)
    if questions:
        for q in questions:
            ax.annotate(q.id, (q.x, q.y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_title(title or f"Embedding map ({emap.method.upper()}): {emap.note}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, loc="best", framealpha=0.8)
    return ax


# -- internals --------------------------------------------------------------------------------
def _question(item: QuestionInput, number: int) -> tuple[str, str]:
    if isinstance(item, str):
        return f"q{number}", item
    if isinstance(item, tuple):
        qid, text = item
        return str(qid), str(text)
    return str(item.id), str(item.question)


def _preview(text: str | None) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def _paged(store: Store, include: list[Any]) -> Iterator[dict[str, Any]]:
    """Chroma `get` pages straight from the chunk collection (Store yields no vectors)."""
    offset = 0
    while True:
        got: Any = store.chunks.get(include=include, limit=PAGE, offset=offset)
        if not got["ids"]:
            return
        yield got
        if len(got["ids"]) < PAGE:
            return
        offset += len(got["ids"])


def _by_ids(store: Store, ids: Sequence[str], include: list[Any]) -> Iterator[dict[str, Any]]:
    """Chroma `get` of these ids, `PAGE` ids per call (ids no longer stored are left out)."""
    for start in range(0, len(ids), PAGE):
        got: Any = store.chunks.get(ids=list(ids[start : start + PAGE]), include=include)
        yield got


def _read_chunks(
    store: Store, total: int, wanted: set[str], max_chunks: int | None, random_state: int,
) -> tuple[list[str], np.ndarray, list[str], list[dict[str, Any]]]:
    """(ids, vectors, texts, metadata) of every chunk, or of a seeded sample plus `wanted`.

    When sampling, only the ids of the whole collection are listed; vectors, texts and
    metadata are then read for the kept ids alone (a page of ids per call)."""
    full: list[Any] = ["embeddings", "documents", "metadatas"]
    pages: Iterator[dict[str, Any]]
    if max_chunks is not None and total > max_chunks:
        all_ids = sorted(cid for page in _paged(store, []) for cid in page["ids"])
        rng = np.random.default_rng(random_state)
        picked = rng.choice(len(all_ids), size=max_chunks, replace=False)
        keep = sorted({all_ids[i] for i in picked} | wanted)
        pages = _by_ids(store, keep, full)
    else:
        pages = _paged(store, full)
    ids: list[str] = []
    vectors: list[np.ndarray] = []
    docs: list[str] = []
    metas: list[dict[str, Any]] = []
    for page in pages:
        for cid, emb, doc, meta in zip(page["ids"], page["embeddings"], page["documents"],
                                       page["metadatas"], strict=True):
            ids.append(cid)
            vectors.append(np.asarray(emb, dtype=np.float32))
            docs.append(doc or "")
            metas.append(dict(meta or {}))
    order = sorted(range(len(ids)), key=ids.__getitem__)  # the store's order is not stable
    matrix = (np.stack([vectors[i] for i in order]) if order
              else np.zeros((0, 0), dtype=np.float32))
    return ([ids[i] for i in order], matrix, [docs[i] for i in order],
            [metas[i] for i in order])


def _project(chunks: np.ndarray, questions: np.ndarray, *, n_neighbors: int, min_dist: float,
             random_state: int) -> tuple[np.ndarray, np.ndarray, Method, dict[str, Any]]:
    """2-D coordinates for chunks (fitted) and questions (transformed)."""
    n = len(chunks)
    if n == 0:
        return (np.zeros((0, 2)), np.zeros((len(questions), 2)), "none", {})
    if n < MIN_UMAP_POINTS:
        chunk_xy, question_xy = _pca(chunks, questions)
        return chunk_xy, question_xy, "pca", {"min_umap_points": MIN_UMAP_POINTS}
    import umap  # heavy (numba): only when a map is asked for

    neighbours = min(n_neighbors, n - 1)
    # Euclidean on unit vectors ranks neighbours exactly as cosine does, and numba compiles
    # it faster (about 22 s against 30 s per process here: UMAP's JIT dominates small maps).
    params = {"n_neighbors": neighbours, "min_dist": min_dist, "metric": "euclidean",
              "random_state": random_state}
    reducer = umap.UMAP(n_components=2, n_jobs=1, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba / sklearn chatter about threads and graphs
        chunk_xy = np.asarray(reducer.fit_transform(_unit(chunks)), dtype=np.float64)
        question_xy = (np.asarray(reducer.transform(_unit(questions)), dtype=np.float64)
                       if len(questions) else np.zeros((0, 2)))
    return chunk_xy, question_xy, "umap", params


def _unit(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def _pca(chunks: np.ndarray, questions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The chunks' first two principal components (signs fixed), questions projected onto
    them; missing components (one or two chunks) are zero."""
    mean = chunks.mean(axis=0)
    _, _, vt = np.linalg.svd(chunks - mean, full_matrices=False)
    axes = np.zeros((2, chunks.shape[1]), dtype=np.float64)
    for i in range(min(2, len(vt))):
        component = vt[i]
        if component[np.argmax(np.abs(component))] < 0:
            component = -component
        axes[i] = component
    if len(chunks) == 1:
        axes[:] = 0.0  # one point has no direction of variance

    def project(matrix: np.ndarray) -> np.ndarray:
        return np.asarray((np.asarray(matrix, dtype=np.float64) - mean) @ axes.T)

    return project(chunks), (project(questions) if len(questions) else np.zeros((0, 2)))


def _note(method: Method, shown: int, total: int, questions: int,
          params: Mapping[str, Any]) -> str:
    what = f"{shown} chunks" + (f" (a sample of {total})" if shown < total else "")
    what += f", {questions} questions" if questions else ""
    if method == "none":
        return "the collection is empty: nothing to map"
    if method == "pca":
        return (f"{what}; PCA, not UMAP: fewer than {MIN_UMAP_POINTS} chunks is too few for "
                "UMAP's neighbour graph")
    return f"{what}; UMAP n_neighbors={params['n_neighbors']} on unit vectors"
