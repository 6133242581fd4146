"""Rebuild the corpus of the multilingual dev set (data/eval/multilingual) from Debian's man pages.

    apt-get install manpages manpages-ru manpages-de manpages-fr
    python bench/build_multilingual_set.py [--out data/eval/multilingual] [--man-root DIR]
                                           [--write-qrels]

The material is parallel text: the Linux man pages that Debian's manpages-l10n project
(packages manpages-ru / manpages-de / manpages-fr, 4.18.1-1, GPL-3+) translates into Russian,
German and French, and the English originals of the same pages as Debian 12 installs them
(manpages, passwd, login, man-db, psmisc, coreutils, vim-common, base-passwd; licences in
/usr/share/doc/<package>/copyright: GPL-2+/GPL-3+, BSD, Expat and the Linux man-pages licences,
all allowing redistribution). The pages used are those present in all three translations and in
English, less the character-set tables (iso-8859-*, koi8-*, cp125*, ...: rows of code points, no
prose) and alias pages (kept once; dir.1 and vdir.1, the ls.1 text, dropped).

Each page is rendered by man-db (`man --nh --nj -l`, MANWIDTH=1000, so a paragraph is one line),
split into paragraphs at blank lines (section headings are their own lines), whitespace
collapsed. Paragraphs are packed in order into passages of about 100-250 words: a passage is
closed at a paragraph boundary once it has >= 100 words, or before a paragraph that would take it
over 250; a single paragraph over 250 words is cut at sentence ends. A page's short tail (< 100
words) joins the page's last passage when the two fit in 300 words, else stands alone when it
has >= 40 words, else is dropped. Passages with fewer than 60% letters (tables, code) are dropped,
and so are passages not in their page's language (`language_ok`: untranslated English paragraphs
left in a translation).
Passage ids are `<lang>-<page>-<nnn>`, title `<page> — <section of the passage's first
paragraph>`; a `lang` field is added (BEIR readers ignore it).

queries.jsonl and judgements.tsv are hand-written data files (see data/eval/multilingual/README.md);
qrels/test.tsv is what judgements.tsv resolves to on this corpus (`resolve_judgements`): the
builder checks that it still agrees, or rewrites it with --write-qrels.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "data" / "eval" / "multilingual"
LANGS = ("en", "ru", "de", "fr")
PACKAGES = {"ru": "manpages-ru", "de": "manpages-de", "fr": "manpages-fr"}
# Character-set and code tables: rows of code points, not prose.
SKIP = re.compile(r"^(iso[-_]?8859|iso_8859|latin|koi8|cp125|armscii|ascii|charsets|"
                  r"utf-?8|unicode|console_codes|tis-620|georgian)", re.I)
# dir(1) and vdir(1) are ls(1) under other names (the same coreutils text but for the NAME line):
# kept, they would be unjudged copies of the ls passages.
SAME_AS_OTHER = {"dir.1", "vdir.1"}
MIN_WORDS, MAX_WORDS, TAIL_MAX, TAIL_MIN = 100, 250, 300, 40
MIN_LETTERS = 0.6
# Common function words: a translated page still carries untranslated English paragraphs
# (manpages-l10n leaves a paragraph in English until someone translates it); a passage is kept
# in language X only when X's function words outnumber every other language's.
FUNCTION_WORDS = {
    "en": {"the", "and", "of", "is", "to", "a", "in", "be", "are", "this", "that", "for", "with"},
    "de": {"der", "die", "das", "und", "ist", "nicht", "ein", "eine", "den", "mit", "wird", "von"},
    "fr": {"le", "la", "les", "et", "est", "des", "un", "une", "du", "pour", "dans", "pas"},
    "ru": set(),
}


@dataclass
class Passage:
    doc_id: str
    title: str
    text: str
    lang: str


def _pages(root: Path, lang: str) -> dict[str, Path]:
    """page name ('ls.1') -> file, for one language's man tree."""
    base = root if lang == "en" else root / lang
    out: dict[str, Path] = {}
    for path in sorted(base.glob("man[1-8]/*.gz")):
        out[path.name[: -len(".gz")]] = path
    return out


def common_pages(root: Path) -> dict[str, dict[str, Path]]:
    """Pages present in every language of LANGS, less SKIP; page -> lang -> file."""
    per_lang = {lang: _pages(root, lang) for lang in LANGS}
    names = set.intersection(*(set(p) for p in per_lang.values()))
    return {name: {lang: per_lang[lang][name] for lang in LANGS}
            for name in sorted(names)
            if not SKIP.match(name) and name not in SAME_AS_OTHER}


def render(path: Path) -> str:
    env = dict(os.environ, MANWIDTH="1000", LANG="C.UTF-8", LC_ALL="C.UTF-8",
               MAN_KEEP_FORMATTING="")
    env.pop("MAN_KEEP_FORMATTING")
    out = subprocess.run(["man", "--nh", "--nj", "-l", str(path)], env=env,
                         capture_output=True, text=True, check=False, timeout=60)
    return re.sub(r".\x08", "", out.stdout)


def paragraphs(rendered: str) -> Iterator[tuple[str, str]]:
    """(section, paragraph text) in page order; the header and footer lines are skipped."""
    lines = rendered.splitlines()
    # drop the header (first non-empty line) and the footer (last non-empty line)
    body = [ln.rstrip() for ln in lines]
    while body and not body[0].strip():
        body.pop(0)
    body = body[1:]
    while body and not body[-1].strip():
        body.pop()
    body = body[:-1]
    section = ""
    block: list[str] = []
    for line in [*body, ""]:
        if line and not line[0].isspace():  # a section heading
            if block:
                yield section, " ".join(block)
                block = []
            section = " ".join(line.split())
        elif line.strip():
            block.append(" ".join(line.split()))
        elif block:
            yield section, " ".join(block)
            block = []


def _words(text: str) -> int:
    return len(text.split())


def _sentences(text: str, limit: int) -> list[str]:
    """Cut an over-long paragraph at sentence ends into pieces of at most `limit` words."""
    parts = re.split(r"(?<=[.!?;:])\s+", text)
    out: list[str] = []
    cur: list[str] = []
    for part in parts:
        if cur and _words(" ".join([*cur, part])) > limit:
            out.append(" ".join(cur))
            cur = []
        cur.append(part)
    if cur:
        out.append(" ".join(cur))
    return out


def _letters(text: str) -> float:
    chars = [c for c in text if not c.isspace()]
    return sum(c.isalpha() for c in chars) / max(1, len(chars))


def language_ok(text: str, lang: str) -> bool:
    """Is `text` in `lang`? Russian: most letters Cyrillic; others: by function words."""
    letters = [c for c in text if c.isalpha()]
    cyrillic = sum("\u0400" <= c <= "\u04ff" for c in letters) / max(1, len(letters))
    if lang == "ru":
        return cyrillic >= 0.5
    if cyrillic >= 0.2:
        return False
    words = re.findall(r"[^\W\d_]+", text.lower())
    hits = {k: sum(w in v for w in words) for k, v in FUNCTION_WORDS.items() if v}
    return hits[lang] > max(n for k, n in hits.items() if k != lang)


def passages_of(page: str, lang: str, rendered: str) -> list[Passage]:
    pieces: list[tuple[str, str]] = []
    for section, para in paragraphs(rendered):
        if _words(para) > MAX_WORDS:
            pieces.extend((section, p) for p in _sentences(para, MAX_WORDS))
        else:
            pieces.append((section, para))
    chunks: list[tuple[str, list[str]]] = []
    cur: list[str] = []
    cur_section = ""
    for section, para in pieces:
        if cur and _words(" ".join([*cur, para])) > MAX_WORDS:
            chunks.append((cur_section, cur))
            cur = []
        if not cur:
            cur_section = section
        cur.append(para)
        if _words(" ".join(cur)) >= MIN_WORDS:
            chunks.append((cur_section, cur))
            cur = []
    if cur:
        tail = " ".join(cur)
        if chunks and _words(" ".join([*chunks[-1][1], tail])) <= TAIL_MAX:
            chunks[-1][1].extend(cur)
        elif _words(tail) >= TAIL_MIN:
            chunks.append((cur_section, cur))
    name, _, sec = page.rpartition(".")
    out: list[Passage] = []
    for section, paras in chunks:
        text = "\n".join(paras)
        if _letters(text) < MIN_LETTERS or not language_ok(text, lang):
            continue
        title = f"{name}({sec}) — {section.title() if section.isupper() else section}"
        out.append(Passage(f"{lang}-{page}-{len(out):03d}", title, text, lang))
    return out


def build(root: Path) -> list[Passage]:
    """Passages of every common page; an alias page (a symlink or `.so` stub whose Russian
    rendering equals an earlier page's: url.7 = uri.7, ex.1 = vim.1) is kept once."""
    out: list[Passage] = []
    seen: set[str] = set()
    for page, files in common_pages(root).items():
        texts = {lang: render(files[lang]) for lang in LANGS}
        key = hashlib.sha256("\n".join(texts["ru"].splitlines()[1:-1]).encode()).hexdigest()
        if key in seen:
            continue
        seen.add(key)
        for lang in LANGS:
            out.extend(passages_of(page, lang, texts[lang]))
    return out


def resolve_judgements(passages: Sequence[Passage], judgements: Path,
                       queries: Path) -> list[tuple[str, str, int]]:
    """(query id, passage id, grade) rows from the hand-written judgements.tsv.

    Each judgements row names a concept, a page, an anchor and a grade. The anchor is a regular
    expression that the answering paragraph carries in every language (an option name, a path,
    a constant: `-S`, `/etc/shells`, `ENXIO`), or `#N` for the page's N-th passage (for a
    question that the page's opening answers). In each language, the first passage of that page
    that the anchor matches is judged, for the concept's query in the same language only
    (query ids are `<lang>-<concept>`). A passage judged twice for one query keeps the higher
    grade."""
    by_page: dict[tuple[str, str], list[Passage]] = {}
    for p in passages:
        page = p.doc_id.split("-", 1)[1].rsplit("-", 1)[0]
        by_page.setdefault((p.lang, page), []).append(p)
    qids = {json.loads(line)["_id"] for line in queries.read_text(encoding="utf-8").splitlines()
            if line.strip()}
    rows: list[tuple[str, str, int]] = []
    lines = judgements.read_text(encoding="utf-8").splitlines()[1:]
    for line in lines:
        if not line.strip():
            continue
        concept, page, anchor, grade = line.split("\t")
        for lang in LANGS:
            qid = f"{lang}-{concept}"
            if qid not in qids:
                continue
            candidates = by_page.get((lang, page), [])
            if anchor.startswith("#"):
                n = int(anchor[1:])
                hits = candidates[n : n + 1]
            else:
                hits = [p for p in candidates if re.search(anchor, p.text)][:1]
            if not hits:
                raise SystemExit(f"judgement {concept} {page} {anchor!r}: no {lang} passage")
            rows.append((qid, hits[0].doc_id, int(grade)))
    best: dict[tuple[str, str], int] = {}
    for qid, doc_id, g in rows:  # a passage judged twice for a query keeps its higher grade
        best[(qid, doc_id)] = max(g, best.get((qid, doc_id), 0))
    return [(q, d, g) for (q, d), g in best.items()]


def package_versions() -> dict[str, str]:
    versions = {}
    for pkg in ("manpages", *PACKAGES.values(), "passwd", "login", "man-db", "psmisc",
                "coreutils", "vim-common", "base-passwd"):
        res = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True,
                             text=True, check=False)
        versions[pkg] = res.stdout.strip() or "not installed"
    return versions


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--man-root", type=Path, default=Path("/usr/share/man"))
    parser.add_argument("--write-qrels", action="store_true",
                        help="write qrels/test.tsv from judgements.tsv (else: check it agrees)")
    args = parser.parse_args(argv)
    versions = package_versions()
    print("packages: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    missing = [lang for lang in LANGS[1:] if not (args.man_root / lang).is_dir()]
    if missing:
        print(f"missing man pages for {missing}: apt-get install "
              + " ".join(PACKAGES[m] for m in missing), file=sys.stderr)
        return 1
    passages = build(args.man_root)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for p in passages:
            fh.write(json.dumps({"_id": p.doc_id, "title": p.title, "text": p.text,
                                 "lang": p.lang}, ensure_ascii=False) + "\n")
    counts = {lang: sum(p.lang == lang for p in passages) for lang in LANGS}
    pages = len({p.doc_id.split("-", 1)[1].rsplit("-", 1)[0] for p in passages})
    print(f"{len(passages)} passages from {pages} pages: {counts}")
    judgements, queries = args.out / "judgements.tsv", args.out / "queries.jsonl"
    if not (judgements.exists() and queries.exists()):
        print("no judgements.tsv / queries.jsonl beside the corpus: corpus only")
        return 0
    rows = resolve_judgements(passages, judgements, queries)
    text = "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{g}\n" for q, d, g in rows)
    qrels = args.out / "qrels" / "test.tsv"
    if args.write_qrels:
        qrels.parent.mkdir(parents=True, exist_ok=True)
        qrels.write_text(text, encoding="utf-8")
        print(f"wrote {qrels}: {len(rows)} judgements")
    elif not qrels.exists() or qrels.read_text(encoding="utf-8") != text:
        print(f"{qrels} differs from what judgements.tsv resolves to on this corpus (another "
              "package version?); --write-qrels rewrites it", file=sys.stderr)
        return 1
    else:
        print(f"qrels agree with judgements.tsv: {len(rows)} judgements")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
