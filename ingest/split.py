"""Split loaded documents into chunks that the embedding model sees whole.

Chunks are measured in the embedding model's own tokens. all-MiniLM-L6-v2 reads at most 256
word pieces and silently drops the rest, so a chunk longer than that would have a tail that no
query can ever find. Splits prefer structure: sections (headings), then paragraphs, lines,
sentences, words. A final pass cuts any chunk still over the limit at token boundaries.

Chunks are also capped in characters (`CHARS_PER_TOKEN` per token of the chunk size): the
model's WordPiece reads a word of any length over 100 characters as one `[UNK]` token, so a
token limit alone lets a megabyte-long "word" through, whole, into the store and the prompt.
Text without separators (runs of non-space characters longer than a chunk) is cut by its
tokens, one window at a time, so splitting stays linear in the text's length.

PDF pages are split as one text with page offsets, so a chunk may span a page break and records
its first and last page; a table found on a page (ingest.loaders.pdf) stays apart, its blocks of
whole rows under their header chunked like any section, on their page.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import islice
from typing import Protocol

from langchain_text_splitters import RecursiveCharacterTextSplitter

from rag_app.records import Chunk, LoadedDocument, Section, content_hash
from rag_app.settings import usable_overlap

SPLITTER_VERSION = "recursive-tokens-v5"  # bump when chunk boundaries change
# No "" at the end: langchain would then measure every character on its own (slow, and a
# megabyte-long word would still come out whole). Text that has none of these is hard-split.
SEPARATORS = ["\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " "]
PAGE_JOIN = "\n\n"
CHARS_PER_TOKEN = 8  # a chunk holds at most this many characters per token of its size
BLOCK_CHUNKS = 64  # langchain sees at most this many chunks' worth of characters at a time
META_CHARS = 300  # longest title or heading copied into each chunk's metadata
_CACHED_LENGTH = 64  # token counts of strings up to this long are remembered


class TokenCounter(Protocol):
    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...

    def token_offsets(self, text: str) -> list[tuple[int, int]]: ...


@dataclass(frozen=True, slots=True)
class ChunkingConfig:
    chunk_tokens: int  # already capped at the model's limit
    chunk_overlap: int

    @property
    def max_chars(self) -> int:
        """No chunk is longer than this many characters (follows from the token size)."""
        return self.chunk_tokens * CHARS_PER_TOKEN

    def fingerprint(self) -> dict[str, int | str]:
        return {"chunk_tokens": self.chunk_tokens, "chunk_overlap": self.chunk_overlap,
                "splitter": SPLITTER_VERSION}


def effective_config(requested_tokens: int, overlap: int, model_limit: int) -> ChunkingConfig:
    """Cap the chunk size at what the model reads, and the overlap at half of that size
    (`usable_overlap`: the settings refuse more of the size asked for)."""
    size = min(requested_tokens, model_limit)
    return ChunkingConfig(chunk_tokens=size, chunk_overlap=usable_overlap(size, overlap))


class Splitter:
    def __init__(self, counter: TokenCounter, config: ChunkingConfig) -> None:
        self._counter = counter
        self.config = config
        self._splitters: dict[int, RecursiveCharacterTextSplitter] = {}
        self._token_cache: dict[str, int] = {}

    def _sized(self, size: int) -> RecursiveCharacterTextSplitter:
        if size not in self._splitters:
            self._splitters[size] = RecursiveCharacterTextSplitter(
                separators=SEPARATORS,
                keep_separator="end",
                chunk_size=size,
                chunk_overlap=usable_overlap(size, self.config.chunk_overlap),
                length_function=self._units,
                strip_whitespace=True,
            )
        return self._splitters[size]

    def _length(self, text: str) -> int:
        if len(text) > _CACHED_LENGTH:
            return self._counter.count_tokens([text])[0]
        count = self._token_cache.get(text)
        if count is None:  # words repeat: most short pieces are counted once per document
            if len(self._token_cache) >= 100_000:
                self._token_cache.clear()
            count = self._token_cache[text] = self._counter.count_tokens([text])[0]
        return count

    def _units(self, text: str) -> int:
        """langchain's length: tokens, or characters / CHARS_PER_TOKEN when that is more, so
        a chunk of `size` units has at most `size` tokens and `size * CHARS_PER_TOKEN` chars."""
        by_chars = -(-len(text) // CHARS_PER_TOKEN)
        if len(text) <= _CACHED_LENGTH:  # the common case, once per word: keep it cheap
            count = self._token_cache.get(text)
            if count is not None:
                return count if count > by_chars else by_chars
        elif by_chars > self.config.chunk_tokens:  # over every size: no need to tokenise it
            return by_chars
        return max(self._length(text), by_chars)

    def split(self, doc: LoadedDocument, source: str, file_key: str,
              limit: int | None = None) -> list[Chunk]:
        """The document's chunks, in order; with `limit`, only its first `limit` chunks (the
        same ones, with the same ids, as without it), and the text after them is never
        split: a budget (RAG_MAX_CHUNKS_PER_FILE) costs the time of what it keeps."""
        pieces_iter = self._pieces(doc)
        if limit is not None:  # each piece gives at least one chunk
            pieces_iter = islice(pieces_iter, max(0, limit))
        pairs = list(pieces_iter)
        pieces = [piece for piece, _ in pairs]
        unknown = [piece.text for piece, count in pairs if count is None]
        measured = iter(self._counter.count_tokens(unknown) if unknown else [])
        counts = [next(measured) if count is None else count for _, count in pairs]
        title = _clip(doc.title) if doc.title is not None else None
        chunks: list[Chunk] = []
        for piece, count in zip(pieces, counts, strict=True):
            headings = tuple(_clip(h) for h in piece.headings)
            for text, tokens in self._enforce_limit(piece.text, count):
                if limit is not None and len(chunks) >= limit:
                    break
                index = len(chunks)
                meta = f"{piece.page_start}-{piece.page_end}|{'/'.join(headings)}|{title}"
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
                        headings=headings,
                        title=title,
                    )
                )
        return chunks

    # -- internals ----------------------------------------------------------------------------
    def _pieces(self, doc: LoadedDocument) -> Iterator[tuple[Section, int | None]]:
        """Sections of at most one chunk each, with their token counts where already known."""
        if doc.kind == "pdf":
            yield from self._pdf_pieces(doc.sections)
            return
        for section in doc.sections:
            yield from self._section_pieces(section)

    def _pdf_pieces(self, sections: Sequence[Section]) -> Iterator[tuple[Section, int | None]]:
        """A PDF's pages split as one text (a chunk may span pages), except a table found on a
        page (a section with headings: ingest.loaders) is its own piece, on its page."""
        pages: list[Section] = []
        for section in sections:
            if not section.headings:
                pages.append(section)
                continue
            yield from self._split_paged(pages)
            pages = []
            for piece, count in self._section_pieces(section):
                yield replace(piece, page_start=section.page_start,
                              page_end=section.page_end), count
        yield from self._split_paged(pages)

    def _section_pieces(self, section: Section) -> Iterator[tuple[Section, int | None]]:
        """One section's pieces, each starting with its heading path (when it has one)."""
        header, body = _heading_line(section)
        if not body.strip():
            return  # a heading with nothing under it
        size, chars = self.config.chunk_tokens, self.config.max_chars
        if not header:
            for _, text, count in self._chunks(body, size, chars):
                yield Section(text=text, headings=section.headings), count
            return
        # Every chunk of a section starts with the section's heading path ("Version 2.3.0 >
        # Added"), so no chunk is a stray heading on its own, each one says what it is
        # about, and a parent heading with only sub-sections under it is still searchable.
        trail = " > ".join(h.strip() for h in section.headings[:-1] if h.strip())
        if trail:
            header = f"{trail} > {header.lstrip('#').strip()}"
        # A Markdown table's header row and rule go with the heading: each chunk of a table
        # longer than one chunk is whole rows under the table's header (the text of a table
        # that fits in one chunk is the same either way).
        table_head, rows = _table_head(body)
        if table_head:
            header, body = f"{header}\n{table_head}", rows
        room, char_room = self._room(header, size, chars)
        if (room < size // 2 or char_room < chars // 2) and trail:  # long path: own only
            header = _heading_line(section)[0]
            room, char_room = self._room(header, size, chars)
        if room < size // 2 or char_room < chars // 2:  # an absurdly long heading
            header, body, room, char_room = "", section.text, size, chars
        for _, text, count in self._chunks(body, room, char_room):
            if header:
                text, count = f"{header}\n{text}", None
            yield Section(text=text, headings=section.headings), count

    def _room(self, header: str, size: int, chars: int) -> tuple[int, int]:
        """(tokens, characters) left for text under `header` in a chunk."""
        if len(header) >= chars:
            return 0, 0
        return size - self._length(header + "\n"), chars - len(header) - 1

    def _split_paged(self, pages: Sequence[Section]) -> Iterator[tuple[Section, int | None]]:
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
        size, chars = self.config.chunk_tokens, self.config.max_chars
        for start, text, count in self._chunks(whole, size, chars):
            first = numbers[bisect.bisect_right(starts, start) - 1]
            last = numbers[bisect.bisect_right(starts, start + len(text) - 1) - 1]
            yield Section(text=text, page_start=first, page_end=last), count

    def _chunks(self, text: str, size: int, chars: int
                ) -> Iterator[tuple[int, str, int | None]]:
        """(offset in `text`, chunk, tokens or None if not counted yet), in order: at most
        `size` tokens (checked again by `_enforce_limit`) and `chars` characters each,
        stripped, none empty.

        langchain splits at structure, one bounded block at a time; runs with no separator
        are cut by `_hard_split`. Offsets are found by searching forward from the previous
        chunk's start (langchain's own `start_index` subtracts an overlap counted in tokens
        from a position counted in characters, so it misses, then scans to the end)."""
        size = max(1, min(size, chars // CHARS_PER_TOKEN))
        chars = size * CHARS_PER_TOKEN
        splitter = self._sized(size)
        for start, end, run in _blocks(text, chars, chars * BLOCK_CHUNKS):
            if run:
                yield from self._hard_split(text[start:end], start, size, chars)
                continue
            block = text[start:end]
            at = 0
            for piece in splitter.split_text(block):
                found = block.find(piece, at)
                offset = found if found >= 0 else at
                at = offset + 1
                # langchain gives a piece over the size only when it had no separator to cut
                # at (a run such as "a.a.a…", or words joined by tabs): then it has no space
                if len(piece) > chars or (" " not in piece and self._units(piece) > size):
                    yield from self._hard_split(piece, start + offset, size, chars)
                else:
                    yield start + offset, piece, None

    def _hard_split(self, text: str, base: int, size: int, chars: int
                    ) -> Iterator[tuple[int, str, int]]:
        """Cut `text` into pieces of at most `size` tokens and `chars` characters, at token
        boundaries (at a space when there is one in the second half), with their token counts.
        Linear: each piece is tokenised once, or twice when the guess of its length, taken
        from the piece before, was too long."""
        pos, guess = 0, chars
        while pos < len(text):
            piece = text[pos : pos + min(guess, chars)]
            if pos + len(piece) < len(text):
                space = max(piece.rfind(" "), piece.rfind("\n"), piece.rfind("\t"))
                if space >= len(piece) // 2:
                    piece = piece[: space + 1]
            offsets = self._counter.token_offsets(piece)
            while len(offsets) > size:  # cut before the first token over; alone, the piece
                piece = piece[: max(1, offsets[size][0])]  # may tokenise differently: again
                offsets = self._counter.token_offsets(piece)
            stripped = piece.strip()
            if stripped:
                yield base + pos + piece.index(stripped[0]), stripped, len(offsets)
            pos += len(piece)
            guess = max(16, len(piece) * size // max(len(offsets), 1))  # aim at `size`

    def _enforce_limit(self, text: str, count: int) -> Iterator[tuple[str, int]]:
        """Yield (text, tokens) pieces that never exceed the chunk size or `max_chars`."""
        limit, chars = self.config.chunk_tokens, self.config.max_chars
        if count <= limit and len(text) <= chars:
            yield text, count
            return
        for _, piece, tokens in self._hard_split(text, 0, limit, chars):
            yield piece, tokens


_LONG_RUN: dict[int, re.Pattern[str]] = {}


def _blocks(text: str, run: int, block: int) -> Iterator[tuple[int, int, bool]]:
    """Cut `text` into (start, end, is_run) spans, in linear time: runs of `run` or more
    non-space characters (is_run), and the text between them in blocks of at most `block`
    characters, cut at a paragraph, line or space when possible. Runs of `run` or more
    whitespace characters are left out: they end up as nothing in a stripped chunk."""
    pattern = _LONG_RUN.get(run)
    if pattern is None:  # the look-behinds make each run start the only place a match begins
        pattern = _LONG_RUN[run] = re.compile(rf"(?<!\S)\S{{{run},}}|(?<!\s)\s{{{run},}}")
    pos = 0
    for match in pattern.finditer(text):
        yield from _text_blocks(text, pos, match.start(), block)
        if not text[match.start()].isspace():
            yield match.start(), match.end(), True
        pos = match.end()
    yield from _text_blocks(text, pos, len(text), block)


def _text_blocks(text: str, start: int, end: int, block: int) -> Iterator[tuple[int, int, bool]]:
    while end - start > block:
        cut = -1
        for sep in ("\n\n", "\n", " ", "\t"):
            cut = text.rfind(sep, start + block // 2, start + block)
            if cut >= 0:
                cut += len(sep)
                break
        if cut < 0:
            cut = start + block
        yield start, cut, False
        start = cut
    if text[start:end].strip():
        yield start, end, False


def _clip(text: str) -> str:
    """A title or heading short enough to copy into every chunk's metadata."""
    return text if len(text) <= META_CHARS else text[: META_CHARS - 1] + "…"


_TABLE_RULE = re.compile(r"^\|(?: *:?-+:? *\|)+$")


def _table_head(body: str) -> tuple[str, str]:
    """(header row + rule line, the rows after them) when `body` is a Markdown table (as
    ingest.loaders.tables.table_sections writes them), else ("", body)."""
    lines = body.strip().split("\n")
    if len(lines) >= 3 and lines[0].startswith("|") and _TABLE_RULE.match(lines[1]):
        return f"{lines[0]}\n{lines[1]}", "\n".join(lines[2:])
    return "", body


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

