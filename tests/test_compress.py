"""rag_app.compress: the passages cut to the sentences that bear on the question (logic only:
a bag-of-words embedder; the real one runs in the answer and evaluation tests)."""

from __future__ import annotations

import re
import zlib

import numpy as np
import pytest

from rag_app.compress import GAP, select_evidence, units_of


class WordsEmbedder:
    """Vectors from hashed words: texts sharing words are similar."""

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(256)
        for w in re.findall(r"\w+", text.lower()):
            v[zlib.crc32(w.encode()) % 256] += 1.0
        n = np.linalg.norm(v)
        return v / n if n else v

    def embed_query(self, text: str) -> np.ndarray:
        return self._vec(text)

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        return np.array([self._vec(t) for t in texts])

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(t.split()) for t in texts]


FILLER = " ".join(f"Sentence {i} talks about unrelated filler topic number {i}." for i in range(30))
PASSAGE = ("Kettles boil water quickly. " + FILLER
           + " To descale the kettle, use the following command:\nrun descale --hard\n"
           + FILLER)


def pieces(text: str) -> list[str]:
    return [p.strip() for p in text.split(GAP.strip()) if p.strip()]


def test_units_cover_sentences_and_split_long_ones_at_lines() -> None:
    text = "First sentence here. Second one follows!\n\nA new paragraph.\n- a list item"
    got = [text[a:b] for a, b in units_of(text)]
    assert got == ["First sentence here.", "Second one follows!", "A new paragraph.",
                   "- a list item"]
    table = "\n".join(f"row {i} | value {i} | some more words to fill it" for i in range(30))
    spans = units_of(table)
    assert len(spans) > 1
    assert all(b - a <= 400 for a, b in spans)


def test_no_budget_or_short_passages_are_unchanged() -> None:
    emb = WordsEmbedder()
    assert select_evidence("q", [PASSAGE], emb, 0) == [PASSAGE]
    short = ["One short passage.", "Another."]
    assert select_evidence("q", short, emb, 100) == short


def test_keeps_the_matching_sentence_its_neighbours_and_what_a_colon_introduces() -> None:
    emb = WordsEmbedder()
    [cut] = select_evidence("How do I descale the kettle?", [PASSAGE], emb, budget=60)
    assert "To descale the kettle, use the following command:" in cut
    assert "run descale --hard" in cut  # the line the colon announces
    assert "Sentence 29 talks" in cut  # the sentence before it
    assert len(cut.split()) < len(PASSAGE.split()) / 3
    for piece in pieces(cut):  # verbatim: a quote found in the cut text is in the passage
        assert piece in PASSAGE
    assert cut.startswith(GAP.strip()) and cut.endswith(GAP.strip())


@pytest.mark.parametrize("budget", [1, 40, 120])
def test_every_passage_keeps_its_best_sentence(budget: int) -> None:
    emb = WordsEmbedder()
    other = FILLER + " Warranty claims need the receipt. " + FILLER
    cut = select_evidence("Where is the warranty receipt needed to descale?",
                          [PASSAGE, other], emb, budget)
    assert len(cut) == 2
    assert "descale" in cut[0]
    assert "Warranty claims need the receipt." in cut[1]
    for text, original in zip(cut, [PASSAGE, other], strict=True):
        assert all(p in original for p in pieces(text))
