"""The project's exceptions. Messages name the thing that is wrong and what to do about it.

They are translated for people only at the edges: `SystemExit` in the CLIs, `st.error` in the UI.
"""

from __future__ import annotations


class RagError(Exception):
    """Base class for every error this project raises on purpose."""


class ConfigError(RagError):
    """A setting or option is invalid."""


# --- loading ---------------------------------------------------------------------------------
class LoadError(RagError):
    """A file could not be turned into text. `reason` is a short, stable status label."""

    reason = "failed to parse"


class UnsupportedFile(LoadError):
    reason = "unsupported type"


class FileTooLarge(LoadError):
    reason = "too large"


class NeedsPassword(LoadError):
    reason = "needs password"


class NeedsOCR(LoadError):
    reason = "no text layer (needs OCR)"


class EmptyDocument(LoadError):
    reason = "no text"


class ParseError(LoadError):
    reason = "parse error"


class ParseTimeout(LoadError):
    reason = "parse timed out"


# --- store -----------------------------------------------------------------------------------
class StoreError(RagError):
    """The vector store cannot be used as asked."""


class FingerprintMismatch(StoreError):
    """The collection was built with another embedding model or chunking."""


class StoreLocked(StoreError):
    """Another process is writing to the same embedded store."""


class StoreUnavailable(StoreError):
    """The Chroma server cannot be reached."""


class EmbeddingError(RagError):
    """The embedding model cannot be loaded or used."""
