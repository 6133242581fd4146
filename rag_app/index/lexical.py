"""Lexical retrieval: a BM25 index over the same chunks as the vector store, saved beside it.

BM25 finds what dense search misses: exact terms, codes, names. The index is built from the
chunk texts (`Store.all_chunks()`), saved to a folder and loaded at query time; it is never
rebuilt per query. Scoring is bm25s (Lucene's BM25 variant, k1=1.5, b=0.75) over a sparse
matrix, so a query costs one sparse row sum, not a pass over the texts.

Keeping it in sync is the owner's job: `build(..., stamp=…)` records a caller-chosen string
(e.g. a digest of the chunk ids and content hashes, or the store's generation) and `stamp`
gives it back after `load`, so a stale index is recognised and rebuilt. `origin=…` records a
small mapping (the store uses the collection name, chunk count and write generation) that
`saved_origin` reads back without loading the index, so staleness is cheap to check.

On disk a saved index is a folder holding a `CURRENT` file that names one complete version
sub-folder. `save` writes a new version in a temporary folder, renames it into place and then
replaces `CURRENT` with `os.replace` — so a reader sees the old index or the new one, never a
half-written one, and a crash at any point leaves a loadable index (or none, which means
"rebuild"). One writer at a time is assumed: only a writer holding the store's lock saves
(`Store.rebuild_lexical`); readers that find the saved index stale build one in memory and
never save it (`Store.load_lexical`).

Adding to a big index costs what the addition costs: `updated(added, removed)` keeps the
built index (the *main* segment, bm25s) and puts the new chunks in a small *delta* segment
scored at query time, with the removed ones hidden (tombstones). The delta's chunks are scored
with the statistics of the whole index (document count, document frequencies, average
length), exactly as a full rebuild would score them; the main segment keeps the statistics it
was built with until the next merge. When the delta and the tombstones together pass
`MERGE_SHARE` of the main segment, the owner builds the whole index again (a merge), which
makes every score exact again. On disk the delta is its chunks' terms, beside the main
segment's files.

Tokenisation: lower-case Unicode word tokens (`\\w+`), plus, by default, Lucene's English
stop words and the Snowball English stemmer (PyStemmer). On the msmarco sample
(`bench/fusion_study.py`) they lifted BM25 alone from nDCG@10 0.570 to 0.615 (stemming did
most of it: 0.605 alone; stop words alone 0.577) and MRR@10 at grade >= 2 from 0.689 to 0.759;
inside the fused ranking the difference was within noise.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import secrets
import shutil
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from rag_app.errors import ConfigError, RagError

log = logging.getLogger(__name__)

FORMAT = 2  # bump when the folder layout or tokenisation changes incompatibly (2: segments)
# the delta and the tombstones may grow to this share of the main segment before the owner
# builds the whole index again (and at least to MERGE_MIN chunks)
MERGE_SHARE = 0.1
MERGE_MIN = 2000
_POINTER = "CURRENT"
_META = "meta.json"
_ORIGIN = "origin.json"  # a copy of meta's "origin", small enough to read on every load
_TOKEN = re.compile(r"\w+")
_STALE_TEMP_S = 3600.0  # leftovers of a crashed save older than this are removed

# Lucene's English stop words (the list bm25s ships as "en"), fixed here so that a library
# update cannot silently change the tokenisation of a saved index.
ENGLISH_STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their "
    "then there these they this to was will with".split()
)


class LexicalIndexError(RagError):
    """The lexical index cannot be built or saved as asked."""


@dataclass(frozen=True, slots=True)
class LexicalOptions:
    """How text becomes terms, and the BM25 parameters. Part of what a saved index records."""

    stopwords: bool = True
    stem: bool = True
    k1: float = 1.5
    b: float = 0.75


@dataclass(slots=True)
class _Delta:
    """The chunks added since the main segment was built: ids, content hashes, terms."""

    ids: list[str]
    hashes: list[str]
    terms: list[list[str]]


class Tokenizer:
    """Lower-case word tokens, optionally without stop words and stemmed."""

    _MAX_CACHE = 1_000_000  # distinct words remembered (term per word)

    def __init__(self, options: LexicalOptions) -> None:
        self.options = options
        self._stemmer: Any = None
        if options.stem:
            try:
                import Stemmer  # PyStemmer
            except ImportError as exc:
                raise ConfigError(
                    "Stemming for the BM25 index needs PyStemmer: `pip install PyStemmer` "
                    "(or build the index with LexicalOptions(stem=False))."
                ) from exc
            # PyStemmer's own cache (10,000 words) thrashes on a real vocabulary and made
            # tokenising slower than no cache at all; a dict of word -> term is 5x faster.
            self._stemmer = Stemmer.Stemmer("english", 0)
        self._terms: dict[str, str] = {}  # word -> term, "" for a stop word

    def __call__(self, text: str) -> list[str]:
        words = _TOKEN.findall(text.lower())
        if not (self.options.stopwords or self._stemmer is not None):
            return words
        terms = self._terms
        if len(terms) > self._MAX_CACHE:
            terms.clear()
        out = []
        for word in words:
            term = terms.get(word)
            if term is None:
                term = terms[word] = self._term(word)
            if term:
                out.append(term)
        return out

    def _term(self, word: str) -> str:
        if self.options.stopwords and word in ENGLISH_STOPWORDS:
            return ""
        return str(self._stemmer.stemWord(word)) if self._stemmer is not None else word


class LexicalIndex:
    """A BM25 index over (id, text) pairs. Build it, update it, save it, load it, search it."""

    def __init__(self, ids: list[str], bm25: Any, options: LexicalOptions, stamp: str,
                 origin: Mapping[str, Any] | None = None, *, hashes: Sequence[str] = (),
                 length: int = 0, delta: _Delta | None = None,
                 deleted: frozenset[str] = frozenset()) -> None:
        self._ids = ids  # the main segment's chunks, in bm25s order
        self._bm25 = bm25  # bm25s.BM25, or None for an empty main segment
        self.options = options
        self._stamp = stamp
        self.origin: dict[str, Any] = dict(origin or {})  # what it was built from (saved too)
        self.saved_in: Path | None = None  # the folder it was saved to or loaded from
        # each main chunk's content hash (same order as ids; empty when not recorded)
        self._hashes = list(hashes)
        self._length = length  # the main segment's terms, in all (for the average length)
        self._delta = delta or _Delta([], [], [])
        self._deleted = deleted  # main-segment ids removed since it was built

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def build(cls, ids: Sequence[str], texts: Sequence[str], *, stamp: str = "",
              options: LexicalOptions | None = None,
              origin: Mapping[str, Any] | None = None,
              hashes: Sequence[str] | None = None) -> LexicalIndex:
        """Index `texts` under `ids` (same order, ids unique). `stamp` identifies the corpus
        snapshot the index was built from; `origin` (JSON-able) says where it came from;
        `hashes` (each text's content hash) let `contents` tell what an update must do. All are
        saved with the index."""
        options = options or LexicalOptions()
        if len(ids) != len(texts):
            raise LexicalIndexError(f"{len(ids)} ids but {len(texts)} texts")
        if hashes is not None and len(hashes) != len(ids):
            raise LexicalIndexError(f"{len(ids)} ids but {len(hashes)} content hashes")
        if len(set(ids)) != len(ids):
            raise LexicalIndexError("chunk ids must be unique to build the BM25 index")
        tokenize = Tokenizer(options)
        corpus = [tokenize(t) for t in texts]
        bm25 = None
        if any(corpus):
            bm25s = _import_bm25s()
            bm25 = bm25s.BM25(k1=options.k1, b=options.b, backend="numpy")
            bm25.index(corpus, show_progress=False)
        return cls(list(ids), bm25, options, stamp, origin, hashes=hashes or [],
                   length=sum(len(c) for c in corpus))

    def updated(self, added: Sequence[tuple[str, str, str]], removed: Sequence[str], *,
                stamp: str, origin: Mapping[str, Any] | None = None) -> LexicalIndex:
        """This index with chunks `added` ((id, text, content hash) each) and the ids `removed`
        taken out, without building it again: the main segment stays, `added` go into the
        delta segment. An id both removed and added is replaced."""
        gone = set(removed)
        keep = [i for i, cid in enumerate(self._delta.ids) if cid not in gone]
        delta = _Delta([self._delta.ids[i] for i in keep],
                       [self._delta.hashes[i] for i in keep],
                       [self._delta.terms[i] for i in keep])
        tokenize = self._tokenize
        for cid, text, chash in added:
            delta.ids.append(cid)
            delta.hashes.append(chash)
            delta.terms.append(tokenize(text))
        in_main = set(self._ids)
        deleted = self._deleted | {cid for cid in gone if cid in in_main}
        return LexicalIndex(self._ids, self._bm25, self.options, stamp, origin,
                            hashes=self._hashes, length=self._length, delta=delta,
                            deleted=frozenset(deleted))

    def contents(self) -> dict[str, str] | None:
        """Every chunk the index holds now, id -> content hash; None for an index saved
        without hashes (it cannot be updated, only built again)."""
        if len(self._hashes) != len(self._ids):
            return None
        out = {cid: h for cid, h in zip(self._ids, self._hashes, strict=True)
               if cid not in self._deleted}
        out.update(zip(self._delta.ids, self._delta.hashes, strict=True))
        return out

    def needs_merge(self, more: int = 0) -> bool:
        """Would the delta and the tombstones, with `more` changes, pass `MERGE_SHARE` of the
        main segment (and `MERGE_MIN`)? Then build the whole index again instead."""
        pending = len(self._delta.ids) + len(self._deleted) + more
        return pending > max(MERGE_MIN, MERGE_SHARE * len(self._ids))

    @property
    def stamp(self) -> str:
        return self._stamp

    @property
    def ids(self) -> list[str]:
        """The ids of every chunk the index holds now (both segments, removed ones left out)."""
        return [cid for cid in self._ids if cid not in self._deleted] + self._delta.ids

    def __len__(self) -> int:
        return len(self._ids) - len(self._deleted) + len(self._delta.ids)

    @cached_property
    def _tokenize(self) -> Tokenizer:
        return Tokenizer(self.options)

    # -- searching --------------------------------------------------------------------------
    def search(self, query: str, k: int, *, allowed: Callable[[str], bool] | None = None
               ) -> list[tuple[str, float]]:
        """The `k` best (id, BM25 score) pairs, best first; only chunks sharing a term with
        the query. `allowed(id)` may exclude chunks (e.g. other sources): it is asked in rank
        order, only until `k` chunks are found."""
        if k <= 0 or len(self) == 0:
            return []
        terms = self._tokenize(query)
        scores, ids = self._main_scores(terms), self._ids
        if self._delta.ids:
            scores = np.concatenate([scores, self._delta_scores(terms)])
            ids = self._all_ids
        hits = np.flatnonzero(scores > 0)
        if allowed is None and len(hits) > k:
            hits = hits[np.argpartition(-scores[hits], k - 1)[:k]]
        # best first; ties in index order, so results are deterministic
        order = hits[np.lexsort((hits, -scores[hits]))]
        out: list[tuple[str, float]] = []
        for i in order:
            doc_id = ids[i]
            if allowed is None or allowed(doc_id):
                out.append((doc_id, float(scores[i])))
                if len(out) == k:
                    break
        return out

    @cached_property
    def _all_ids(self) -> list[str]:
        return self._ids + self._delta.ids

    @cached_property
    def _dead(self) -> np.ndarray:
        """The main segment's positions of removed chunks."""
        return np.array([i for i, cid in enumerate(self._ids) if cid in self._deleted],
                        dtype=np.int64)

    def _main_scores(self, terms: list[str]) -> np.ndarray:
        if self._bm25 is None:
            return np.zeros(len(self._ids), dtype=np.float32)
        vocab = self._bm25.vocab_dict
        term_ids = [vocab[t] for t in terms if t in vocab]
        if not term_ids:
            return np.zeros(len(self._ids), dtype=np.float32)
        scores = np.asarray(self._bm25.get_scores(term_ids), dtype=np.float32)
        if self._deleted:
            scores[self._dead] = 0.0
        return scores

    def _main_df(self, term: str) -> int:
        """How many main-segment chunks hold `term` (removed ones included, as in its
        statistics)."""
        if self._bm25 is None or term not in self._bm25.vocab_dict:
            return 0
        indptr = self._bm25.scores["indptr"]
        t = self._bm25.vocab_dict[term]
        return int(indptr[t + 1] - indptr[t])

    @cached_property
    def _delta_postings(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Each term of the delta: the delta chunks holding it and how often (built once, not
        per query)."""
        rows: dict[str, tuple[list[int], list[int]]] = {}
        for i, terms in enumerate(self._delta.terms):
            for term, tf in Counter(terms).items():
                at, tfs = rows.setdefault(term, ([], []))
                at.append(i)
                tfs.append(tf)
        return {term: (np.array(at, dtype=np.int64), np.array(tfs, dtype=np.float32))
                for term, (at, tfs) in rows.items()}

    @cached_property
    def _delta_norm(self) -> np.ndarray:
        """k1 (1 - b + b dl / avgdl) of each delta chunk, avgdl over both segments."""
        n = len(self._ids) + len(self._delta.ids)
        lengths = np.array([len(t) for t in self._delta.terms], dtype=np.float32)
        avgdl = (self._length + float(lengths.sum())) / max(n, 1)
        k1, b = self.options.k1, self.options.b
        return k1 * (1 - b + b * lengths / max(avgdl, 1e-9))

    def _delta_scores(self, terms: list[str]) -> np.ndarray:
        """The delta's chunks scored as bm25s scores a chunk of a full index (its "lucene"
        BM25: idf = ln(1 + (N - df + 0.5) / (df + 0.5)), tf / (tf + k1 (1 - b + b dl / avgdl)),
        summed over the query's terms as given, repeats included) with the statistics of both
        segments together."""
        n = len(self._ids) + len(self._delta.ids)
        norm = self._delta_norm
        scores = np.zeros(len(self._delta.ids), dtype=np.float32)
        for term in dict.fromkeys(terms):
            posting = self._delta_postings.get(term)
            if posting is None:
                continue
            at, tf = posting
            df = self._main_df(term) + len(at)
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            scores[at] += terms.count(term) * idf * tf / (tf + norm[at])
        return scores

    # -- persistence ------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """Write the index under `folder`, replacing any previous one atomically."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"v-{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(4)}"
        temp = folder / f".tmp-{name}"
        try:
            temp.mkdir()
            meta = {"format": FORMAT, "stamp": self._stamp, "options": asdict(self.options),
                    "ids": self._ids, "empty": self._bm25 is None, "origin": self.origin,
                    "hashes": self._hashes, "length": self._length,
                    "deleted": sorted(self._deleted), "delta": asdict(self._delta)}
            if self._bm25 is not None:
                self._bm25.save(str(temp), show_progress=False)
            _write_synced(temp / _META, json.dumps(meta, ensure_ascii=False))
            _write_synced(temp / _ORIGIN, json.dumps(self.origin, ensure_ascii=False))
            _fsync_dir(temp)
            os.replace(temp, folder / name)
            _write_synced(folder / f".{_POINTER}.tmp", name)
            os.replace(folder / f".{_POINTER}.tmp", folder / _POINTER)
            _fsync_dir(folder)
        except OSError as exc:
            shutil.rmtree(temp, ignore_errors=True)
            raise LexicalIndexError(f"Could not save the BM25 index to {folder}: {exc}") from exc
        self.saved_in = folder
        _remove_old_versions(folder, keep=name)

    @classmethod
    def load(cls, folder: Path) -> LexicalIndex | None:
        """The index saved under `folder`, or None if there is none (or it is unreadable, or
        from an older format): the caller then rebuilds it."""
        folder = Path(folder)
        for _ in range(2):  # a save may replace the version between reading CURRENT and it
            try:
                name = (folder / _POINTER).read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                return None
            try:
                index = cls._load_version(folder / name)
            except FileNotFoundError:
                continue
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("BM25 index in %s is unreadable (%s); it will be rebuilt", folder, exc)
                return None
            if index is not None:
                index.saved_in = folder
            return index
        return None

    @staticmethod
    def saved_origin(folder: Path) -> dict[str, Any] | None:
        """The `origin` of the index saved under `folder`, read without loading the index;
        None if there is none, it is unreadable, or it was saved without one."""
        folder = Path(folder)
        for _ in range(2):  # a save may replace the version between reading CURRENT and it
            try:
                name = (folder / _POINTER).read_text(encoding="utf-8").strip()
                origin = json.loads((folder / name / _ORIGIN).read_text(encoding="utf-8"))
            except FileNotFoundError:
                continue
            except (OSError, ValueError):
                return None
            return dict(origin) if isinstance(origin, dict) else None
        return None

    @classmethod
    def _load_version(cls, path: Path) -> LexicalIndex | None:
        meta = json.loads((path / _META).read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            log.info("BM25 index in %s has format %s, not %s; it will be rebuilt",
                     path.parent, meta.get("format"), FORMAT)
            return None
        options = LexicalOptions(**meta["options"])
        ids = [str(i) for i in meta["ids"]]
        bm25 = None
        if not meta["empty"]:
            bm25s = _import_bm25s()
            bm25 = bm25s.BM25.load(str(path), show_progress=False, verbosity=0)
            if int(bm25.scores["num_docs"]) != len(ids):
                raise ValueError(f"{bm25.scores['num_docs']} indexed documents, {len(ids)} ids")
        delta = meta.get("delta") or {}
        return cls(ids, bm25, options, str(meta["stamp"]), meta.get("origin") or {},
                   hashes=[str(h) for h in meta.get("hashes") or []],
                   length=int(meta.get("length") or 0),
                   delta=_Delta([str(i) for i in delta.get("ids") or []],
                                [str(h) for h in delta.get("hashes") or []],
                                [[str(t) for t in terms] for terms in delta.get("terms") or []]),
                   deleted=frozenset(str(i) for i in meta.get("deleted") or []))


def _write_synced(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a directory
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_old_versions(folder: Path, keep: str) -> None:
    now = time.time()
    for entry in folder.iterdir():
        if not entry.is_dir() or entry.name == keep:
            continue
        stale_temp = entry.name.startswith(".tmp-") and now - entry.stat().st_mtime > _STALE_TEMP_S
        if entry.name.startswith("v-") or stale_temp:
            shutil.rmtree(entry, ignore_errors=True)


def _import_bm25s() -> Any:
    """bm25s, with its logger (which it sets to DEBUG on import) brought back to warnings."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s
