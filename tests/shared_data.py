"""Where the shared test bed lives (`../shared` beside the repository), for real-document tests.

A fresh clone elsewhere has no `../shared`; tests that need it skip with a clear reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"


def shared_path(*parts: str) -> Path:
    """`SHARED / parts…`, or skip the calling test when that path is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        shown = "/".join(("..", "shared", *parts))
        pytest.skip(f"{shown} not present (real-document tests need the shared test bed)")
    return path
