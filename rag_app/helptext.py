"""Help text the command-line tools share: the examples block of an argparse epilog."""

from __future__ import annotations

from collections.abc import Sequence


def examples(prog: str, rows: Sequence[tuple[str, str]], title: str = "examples:") -> str:
    """`title` then one line per (arguments, what it does), the comments aligned; a command too
    long for the column puts its comment on the next line."""
    lengths = [len(f"{prog} {args}".rstrip()) for args, _ in rows]
    width = max([n for n in lengths if n <= 46] or [46]) + 3
    lines = [title]
    for args, what in rows:
        command = f"  {prog} {args}".rstrip()
        if not what:
            lines.append(command)
        elif len(command) + 1 < width + 2:
            lines.append(f"{command:<{width + 2}}{what}")
        else:
            lines.append(command)
            lines.append(f"{'':<{width + 2}}{what}")
    return "\n".join(lines)


def wrap(text: str, width: int = 90) -> str:
    """Fill each line of `text` (a paragraph) to `width`: RawDescriptionHelpFormatter keeps the
    description and epilog as written."""
    import textwrap

    return "\n".join(textwrap.fill(line, width) if line else "" for line in text.split("\n"))
