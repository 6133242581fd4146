"""Tables as sections: a table (its first row the header) cut into Markdown tables of whole rows,
each block its own section headed by where it is (`Prices > rows 2-31`) and starting with the
table's header row, so a chunk never holds a row without the header that says what its cells
mean. Used by the Office loaders (ingest/loaders/office.py) and for the ruled tables of PDF pages
(ingest/loaders/pdf.py)."""

from __future__ import annotations

from collections.abc import Sequence

from rag_app.records import Section

__all__ = ["TABLE_BLOCK_CHARS", "table_sections"]

TABLE_BLOCK_CHARS = 600  # a table is cut into blocks of whole rows of about this many chars


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def table_sections(rows: Sequence[Sequence[str]], headings: tuple[str, ...], *,
                   numbers: Sequence[int] | None = None) -> list[Section]:
    """A table (its first row the header, cells already text) as sections of whole rows of about
    `TABLE_BLOCK_CHARS` characters, each a Markdown table starting with the header row, headed
    by `headings` plus `rows a-b`: the numbers of the rows it holds (`numbers[i]` is row i's,
    by default 1, 2, …; the header's included). Empty rows are left out."""
    numbered = [(n, list(row)) for n, row in zip(numbers or range(1, len(rows) + 1), rows,
                                                  strict=False)
                if any(cell.strip() for cell in row)]
    if not numbered:
        return []
    width = max(len(row) for _, row in numbered)
    head_row = numbered[0][1] + [""] * (width - len(numbered[0][1]))
    head = _md_row(head_row) + "\n" + _md_row(["---"] * width)
    body = [(n, _md_row(row + [""] * (width - len(row)))) for n, row in numbered[1:]]
    if not body:
        return [_table_section(headings, f"row {numbered[0][0]}", head)]
    sections: list[Section] = []
    block: list[tuple[int, str]] = []
    size = 0
    for number, line in body:
        if block and size + len(line) > TABLE_BLOCK_CHARS:
            sections.append(_block_section(headings, head, block))
            block, size = [], 0
        block.append((number, line))
        size += len(line) + 1
    sections.append(_block_section(headings, head, block))
    return sections


def _block_section(headings: tuple[str, ...], head: str, block: list[tuple[int, str]]
                   ) -> Section:
    first, last = block[0][0], block[-1][0]
    where = f"row {first}" if first == last else f"rows {first}-{last}"
    return _table_section(headings, where, head + "\n" + "\n".join(line for _, line in block))


def _table_section(headings: tuple[str, ...], where: str, table: str) -> Section:
    return Section(text=f"{where}\n\n{table}", headings=(*headings, where))
