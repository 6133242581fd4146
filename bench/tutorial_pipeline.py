"""The LangChain tutorial pipeline most RAG projects start from, as the baseline to beat.

PyPDFLoader → RecursiveCharacterTextSplitter(1000, 200) → HuggingFaceEmbeddings (same model as
ours) → Chroma.from_documents. Prints a JSON line: pages, chunks, and how many chunks are longer
than the model reads (silently truncated, so their tails can never be found).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(folder: str, persist: str) -> None:
    from langchain_chroma import Chroma
    from langchain_community.document_loaders import PyPDFLoader
    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from rag_app.embedders.sentence_transformers import resolve_model

    stages: dict[str, float] = {}
    t0 = time.perf_counter()
    pages = []
    for pdf in sorted(Path(folder).rglob("*.pdf")):
        pages.extend(PyPDFLoader(str(pdf)).load())
    t1 = time.perf_counter()
    splitter = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200)
    chunks = splitter.split_documents(pages)
    t2 = time.perf_counter()
    _, model_path = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    embeddings = HuggingFaceEmbeddings(model_name=model_path)
    t3 = time.perf_counter()
    embed = embeddings.embed_documents

    def timed_embed(texts: list[str]) -> list[list[float]]:  # the same call, timed
        e0 = time.perf_counter()
        try:
            return embed(texts)
        finally:
            stages["embed"] = stages.get("embed", 0.0) + time.perf_counter() - e0

    object.__setattr__(embeddings, "embed_documents", timed_embed)
    Chroma.from_documents(chunks, embeddings, persist_directory=persist)
    t4 = time.perf_counter()
    stages.update(parse=t1 - t0, split=t2 - t1, model=t3 - t2,
                  write=t4 - t3 - stages.get("embed", 0.0))

    tokenizer = embeddings._client.tokenizer  # the model's own tokenizer
    limit = int(embeddings._client.max_seq_length or 256) - 2
    lengths = [len(tokenizer.tokenize(c.page_content)) for c in chunks]
    print(json.dumps({"pages": len(pages), "chunks": len(chunks),
                      "over_limit": sum(n > limit for n in lengths), "max_tokens": max(lengths),
                      "stages": {k: round(v, 3) for k, v in stages.items()}}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
