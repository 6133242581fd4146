"""`rag ingest PATH [PATH…]` (also `python -m ingest`, `rag-ingest`): sync folders of documents
into the index."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The exit codes are the table every command shares (rag_app/errors.py), under the names this
# module has always exported.
from rag_app.errors import EXIT_BUG as EXIT_BUG
from rag_app.errors import (
    EXIT_CODES_HELP,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_UNAVAILABLE,
    ConfigError,
    RagError,
    report_error,
)
from rag_app.errors import EXIT_USAGE as EXIT_USAGE
from rag_app.helptext import examples, wrap
from rag_app.settings import Settings, load_settings

EXIT_STORE = EXIT_UNAVAILABLE
PROG = "python -m ingest"

EXAMPLES = (
    ("./docs", "sync a folder (re-run after edits)"),
    ("./docs ./notes/faq.md", "several folders and single files"),
    ("./docs --dry-run", "show what would change, touch nothing"),
    ("./docs --watch", "keep the index in sync as files change (Ctrl+C stops)"),
    ("./docs --password s3cret", "try this password on encrypted PDFs"),
    ("./docs --model intfloat/e5-small-v2 --rebuild",
     "switch model: build a new index, then swap"),
    ("./docs --json > report.json", "machine-readable summary"),
)


def epilog(prog: str = PROG) -> str:
    return (f"{examples(prog, EXAMPLES)}\n\n"
            "The same command: rag ingest, python -m ingest, rag-ingest.\n"
            "Settings come from RAG_* environment variables and .env (see .env.example); "
            f"options win.\n\n{EXIT_CODES_HELP}\n")


EPILOG = epilog()


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=wrap("Load PDFs, Markdown, text and HTML, split them into chunks, embed them "
        "and store them in Chroma. Re-running syncs: unchanged files cost nothing, changed "
        "files are replaced, deleted files are removed."),
        epilog=epilog(prog),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="folders or files")
    p.add_argument("--collection", help="collection name (RAG_COLLECTION)")
    p.add_argument("--store", type=Path, metavar="DIR",
                   help="folder for the local store and state (RAG_STATE_DIR)")
    p.add_argument("--model", help="sentence-transformers model name or path "
                   "(RAG_EMBEDDING_MODEL)")
    p.add_argument("--chunk-tokens", type=int, metavar="N",
                   help="chunk size in model tokens (RAG_CHUNK_TOKENS)")
    p.add_argument("--chunk-overlap", type=int, metavar="N",
                   help="overlap in model tokens (RAG_CHUNK_OVERLAP)")
    p.add_argument("--password", action="append", default=[], metavar="PW",
                   help="password to try on encrypted PDFs (repeatable)")
    p.add_argument("--password-for", nargs=2, action="append", default=[],
                   metavar=("GLOB", "PW"), help="password for matching files only, e.g. "
                   "--password-for 'contracts/*.pdf' s3cret (repeatable)")
    p.add_argument("--password-file", type=Path, metavar="FILE",
                   help="file with one password per line (keeps them out of shell history)")
    p.add_argument("--dry-run", action="store_true", help="report what would change; write "
                   "nothing, load no model")
    p.add_argument("--rebuild", action="store_true", help="build a fresh collection from "
                   "every file the index holds plus the given paths, and switch to it when "
                   "complete (needed after changing model or chunking)")
    p.add_argument("--drop-missing", action="store_true", help="let files under folders that "
                   "are gone or empty leave the index (by default they are kept, and a rebuild "
                   "that would lose them is refused)")
    p.add_argument("--failed-files", choices=("keep", "remove"), default=None,
                   help="an indexed file that now fails to load: keep its previous version "
                   "searchable (default, RAG_FAILED_FILES) or remove it from the index")
    p.add_argument("--watch", action="store_true", help="keep the index in sync: after the "
                   "first sync, sync again each time files are added, changed, renamed or "
                   "deleted (once they have been quiet for a second), one line per sync, until "
                   "Ctrl+C. The writer lock is taken for each sync only")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout "
                   "(with --watch: one JSON line per sync)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    return p


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The environment's settings with the options on top; a bad value is a ConfigError naming
    the setting and the option or environment variable that gave it."""
    overrides: dict[str, Any] = {}
    options: dict[str, str] = {}
    for option, field in (("collection", "collection"), ("store", "state_dir"),
                          ("model", "embedding_model"), ("chunk_tokens", "chunk_tokens"),
                          ("chunk_overlap", "chunk_overlap"),
                          ("failed_files", "failed_files")):
        value = getattr(args, option)
        if value is not None:
            overrides[field] = value
            options[field] = "--" + option.replace("_", "-")
    return load_settings(overrides, options=options)


def _passwords(args: argparse.Namespace) -> list[str]:
    passwords = list(args.password)
    if args.password_file:
        try:
            lines = args.password_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"Cannot read --password-file {args.password_file}: "
                              f"{exc.strerror}") from None
        passwords.extend(line for line in lines if line)
    return passwords


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """`rag ingest ARGS`, `python -m ingest ARGS` and `rag-ingest ARGS`: the exit code."""
    args = build_parser(prog).parse_args(argv)
    from ingest.report import make_reporter, print_summary

    try:
        settings = settings_from_args(args)
        logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
        passwords = _passwords(args)
        interactive = sys.stderr.isatty() and not args.quiet and not args.json
        reporter = make_reporter(interactive=interactive, quiet=args.quiet)
        if args.watch:
            if args.dry_run:
                raise ConfigError("--watch writes the index: it cannot go with --dry-run")
            return watch(settings, args, passwords=passwords, reporter=reporter,
                         command=redact_command(list(argv or sys.argv[1:]), prog))
        report = run(settings, args.paths, passwords=passwords,
                     file_passwords=[tuple(pair) for pair in args.password_for],
                     dry_run=args.dry_run,
                     rebuild=args.rebuild, reporter=reporter,
                     drop_missing_roots=args.drop_missing,
                     command=redact_command(list(argv or sys.argv[1:]), prog))
    except KeyboardInterrupt:
        print("interrupted: the next run picks up where this one stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    except RagError as exc:  # ConfigError: 2; store, embedding and other errors: 3
        return report_error(exc)
    except Exception as exc:  # noqa: BLE001 - not exit 1, which means "some files failed"
        return _bug(exc)
    try:
        if args.json:
            print(json.dumps(report.to_dict(), indent=2))
        elif not args.quiet:
            print_summary(report)
    except Exception as exc:  # noqa: BLE001 - the run is done; only the summary broke
        return _bug(exc)
    return EXIT_SOME_FAILED if report.failed else EXIT_OK


def watch(settings: Settings, args: argparse.Namespace, *, passwords: Sequence[str],
          reporter: Any, command: str) -> int:
    """`--watch`: sync, then sync again after every settled burst of changes (ingest/watch.py),
    one line per sync that changed something (or one JSON line per sync with --json). Ends
    with Ctrl+C (exit 130), or with an error that would fail every sync."""
    from ingest.watch import Round, round_line, watch_and_sync

    said = ""  # the last error printed: a store locked for a minute is said once

    def on_round(round_: Round) -> None:
        nonlocal said
        if args.json:
            print(json.dumps(round_.to_dict()), flush=True)
        elif round_.number == 0 or round_.error != said or round_.changed_anything:
            if not args.quiet or round_.error or (round_.report and round_.report.failed):
                print(round_line(round_), flush=True)
        said = round_.error
        if round_.number == 0 and not args.quiet and not args.json:
            names = ", ".join(str(p) for p in args.paths)
            print(f"watching {names} for changes (Ctrl+C stops)", file=sys.stderr, flush=True)

    try:
        watch_and_sync(settings, args.paths, on_round=on_round, first_reporter=reporter,
                       command=command, passwords=passwords,
                       file_passwords=[tuple(pair) for pair in args.password_for],
                       rebuild=args.rebuild, drop_missing_roots=args.drop_missing)
    except KeyboardInterrupt:
        print("stopped watching: the index is as of the last sync (one cut short is finished "
              "by the next run)", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


def _bug(exc: Exception) -> int:
    """One line on stderr for an error no code path expected (exit 4); the traceback only at
    DEBUG."""
    return report_error(exc)


def run(settings: Settings, paths: Sequence[Path], *, passwords: Sequence[str] = (),
        file_passwords: Sequence[tuple[str, str]] = (), dry_run: bool = False,
        rebuild: bool = False, reporter: Any = None, command: str = "python -m ingest",
        drop_missing_roots: bool = False) -> Any:
    """Sync `paths` into the configured collection, holding the single-writer lock."""
    from ingest.entry import sync_paths

    return sync_paths(settings, paths, passwords=passwords, file_passwords=file_passwords,
                      dry_run=dry_run, rebuild=rebuild, reporter=reporter, command=command,
                      drop_missing_roots=drop_missing_roots)


_SECRET_OPTIONS = {"--password": 1, "--password-for": 2}


def redact_command(argv: Sequence[str], prog: str = PROG) -> str:
    """The command line as shown to a second writer, option values that are secrets hidden."""
    out: list[str] = []
    hide = 0
    for arg in argv:
        if hide:
            out.append("***")
            hide -= 1
            continue
        name, eq, _ = arg.partition("=")
        if name in _SECRET_OPTIONS:
            out.append(f"{name}=***" if eq else name)
            hide = 0 if eq else _SECRET_OPTIONS[name]
            if eq and name == "--password-for":
                hide = 1  # --password-for=GLOB PW: the password is the next argument
            continue
        out.append(arg)
    return " ".join([prog, *out])
