"""Untrusted text made safe to print to a terminal.

Document text, file names and model output can hold escape sequences: OSC 8 hyperlinks that
hide where a link goes, CSI sequences that clear the screen, move the cursor or recolour what
follows, OSC 52 that writes the clipboard, or a bare carriage return that overwrites the line.
`for_terminal` removes whole escape sequences (7-bit and 8-bit forms) and then every remaining
C0/C1 control character and DEL, keeping only newline and tab.
"""

from __future__ import annotations

import re

# ESC or 8-bit CSI/OSC/DCS/SOS/PM/APC introducers, with what they carry, up to the terminator.
_ESCAPE_SEQUENCE = re.compile(
    r"""
      (?:\x1b\[|\x9b) [\x30-\x3f]* [\x20-\x2f]* [\x40-\x7e]?            # CSI ... final byte
    | (?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f]) [^\x07\x1b\x9c\n]*
          (?:\x07|\x1b\\|\x9c)?                         # OSC/DCS/SOS/PM/APC ... ST or line end
    | \x1b [\x20-\x2f]* [\x30-\x7e]?                              # other ESC sequences
    """,
    re.VERBOSE,
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def for_terminal(text: object) -> str:
    """`text` as a string without escape sequences or control characters but \\n and \\t."""
    s = text if isinstance(text, str) else str(text)
    return _CONTROL.sub("", _ESCAPE_SEQUENCE.sub("", s))


def for_rich(text: object) -> str:
    """`for_terminal`, then rich markup escaped: for text that goes through rich's markup."""
    from rich.markup import escape

    return escape(for_terminal(text))
