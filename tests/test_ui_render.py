"""Nothing that is not ours reaches a Markdown-rendering Streamlit call unescaped
(REVIEW-ui-security H1, L2, L11), checked two ways without a browser:

- statically, on every call site in rag_app/ui: the label, body, caption, help or progress text
  given to any Streamlit call that renders Markdown is a literal, a number, or `md(...)`
  (rag_app/ui/text.py), possibly joined with other such pieces, or a local variable built only
  from them. A new `st.button(f"{name}")` fails here, wherever it is added;
- the pieces the page is made of: `md`, `short_paths` and the streamed answer (escaped whole,
  never piece by piece).

The page drawn from hostile headings and file names is tests/test_ui_hostile.py (AppTest) and
tests/test_ui_browser.py (chromium).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

UI = Path(__file__).resolve().parents[1] / "rag_app" / "ui"

# Streamlit calls whose first argument is rendered as Markdown (a body or a widget label).
FIRST_ARG = {
    "markdown", "caption", "error", "warning", "info", "success", "toast", "title", "header",
    "subheader", "write", "exception", "button", "download_button", "link_button", "page_link",
    "form_submit_button", "expander", "popover", "status", "spinner", "checkbox", "toggle",
    "radio", "slider", "select_slider", "selectbox", "multiselect", "text_input", "text_area",
    "number_input", "date_input", "time_input", "file_uploader", "camera_input", "color_picker",
    "chat_input", "pills", "segmented_control", "metric", "tabs",
}
# Keyword arguments rendered as Markdown wherever they appear.
KEYWORDS = {"label", "body", "help", "caption", "text", "placeholder", "captions"}
# Calls whose second positional argument is rendered as Markdown.
SECOND_ARG = {"progress": 1}
# Calls that are safe by construction, with the reason.
ALLOWED = {
    "st.html(html)": "passage_html and markdown_html escape every character of the text and add "
                     "only their own tags (<mark>, and markdown_html's p, strong, table…)",
}
SAFE_CALLS = {"md", "md_rich", "shown_md", "len", "int", "float", "round"}
# format specs that only numbers accept (a string given `:.2f` raises instead of rendering)
NUMERIC_SPEC = re.compile(r".*[bdeEfFgGnoxX%]$")


def _sources() -> list[Path]:
    return sorted(UI.rglob("*.py"))


class _Checker:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.source = path.read_text()
        self.tree = ast.parse(self.source)
        self.parents: dict[ast.AST, ast.AST] = {}
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node

    def _scope(self, node: ast.AST) -> ast.AST:
        while node in self.parents:
            node = self.parents[node]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                return node
        return self.tree

    def _assignments(self, scope: ast.AST, name: str) -> list[ast.expr] | None:
        """The values assigned to `name` in `scope`: a function (with what it nests) or the
        module's top level. None: a parameter (its callers decide), or nothing assigned."""
        if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = scope.args
            params = [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]
            if any(p is not None and p.arg == name for p in params):
                return None
            nodes: list[ast.AST] = list(ast.walk(scope))
        else:
            nodes = list(getattr(scope, "body", []))
        values: list[ast.expr] = []
        for node in nodes:
            if isinstance(node, ast.Assign) and node.value is not None:
                if any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                    values.append(node.value)
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                if isinstance(node.target, ast.Name) and node.target.id == name:
                    values.append(node.value)
            elif isinstance(node, ast.NamedExpr) and node.target.id == name:
                values.append(node.value)
        return values or None

    def safe(self, node: ast.expr, seen: frozenset[str] = frozenset()) -> bool:
        if isinstance(node, ast.Constant):
            return True
        if isinstance(node, ast.JoinedStr):
            return all(self.safe(v, seen) for v in node.values)
        if isinstance(node, ast.FormattedValue):
            parts = node.format_spec.values if isinstance(node.format_spec, ast.JoinedStr) else []
            spec = "".join(str(p.value) for p in parts if isinstance(p, ast.Constant))
            return bool(NUMERIC_SPEC.match(spec)) or self.safe(node.value, seen)
        if isinstance(node, ast.Call):
            return isinstance(node.func, ast.Name) and node.func.id in SAFE_CALLS
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self.safe(node.left, seen) and self.safe(node.right, seen)
        if isinstance(node, ast.IfExp):
            return self.safe(node.body, seen) and self.safe(node.orelse, seen)
        if isinstance(node, ast.BoolOp):
            return all(self.safe(v, seen) for v in node.values)
        if isinstance(node, ast.Name):
            if node.id in seen:
                return True  # a loop through assignments: decided by the others
            if node.id.isupper():  # a constant of our own code (NOT_FOUND, NO_LLM_LABEL)
                return True
            scope = self._scope(node)
            values = self._assignments(scope, node.id)
            if values is None and scope is not self.tree:
                values = self._assignments(self.tree, node.id)
            return values is not None and all(self.safe(v, seen | {node.id}) for v in values)
        return False

    def _files(self) -> set[str]:
        """Names bound to open files (`with open(…) as f`, `os.fdopen`): their `.write` writes
        bytes to disk, it renders nothing."""
        names = set()
        for node in ast.walk(self.tree):
            if isinstance(node, (ast.With, ast.AsyncWith)):
                for item in node.items:
                    call = item.context_expr
                    if isinstance(item.optional_vars, ast.Name) and isinstance(call, ast.Call) \
                            and ast.unparse(call.func) in ("open", "os.fdopen", "io.open"):
                        names.add(item.optional_vars.id)
        return names

    def violations(self) -> Iterator[str]:
        files = self._files()
        for node in ast.walk(self.tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            name = node.func.attr
            receiver = node.func.value
            if name == "write" and isinstance(receiver, ast.Name) and (
                    receiver.id in files or receiver.id == "os"):  # os.write: bytes to an fd
                continue
            rendered: list[ast.expr] = []
            if name in FIRST_ARG and node.args:
                rendered.append(node.args[0])
            if name in SECOND_ARG and len(node.args) > SECOND_ARG[name]:
                rendered.append(node.args[SECOND_ARG[name]])
            if name in FIRST_ARG | set(SECOND_ARG) | {"image", "Page", "column_config"} or \
                    name in ("TextColumn", "NumberColumn"):
                rendered += [k.value for k in node.keywords if k.arg in KEYWORDS]
            if name == "html" and ast.unparse(node) not in ALLOWED:
                rendered += node.args
            for arg in rendered:
                if not self.safe(arg):
                    yield (f"{self.path.relative_to(UI.parent.parent)}:{arg.lineno}: "
                           f"{ast.unparse(arg)}  (in {ast.unparse(node.func)})")


def test_every_markdown_sink_in_the_ui_takes_escaped_text_only() -> None:
    found = [v for path in _sources() for v in _Checker(path).violations()]
    assert not found, "unescaped text given to a Markdown-rendering call:\n" + "\n".join(found)


@pytest.mark.parametrize("snippet", [
    'st.button(f"[{c[\'number\']}] {c[\'location\']}")',
    'st.image(png, caption=f"{citation[\'source\']} — page {page}")',
    "st.error(message['error'])",
    "st.error(str(exc))",
    'st.warning(f"Cannot show the page: {exc}")',
    'with st.expander(f"{title} ({len(hits)})"):\n    pass',
    "label = f'{job.label}: done'\nst.success(label)",
    'st.progress(0.5, text=f"{job.label}")',
    'st.caption("; ".join(notes))',
])
def test_the_check_catches_the_reviewed_sinks(snippet: str) -> None:
    """Each sink of REVIEW-ui-security H1/L2, as it was written before the fix, is caught."""
    assert list(_probe(snippet).violations()), snippet


@pytest.mark.parametrize("snippet", [
    'st.button(f"[{int(c[\'number\'])}] {md(c[\'location\'])}")',
    "st.error(md(message['error']))",
    'st.caption(f"{hit[\'similarity\']:.2f} similarity")',
    "label = md(job.label)\nst.success(f'{label}: done')",
    'st.info(NOT_FOUND + (f"x{md(notice)}" if notice else ""))',
    "os.write(fd, payload)",  # bytes to a file descriptor (ui/conversations.py saves chats)
])
def test_the_check_accepts_escaped_text(snippet: str) -> None:
    assert not list(_probe(snippet).violations()), snippet


def _probe(snippet: str) -> _Checker:
    """A checker of `snippet`, as the body of a function whose parameters are its data."""
    names = sorted(set(re.findall(r"\b(c|citation|page|png|message|exc|title|hits|job|notes|"
                                  r"hit|notice)\b", snippet)))
    checker = _Checker.__new__(_Checker)
    checker.path = UI / "_probe.py"
    checker.source = snippet
    checker.tree = ast.parse(f"def page({', '.join(names)}):\n" + "\n".join(
        "    " + line for line in snippet.splitlines()))
    checker.parents = {c: n for n in ast.walk(checker.tree) for c in ast.iter_child_nodes(n)}
    return checker


# -- the pieces ---------------------------------------------------------------------------------
LIVE = re.compile(r"(?<!\\)(\]\(|!\[|<img|<a |www\.|https?:)", re.I)


@pytest.mark.parametrize("text", [
    "Quartz lamp ![q](http://127.0.0.1:8766/heading-image.png) [manual](http://x/y)",
    "report ![c](https:127.0.0.1:8766?x).pdf",
    "<img src=x onerror=alert(1)> <a href='http://evil'>x</a>",
    "see www.evil.example now",
])
def test_md_leaves_no_live_markup(text: str) -> None:
    from rag_app.ui.text import md

    assert not LIVE.search(md(text)), md(text)


def test_the_streamed_answer_is_escaped_whole_not_piece_by_piece() -> None:
    """REVIEW L11: `md('see ww') + md('w.evil.example now')` has no word joiner in `www.`, so
    the address was a live link while the answer streamed."""
    from rag_app.ui.chat import write_stream
    from rag_app.ui.text import md

    class Placeholder:
        def __init__(self) -> None:
            self.shown: list[str] = []

        def markdown(self, body: str) -> None:
            self.shown.append(body)

    closed: list[bool] = []

    def pieces() -> Iterator[str]:
        try:
            yield from ["see ww", "w.evil.example now, ![x", "](http://evil.example/a.png)"]
        finally:
            closed.append(True)

    out, written = Placeholder(), []
    write_stream(pieces(), written, out)
    whole = "".join(written)
    assert out.shown[-1] == md(whole)
    assert all(shown == md("".join(written[:i + 1])) for i, shown in enumerate(out.shown))
    assert "\u2060" in out.shown[1].split("see ")[1][:5]  # ww⁠w: no autolink
    assert "![" not in out.shown[-1].replace("\\!\\[", "") and closed == [True]


def test_short_paths_leave_no_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    from rag_app.ui.text import folder_label, short_paths

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path.parent))
    inside = tmp_path / "data" / "store"
    text = (f"No such file or folder: {inside / 'x.md'}. The store {inside} is being written "
            "by pid 12 on host h: /srv/elsewhere/report.pdf; see http://127.0.0.1:8000/v1 "
            "and ./relative/path and 3/4.")
    short = short_paths(text)
    assert "data/store/x.md. The store data/store is" in short
    assert "…/report.pdf;" in short
    assert "http://127.0.0.1:8000/v1" in short and "./relative/path" in short and "3/4" in short
    assert str(tmp_path) not in short and "/srv" not in short
    assert short_paths(f"in {tmp_path.parent / 'other' / 'a.pdf'}") == "in ~/other/a.pdf"
    uploads = tmp_path / "uploads"
    assert folder_label(uploads, uploads) == "uploads"
    assert folder_label(tmp_path / "docs", uploads) == "docs"
    assert folder_label("/srv/team/docs", uploads) == "…/docs"
