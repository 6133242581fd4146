"""Hostile text renders literally; hostile upload names become plain names inside their folder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rag_app.errors import ConfigError, RagError
from rag_app.ui.safety import (
    WORD_JOINER,
    UnsafeName,
    escape_markdown,
    safe_upload_name,
    unique_path,
)

# --- escape_markdown -------------------------------------------------------------------------
HOSTILE = [
    "![x](http://evil/a.png)",
    "[click](javascript:alert(1))",
    "<img src=x onerror=alert(1)>",
    "<script>alert(1)</script>",
    "$x^2$",
    "$$\\int_0^1 x\\,dx$$",
    ":red[alert]",
    ":blue-background[big] :rainbow[x] :small[y] :help[tip] :orange-badge[b]",
    "[r]: //evil.example/x\n\n[see][r]",
    "https://evil.example/?q=1",
    "visit http://evil.example or WWW.evil.example now",
    "mail a.b+c@evil.example today",
    "<http://evil.example>",
    "<a@evil.example>",
    ":material/home: and :smile: and :+1:",
    "&lt;script&gt; &#60;b&#62; &amp;",
    "# heading\n## also\nSetext\n===\nand\n---",
    "    indented code\n\tand a tab",
    "- item\n* item\n+ item\n1. one\n2) two",
    "> quote\n>> nested",
    "***\n___",
    "| a | b |\n|---|---|\n| 1 | 2 |",
    "`code` and ```fence```\n```\nblock\n```\n~~~\nblock\n~~~",
    "**bold** __bold__ *em* _em_ ~~del~~ ~sub~",
    "footnote[^1]\n\n[^1]: https://evil.example",
    "a trailing backslash \\\nand \\*escaped\\* already \\\\",
    "<!-- comment --> <div onclick=x>html block</div>",
    "[x](<javascript:alert(1)>) [y]( http://evil.example 'title')",
    "\\(x\\) \\[y\\] {z} 50% #tag @user a_b_c 3*4*5",
]

# What Streamlit's renderer looks for in text after parsing (from its frontend bundle:
# mdast-util-gfm-autolink-literal, remark-emoji, its `:material/` rewrite).
GFM_URL = re.compile(r"(https?://|www(?=\.))([-.\w]+)", re.IGNORECASE | re.ASCII)
GFM_EMAIL = re.compile(r"([-.\w+]+)@([-\w]+(?:\.[-\w]+)+)", re.ASCII)
EMOJI = re.compile(r":\+1:|:-1:|:[\w-]+:", re.ASCII)


def _unescaped(text: str, char: str) -> list[int]:
    """Positions of `char` not preceded by an odd number of backslashes."""
    found = []
    for m in re.finditer(re.escape(char), text):
        run = len(text[: m.start()]) - len(text[: m.start()].rstrip("\\"))
        if run % 2 == 0:
            found.append(m.start())
    return found


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_has_no_unescaped_markup(text: str) -> None:
    out = escape_markdown(text)
    assert "](" not in out
    assert ":red[" not in out
    assert ":material/" not in out  # Streamlit rewrites this in the raw source before parsing
    for char in "<>$[]()!`*_~|&#:":
        assert _unescaped(out, char) == [], (char, out)


def test_bare_urls_emails_and_shortcodes_are_broken() -> None:
    out = escape_markdown("https://evil.example/?q=1 www.evil.example a@b.example :smile:")
    plain = out.replace("\\", "")  # what the parser leaves in the text node
    assert not GFM_URL.search(plain)
    assert not GFM_EMAIL.search(plain)
    assert not EMOJI.search(plain)
    assert plain.replace(WORD_JOINER, "") == (
        "https://evil.example/?q=1 www.evil.example a@b.example :smile:"
    )


def test_newlines_stay_line_breaks_and_paragraphs() -> None:
    assert escape_markdown("one\ntwo\n\nthree") == "one  \ntwo\n\nthree"
    assert escape_markdown("a\r\nb\rc") == "a  \nb  \nc"
    assert escape_markdown("   \nx") == "\nx"
    assert escape_markdown("") == ""
    assert escape_markdown("    code\n\tx") == "\u00a0" * 4 + "code  \n" + "\u00a0" * 4 + "x"
    assert escape_markdown("plain words stay plain") == "plain words stay plain"


# -- rendered with a real CommonMark parser ---------------------------------------------------
def _render(text: str):  # type: ignore[no-untyped-def]
    markdown_it = pytest.importorskip("markdown_it")
    # html=True: any '<' that survived unescaped would come out as a raw tag.
    md = markdown_it.MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    return md, md.parse(escape_markdown(text))


PLAIN_BLOCKS = {"paragraph_open", "paragraph_close", "inline"}
PLAIN_INLINE = {"text", "softbreak", "hardbreak"}


def _visible_text(tokens) -> tuple[str, list[str]]:  # type: ignore[no-untyped-def]
    """The text a reader sees, and the types of any markup tokens found."""
    paragraphs: list[str] = []
    markup: list[str] = []
    for tok in tokens:
        if tok.type not in PLAIN_BLOCKS:
            markup.append(tok.type)
        if tok.type != "inline":
            continue
        parts = []
        for child in tok.children or []:
            if child.type not in PLAIN_INLINE:
                markup.append(child.type)
            parts.append("\n" if child.type.endswith("break") else child.content)
        paragraphs.append("".join(parts))
    return "\n\n".join(paragraphs), markup


def _normalised(text: str) -> str:
    lines = text.replace("\r\n", "\n").replace("\t", "    ").split("\n")
    out = "\n".join(line.rstrip() for line in lines)
    # markdown-it-py strips a paragraph with Python's str.strip, which also takes the no-break
    # spaces that keep the first line's indent (micromark, Streamlit's parser, keeps them).
    return re.sub(r"\n{3,}", "\n\n", out.strip())


@pytest.mark.parametrize("text", HOSTILE)
def test_rendered_output_is_the_literal_text(text: str) -> None:
    md, tokens = _render(text)
    html = md.renderer.render(tokens, md.options, {})
    for tag in ("<a", "<img", "<script", "<div", "<h1", "<code", "<pre", "<table", "<ul",
                "<ol", "<blockquote", "<em", "<strong", "<s>", "<hr", "<!--"):
        assert tag not in html, (tag, html)
    seen, markup = _visible_text(tokens)
    assert markup == []
    seen = seen.replace(WORD_JOINER, "").replace("\u00a0", " ")
    assert _normalised(seen) == _normalised(text)
    raw_seen, _ = _visible_text(tokens)  # what Streamlit's text-node plugins would search
    assert not GFM_URL.search(raw_seen)
    assert not GFM_EMAIL.search(raw_seen)
    assert not EMOJI.search(raw_seen)


def test_markdown_it_sees_markup_without_escaping() -> None:
    """The rendering check above can fail: the raw strings do make links, images and HTML."""
    markdown_it = pytest.importorskip("markdown_it")
    md = markdown_it.MarkdownIt("commonmark", {"html": True})
    html = md.render("![x](http://evil/a.png) [click](javascript:alert(1)) <script>")
    assert "<img" in html
    assert "<script>" in html


# --- safe_upload_name ------------------------------------------------------------------------
ALLOWED = (".md", ".pdf", ".txt", ".html")


def safe(name: str, **kw: object) -> str:
    return safe_upload_name(name, allowed_suffixes=ALLOWED, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../x.md", "x.md"),
        ("/etc/passwd.md", "passwd.md"),
        ("C:\\x\\..\\y.md", "y.md"),
        ("..\\..\\windows\\win.ini.txt", "win.ini.txt"),
        ("a\x00b.md", "ab.md"),
        ("x.exe\x00.md", "x.exe.md"),
        ("invoice\u202efdp.md", "invoicefdp.md"),
        ("re\u200bport\u200c\u200d\u2060\ufeff.md", "report.md"),
        ("\u2066evil\u2069.pdf", "evil.pdf"),
        ("p\u0430ypal.md", "p_ypal.md"),  # Cyrillic а
        ("ｒｅｐｏｒｔ．ｍｄ", "report.md"),  # fullwidth
        ("．．／．．／ｅｔｃ／ｘ．ｍｄ", "x.md"),  # fullwidth ../../etc/x.md
        ("ﬁle Ⅻ.md", "file XII.md"),
        ("日本語.md", "___.md"),
        (".hidden.md", "hidden.md"),
        ("..md", "upload.md"),
        (".md", "upload.md"),
        ("-rf.md", "rf.md"),
        ("--. -x.pdf", "x.pdf"),
        ("CON.md", "_CON.md"),
        ("con.md", "_con.md"),
        ("nul.tar.md", "_nul.tar.md"),
        ("LPT9 .md", "_LPT9.md"),
        ("COM1.pdf", "_COM1.pdf"),
        ("CONSOLE.md", "CONSOLE.md"),
        ("Report 2024.PDF", "Report 2024.pdf"),
        ("a  b\tc\n.md", "a bc.md"),
        ("name with $pecial;chars&<>|?*.md", "name with _pecial_chars______.md"),
        ("x.md ", "x.md"),
        ("trailing dots... .md", "trailing dots.md"),
    ],
)
def test_safe_upload_name(name: str, expected: str) -> None:
    assert safe(name) == expected


def test_long_names_are_capped_keeping_the_suffix() -> None:
    out = safe("a" * 5000 + ".md")
    assert out == "a" * 97 + ".md"
    assert len(safe("b" * 5000 + ".html", max_len=40)) == 40
    assert safe("é" * 5000 + ".pdf").endswith(".pdf")
    assert len(safe(("x" * 300 + "/") * 20 + "y" * 5000 + ".txt")) == 100


@pytest.mark.parametrize(
    "name",
    ["x.exe", "x.md.exe", "x.MD.EXE", "invoice\u202edm.exe", "x．ｅｘｅ", "README", "x.md.",
     "x.md/", "", "../../", "x.md\x00.exe"],
)
def test_disallowed_suffixes_are_refused(name: str) -> None:
    with pytest.raises(UnsafeName, match=r"\.md, \.pdf") as err:
        safe(name)
    assert isinstance(err.value, RagError)
    assert "\u202e" not in str(err.value)  # hostile characters are shown escaped


def test_suffix_list_may_omit_dots_and_case() -> None:
    assert safe_upload_name("a.PDF", allowed_suffixes=["PDF", "md"]) == "a.pdf"
    with pytest.raises(UnsafeName, match="none"):
        safe_upload_name("a.md", allowed_suffixes=[])
    with pytest.raises(ConfigError, match="max_len"):
        safe_upload_name("a.html", allowed_suffixes=[".html"], max_len=5)


# --- unique_path -----------------------------------------------------------------------------
EVERY_NAME = [
    "../../x.md", "/etc/passwd.md", "C:\\x\\..\\y.md", "a\x00b.md", "invoice\u202efdp.md",
    "re\u200bport.md", "a" * 5000 + ".md", "p\u0430ypal.md", "．．／．．／ｘ．ｍｄ", ".hidden.md",
    "CON.md", "..md", "-rf.md", "x.md", "x.md", "x.md", "...", "..\\..\\.md",
]


def test_every_result_stays_inside_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    made = []
    for name in EVERY_NAME:
        try:
            clean = safe(name)
        except UnsafeName:
            continue
        path = unique_path(folder, clean)
        with path.open("x") as f:  # never overwrites: every name is new
            f.write(name)
        assert path.resolve().parent == folder.resolve()
        made.append(path.name)
    assert sorted(p.name for p in folder.iterdir()) == sorted(made)
    assert len(made) == len(set(made))
    assert {"x.md", "x (2).md", "x (3).md", "_CON.md", "hidden.md"} <= set(made)
    assert list(tmp_path.iterdir()) == [folder]


def test_unique_path_numbers_taken_names(tmp_path: Path) -> None:
    assert unique_path(tmp_path, "a.md") == tmp_path / "a.md"
    (tmp_path / "a.md").write_text("1")
    (tmp_path / "a (2).md").write_text("2")
    assert unique_path(tmp_path, "a.md") == tmp_path / "a (3).md"
    (tmp_path / "b.md").symlink_to(tmp_path / "missing")  # dangling: still taken
    assert unique_path(tmp_path, "b.md") == tmp_path / "b (2).md"
    assert unique_path(tmp_path, "noext") == tmp_path / "noext"


def test_unique_path_in_a_symlinked_folder(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    path = unique_path(tmp_path / "link", "a.md")
    assert path.resolve() == real / "a.md"


@pytest.mark.parametrize("name", ["", ".", "..", "../x.md", "a/b.md", "a\\b.md", "a\x00.md"])
def test_unique_path_refuses_anything_but_a_plain_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafeName):
        unique_path(tmp_path, name)
