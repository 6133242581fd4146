"""The project's exceptions. Messages name the thing that is wrong and what to do about it.

They are translated for people only at the edges: an exit code in the CLIs (`exit_code`, one
table for every command: `rag ingest|ask|stats|serve|api|eval` and their `python -m` aliases),
`st.error` in the UI.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

# --- exit codes: one table for every command -------------------------------------------------
EXIT_OK = 0
EXIT_SOME_FAILED = 1  # the run finished, but some files could not be ingested (ingest only)
EXIT_USAGE = 2  # bad options or configuration (argparse also exits 2), or a missing package
EXIT_UNAVAILABLE = 3  # the store or a model is unavailable: locked, unreachable, another model
EXIT_BUG = 4  # an unexpected error (a bug): one line on stderr; see RAG_LOG_LEVEL=DEBUG
EXIT_INTERRUPTED = 130  # Ctrl+C

EXIT_CODES_HELP = """\
exit codes (the same for every rag command):
  0    done (ingest: every file fine)
  1    ingest finished, but some files failed (see its table)
  2    bad options or configuration: the message names the setting and the environment
       variable to fix (RAG_*, OPENAI_*, CHROMA_*, or .env), or a missing package
  3    store or model unavailable: the store is locked by another writer, the server is
       unreachable, the index was built with another model, the LLM or embedding model failed
  4    unexpected error, a bug: please report it (RAG_LOG_LEVEL=DEBUG shows the traceback)
  130  interrupted (Ctrl+C)"""


class RagError(Exception):
    """Base class for every error this project raises on purpose."""

    exit_status = EXIT_UNAVAILABLE  # the code a command exits with (see EXIT_CODES_HELP)


class ConfigError(RagError):
    """A setting or option is invalid."""

    exit_status = EXIT_USAGE


def exit_code(exc: BaseException) -> int:
    """The exit code for an error that ended a command: the one table every CLI shares."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, RagError):
        return exc.exit_status
    return EXIT_BUG


def report_error(exc: BaseException, stream: TextIO | None = None) -> int:
    """Say what ended a command in one line on stderr and return its exit code. An error no
    code path expected is named as a bug; its traceback is logged at DEBUG only."""
    out = stream if stream is not None else sys.stderr
    code = exit_code(exc)
    if isinstance(exc, BrokenPipeError):  # the reader left (`rag stats --json | head`): done
        import os

        try:  # no second error when Python flushes stdout at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return EXIT_OK
    if isinstance(exc, KeyboardInterrupt):
        print("interrupted", file=out)
    elif isinstance(exc, RagError):
        print(f"error: {exc}", file=out)
    else:
        logging.debug("unexpected error", exc_info=exc)
        message = " ".join(str(exc).split())
        detail = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
        if len(detail) > 300:
            detail = detail[:299] + "…"
        print(f"error: unexpected {detail} -- this is a bug, please report it "
              "(RAG_LOG_LEVEL=DEBUG shows the traceback)", file=out)
    return code


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
