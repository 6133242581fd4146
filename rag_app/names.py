"""The things a question names, and whether a passage mentions them.

A question that names something — a model code (AK-300, E5), an acronym (USB), a capitalised
name (Alexa), a function or other code identifier (`pivot_wider()`, `read.csv`, `Py_Print`), a
version (4.3.0) — is about that thing. Retrieval uses this to make sure a passage that
mentions each name is among the sources when the documents have one (`Retriever.search`);
the answer path uses it to say "not found" without asking the model when the documents
mention a name nowhere (small models answer such questions from a passage about something
else: "1.7 litres" for the AK-300 Pro, a model no document mentions).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Question words that are capitalised without being names.
_QUESTION_WORDS = frozenset(
    "i what how why when where which who whom whose can could does do did is are was were "
    "should would will shall may might must has have had".split())
_WORD = re.compile(r"_*[^\W_](?:[\w.+#'-]*[\w+#])?")  # leading "_": __init__, _private
_VERSION = re.compile(r"\d+(?:\.\d+){2,}")  # 4.3.0, 2.2.0.1 (not 1.5: that is a number)
# Right after a word: "(" that opens a call, not the "(s)" of a plural.
_CALL_AFTER = re.compile(r"\((?!s\))")


def distinctive_names(question: str, *, capitalised: bool = True) -> list[str]:
    """The words of a question that name something, in order, once each: codes with letters
    and digits (AK-300, E5), acronyms (USB), capitalised words after the first (Alexa,
    Tkinter), code identifiers (words with "_", dotted names such as read.csv or
    data.table, a word written as a call: mutate()) and versions with three or more parts.
    Without `capitalised`, a capitalised word counts only when it is all capitals or has a
    capital inside (USB, PyPI): for a language that capitalises every noun (German's
    "Garantie", "Wasserkocher" are no names)."""
    names: list[str] = []
    for i, m in enumerate(_WORD.finditer(question)):
        word = re.sub(r"'s$", "", m.group(0))
        has_digit = any(c.isdigit() for c in word)
        has_alpha = any(c.isalpha() for c in word)
        if has_digit and has_alpha:
            names.append(word)
        elif not has_alpha:
            if _VERSION.fullmatch(word):
                names.append(word)
        elif _is_identifier(word) or _CALL_AFTER.match(question, m.end()):
            names.append(word)
        elif i > 0 and word[0].isupper() and word.lower() not in _QUESTION_WORDS \
                and len(word) > 1 and (capitalised or any(c.isupper() for c in word[1:])):
            names.append(word)
    return list(dict.fromkeys(names))


# A number of two or more parts right after a capitalised name or "version": "Python 3.13",
# "R 4.3", "version 2.1" (alone, 1.5 is just a number)
_NAMED_VERSION = re.compile(r"(?:\b[A-Z][\w+#-]*|\b[Vv]ersion|\b[Rr]elease)\s+(\d+(?:\.\d+)+)\b")


def question_names(question: str, *, capitalised: bool = True) -> list[str]:
    """The names of a question (`distinctive_names`, `capitalised` passed on) and the versions
    it gives after a name ("Python 3.13"): what a passage must mention to be about what the
    question asks. Asked which release first supported Python 3.13, the bundled model named a
    release-notes heading from passages that mention 3.12 and 3.14, never 3.13 (web docs
    wd-012)."""
    names = distinctive_names(question, capitalised=capitalised)
    return list(dict.fromkeys([*names, *_NAMED_VERSION.findall(question)]))


def _is_identifier(word: str) -> bool:
    """snake_case or a dotted name whose parts are not all single letters (e.g., i.e. and
    x.y.z are not)."""
    if "_" in word.strip("_"):
        return True
    parts = [p for p in word.split(".") if p]
    return len(parts) > 1 and any(len(p) > 1 for p in parts) \
        and all(p[0].isalpha() for p in parts)


def mentions(text: str, name: str) -> bool:
    """Does `text` mention `name` as a whole word (case ignored)? "Intel" is in
    "Intel-based", "AK-200" is not in "AK-2000". A hyphenated name made of a code and plain
    words ("bzip2-compressed", "OS-specific") is also mentioned when its other parts are."""
    return _mentioned(text.lower(), name)


def _mentioned(low: str, name: str) -> bool:
    """`mentions` on text already lower-cased."""
    if _whole(low, name.lower()):
        return True
    parts = name.split("-")
    kept = [p for p in parts if not (p.isalpha() and p.islower() and len(p) >= 4)]
    if len(kept) == len(parts) or not kept or any(p.isdigit() for p in kept):
        return False  # not a code joined to plain words ("ak-300" must match whole)
    return all(_whole(low, p.lower()) for p in kept)


def _whole(low_text: str, low_name: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(low_name)}(?![\w]|-\d)", low_text) is not None


def unmatched(names: Iterable[str], texts: Iterable[str]) -> list[str]:
    """The names that none of the texts mentions."""
    low = "\n".join(texts).lower()
    return [n for n in names if not _mentioned(low, n)]


_PLAIN_CAPITALISED = re.compile(r"[A-Z][a-z]+")


def answer_names(answer: str, question: str = "") -> list[str]:
    """The names an answer gives that only a source could have given it: code identifiers
    and calls (as.matrix(), var.equal), codes with letters and digits, versions, acronyms and
    constants (FALSE). Not plain capitalised words (any of an answer's sentences may start
    with one), not single characters, not the names the question itself gives."""
    # an escape written out ("…:\\nlibrary(x)") separates words, as the character it stands for
    answer = re.sub(r"\\[nrt]", " ", answer)
    return [n for n in distinctive_names(answer)
            if len(n) > 1 and not _PLAIN_CAPITALISED.fullmatch(n) and not mentions(question, n)]


def unsourced(names: Iterable[str], texts: Iterable[str]) -> list[str]:
    """The names that none of the texts mentions, as `unmatched`, except that a name without
    digits also counts as mentioned with digits glued to its end: PDF text glues footnote
    marks to words (".RData5")."""
    low = "\n".join(texts).lower()
    return [n for n in unmatched(names, [low])
            if any(c.isdigit() for c in n) or not _footnoted(low, n.lower())]


def _footnoted(low_text: str, low_name: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(low_name)}\d{{1,2}}(?!\w)", low_text) is not None


__all__ = ["answer_names", "distinctive_names", "mentions", "question_names", "unmatched",
           "unsourced"]
