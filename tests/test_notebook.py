"""notebooks/evaluation.ipynb runs headless on a small subset and draws its figures.

The notebook is executed with nbclient in a real kernel, from `notebooks/` (so it must find the
repository root itself), with its `parameters` cell overridden: 4 questions, no LLM, and the
report and index under tmp_path. The real path runs: ingest of data/samples, the evaluation,
the report, and the UMAP map of the collection (36 chunks: UMAP, not the PCA fallback).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "evaluation.ipynb"

pytestmark = pytest.mark.slow


def _code_cells(nb: Any) -> list[Any]:
    return [c for c in nb.cells if c.cell_type == "code"]


def test_notebook_is_saved_without_outputs() -> None:
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    for cell in _code_cells(nb):
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0] is _code_cells(nb)[0]
    # the notebook defines no pipeline of its own: everything comes from the package
    assert not any("def " in c.source and "find_repo_root" not in c.source
                   and "progress" not in c.source for c in _code_cells(nb))


@pytest.mark.timeout(420)
def test_notebook_runs_headless_and_draws_its_figures(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    out, index = tmp_path / "out", tmp_path / "index"
    params.source += (  # the notebook's own values stay defined; these win
        "\n\n# overridden by tests/test_notebook.py\n"
        "LIMIT = 4\nUSE_LLM = False\nJUDGE = False\n"
        'CONFIGS = ["dense", "hybrid", "hybrid-mmr:mode=hybrid,mmr=true"]\n'
        f"OUT = {str(out)!r}\nINDEX_DIR = {str(index)!r}\n")
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as exc:  # show the failing cell's error
        pytest.fail(f"the notebook failed: {str(exc)[-3000:]}")

    outputs = [o for c in _code_cells(nb) for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3, "metric bars, latency and the embedding map"
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert f"repository: {REPO}" in text
    assert "UMAP: 36 chunks" in text or "UMAP:" in text, text[-2000:]
    assert "PCA" not in text.split("UMAP:")[-1].splitlines()[0]
    tables = [o for o in outputs if "text/html" in o.get("data", {})]
    assert tables, "the metric table"

    results = json.loads((out / "results.json").read_text())["results"][0]
    assert [r["label"] for r in results["runs"]] == ["dense", "hybrid", "hybrid-mmr"]
    assert all(r["metrics"]["questions"] == 4 for r in results["runs"])
    assert results["meta"]["use_llm"] is False
    assert (out / "report.md").is_file() and list(out.glob("*.png"))
    assert (index / "store").is_dir()
    assert sys.executable  # the kernel is this interpreter's (jupyter_client maps "python")
