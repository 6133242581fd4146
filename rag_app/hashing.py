"""A file's SHA-256, the one way the project computes it: the ingest's file records, the UI's
uploads, the bundled model's check and the ONNX cache's file list."""

from __future__ import annotations

import hashlib
from pathlib import Path

BLOCK = 1 << 20  # bytes read at a time: memory stays flat whatever the file's size


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of the bytes of `path`, read block by block."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()
