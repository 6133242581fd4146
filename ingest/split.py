"""Split loaded documents into chunks that the embedding model sees whole.

Chunks are measured in the embedding model's own tokens. all-MiniLM-L6-v2 reads at most 256
word pieces and silently drops the rest, so a chunk longer than that would have a tail that no
query can ever find. Splits prefer structure: sections (headings), then paragraphs, lines,
sentences, words. A final pass cuts any chunk still over the limit at token boundaries.

PDF pages are split as one text with page offsets, so a chunk may span a page break and records
its first and last page.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from langchain_text_splitters import RecursiveCharacterTextSplitter

from rag_app.records import Chunk, LoadedDocument, Section, content_hash

SPLITTER_VERSION = "recursive-tokens-v4"  # bump when chunk boundaries change
SEPARATORS = ["\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ", ""]
PAGE_JOIN = "\n\n"


class TokenCounter(Protocol):
    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...

    def token_offsets(self, text: str) -> list[tuple[int, int]]: ...


@dataclass(frozen=True, slots=True)
class ChunkingConfig:
    chunk_tokens: int  # already capped at the model's limit
    chunk_overlap: int

    def fingerprint(self) -> dict[str, int | str]:
        return {"chunk_tokens": self.chunk_tokens, "chunk_overlap": self.chunk_overlap,
                "splitter": SPLITTER_VERSION}


def effective_config(requested_tokens: int, overlap: int, model_limit: int) -> ChunkingConfig:
    """Cap the chunk size at what the model reads; keep the overlap below the size."""
    size = min(requested_tokens, model_limit)
    return ChunkingConfig(chunk_tokens=size, chunk_overlap=min(overlap, size // 2))


class Splitter:
    def __init__(self, counter: TokenCounter, config: ChunkingConfig) -> None:
        self._counter = counter
        self.config = config
        self._splitters: dict[int, RecursiveCharacterTextSplitter] = {}
        self._splitter = self._sized(config.chunk_tokens)

    def _sized(self, size: int) -> RecursiveCharacterTextSplitter:
        if size not in self._splitters:
            self._splitters[size] = RecursiveCharacterTextSplitter(
                separators=SEPARATORS,
                keep_separator="end",
                chunk_size=size,
                chunk_overlap=min(self.config.chunk_overlap, size // 2),
                length_function=self._length,
                add_start_index=True,
                strip_whitespace=True,
            )
        return self._splitters[size]

    def _length(self, text: str) -> int:
        return self._counter.count_tokens([text])[0]

    def split(self, doc: LoadedDocument, source: str, file_key: str) -> list[Chunk]:
        pieces = list(self._pieces(doc))
        counts = self._counter.count_tokens([p.text for p in pieces])
        chunks: list[Chunk] = []
        for piece, count in zip(pieces, counts, strict=True):
            for text, tokens in self._enforce_limit(piece.text, count):
                index = len(chunks)
                meta = f"{piece.page_start}-{piece.page_end}|{'/'.join(piece.headings)}|{doc.title}"
                chunks.append(
                    Chunk(
                        id=Chunk.make_id(file_key, index, text, meta),
                        text=text,
                        source=source,
                        chunk_index=index,
                        token_count=tokens,
                        content_hash=content_hash(text),
                        page_start=piece.page_start,
                        page_end=piece.page_end,
                        headings=piece.headings,
                        title=doc.title,
                    )
                )
        return chunks

    # -- internals ----------------------------------------------------------------------------
    def _pieces(self, doc: LoadedDocument) -> Iterator[Section]:
        if doc.kind == "pdf":
            yield from self._split_paged(doc.sections)
            return
        for section in doc.sections:
            header, body = _heading_line(section)
            if not body.strip():
                continue  # a heading with nothing under it
            if not header:
                for text in self._splitter.split_text(body):
                    yield Section(text=text, headings=section.headings)
                continue
            # Every chunk of a section starts with the section's heading path ("Version 2.3.0 >
            # Added"), so no chunk is a stray heading on its own, each one says what it is
            # about, and a parent heading with only sub-sections under it is still searchable.
            trail = " > ".join(h.strip() for h in section.headings[:-1] if h.strip())
            if trail:
                header = f"{trail} > {header.lstrip('#').strip()}"
            room = self.config.chunk_tokens - self._length(header + "\n")
            if room < self.config.chunk_tokens // 2 and trail:  # a long path: own heading only
                header = _heading_line(section)[0]
                room = self.config.chunk_tokens - self._length(header + "\n")
            if room < self.config.chunk_tokens // 2:  # an absurdly long heading: plain split
                header, body, room = "", section.text, self.config.chunk_tokens
            for text in self._sized(room).split_text(body):
                yield Section(text=f"{header}\n{text}" if header else text,
                              headings=section.headings)

    def _split_paged(self, pages: Sequence[Section]) -> Iterator[Section]:
        starts: list[int] = []
        numbers: list[int] = []
        parts: list[str] = []
        offset = 0
        for page in pages:
            starts.append(offset)
            numbers.append(page.page_start or 0)
            parts.append(page.text)
            offset += len(page.text) + len(PAGE_JOIN)
        whole = PAGE_JOIN.join(parts)
        for doc in self._splitter.create_documents([whole]):
            text = doc.page_content
            if not text.strip():
                continue
            start = int(doc.metadata.get("start_index", -1))
            if start < 0:  # not located: fall back to a search
                start = max(whole.find(text), 0)
            first = numbers[bisect.bisect_right(starts, start) - 1]
            last = numbers[bisect.bisect_right(starts, start + len(text) - 1) - 1]
            yield Section(text=text, page_start=first, page_end=last)

    def _enforce_limit(self, text: str, count: int) -> Iterator[tuple[str, int]]:
        """Yield (text, tokens) pieces that never exceed the chunk size."""
        limit = self.config.chunk_tokens
        if count <= limit:
            yield text, count
            return
        offsets = self._counter.token_offsets(text)
        for i in range(0, len(offsets), limit):
            window = offsets[i : i + limit]
            while window:
                piece = text[window[0][0] : window[-1][1]].strip()
                tokens = self._counter.count_tokens([piece])[0]
                if tokens <= limit:
                    break
                window = window[: len(window) - max(1, tokens - limit)]  # re-tokenised longer
            if window and piece:
                yield piece, tokens


def _heading_line(section: Section) -> tuple[str, str]:
    """(heading line, rest) when the section's text starts with its own heading."""
    if not section.headings:
        return "", section.text
    first, _, rest = section.text.partition("\n")
    if first.strip().lstrip("#").strip() == section.headings[-1].strip():
        return first.strip(), rest
    return "", section.text


def make_splitter(counter: TokenCounter, requested_tokens: int, overlap: int,
                  model_limit: int) -> Splitter:
    return Splitter(counter, effective_config(requested_tokens, overlap, model_limit))

