"""The folder walk: which files a run looks at (`discover`), under which indexed folder each is
keyed, and what the walk could not see (so must not be taken as deleted). See ingest/sync.py's
module doc for what a run may delete.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ingest.loaders import kind_of
from ingest.outcomes import FileOutcome
from rag_app.errors import ConfigError

if TYPE_CHECKING:
    from rag_app.index.store import FileRecord


@dataclass(frozen=True, slots=True)


class Candidate:
    path: Path
    root: Path
    source: str  # relative to root, '/'-separated
    size: int
    mtime_ns: int

    @property
    def key(self) -> str:
        return file_key(self.root, self.source)


def file_key(root: Path, source: str) -> str:
    return f"{root}::{source}"


@dataclass(frozen=True, slots=True)


class Scope:
    """What a run is responsible for: a whole folder, a subfolder of it (a path given inside
    an indexed folder keeps that folder's keys), or one named file in it, and what the walk
    could not see (so must not be taken as deleted)."""

    root: Path
    source: str | None = None  # None: every file under root; "sub/dir/": every file under it
    found: int = 0  # candidate files the walk found
    unlisted: tuple[str, ...] = ()  # folders that could not be listed: "sub/dir/", "" for root
    unreadable: tuple[str, ...] = ()  # entries that could not be stat-ed

    def covers(self, record: FileRecord) -> bool:
        if record.root != str(self.root):
            return False
        if self.source is None or self.source == record.source:
            return True
        return self.source.endswith("/") and record.source.startswith(self.source)

    @property
    def empty_folder(self) -> bool:
        """A folder in which the walk found no file at all (empty, or not mounted)."""
        return (self.source is None or self.source.endswith("/")) and self.found == 0

    @property
    def folder(self) -> Path:
        """The folder walked (root, or the subfolder of it)."""
        return self.root / self.source if self.source and self.source.endswith("/") \
            else self.root

    def unsure_of(self, source: str) -> bool:
        """True when this run could not see whether `source` (relative to root) still exists."""
        return source in self.unreadable or any(source.startswith(p) for p in self.unlisted)


def discover(paths: Sequence[Path], indexed_roots: Iterable[Path | str] = (),
             ) -> tuple[list[Candidate], list[FileOutcome], list[Scope]]:
    """Walk the given folders (or files). Returns (candidates, skipped, scopes).

    Overlapping folders never store a file twice. `indexed_roots` are the folders the index
    already holds files of (their records' `root`); a file is keyed under the innermost of them
    that holds it, else under the outermost folder given now that holds it (else, for a single
    file, its own folder). So a path inside an indexed folder is synced as a part of that
    folder (`ingest docs` then `ingest docs/sub` keeps the keys `docs::sub/…`), and a folder
    that holds indexed folders leaves their files under their own keys (`ingest docs/sub` then
    `ingest docs` keeps `docs/sub::…`, and syncs docs/sub as a whole too). A file reached
    through two given paths is taken once.

    Hidden files and folders (name starting with '.') and unsupported types are skipped.
    A folder that cannot be listed, or an entry that cannot be stat-ed, is reported `failed`
    and recorded in its scope (`unlisted`, `unreadable`): the run goes on, and the files the
    index holds under it are kept.
    Symbolic links never lead out of a given folder, and each real folder and file is taken
    once: links that lead outside the folder, that loop (to the folder's own path), that are
    broken, or that lead to a file or folder the walk finds anyway are reported `skipped`. So
    is a name that is not valid UTF-8 (the index cannot store it), shown with \\xNN escapes.
    """
    candidates: list[Candidate] = []
    skipped: list[FileOutcome] = []
    scopes: list[Scope] = []
    record_roots = sorted({Path(r) for r in indexed_roots})
    given_dirs = [g for g in (_resolved(p) for p in paths) if g is not None]
    seen: set[str] = set()  # candidate keys, so a file under two given paths is taken once
    for given in paths:
        path = given.expanduser().resolve()
        if not _utf8_ok(str(path)):
            raise ConfigError(f"The path {_shown(str(path))} is not valid UTF-8: rename it")
        try:
            is_file, is_dir = path.is_file(), path.is_dir()
        except OSError as exc:
            raise ConfigError(f"Cannot read {given}: {exc.strerror}") from None
        unlisted: list[str] = []
        unreadable: list[str] = []
        files: Sequence[tuple[Path, os.stat_result | None]]
        if is_file:
            root, files = path.parent, [(path, None)]
            single: str | None = path.name
        elif is_dir:
            hidden: list[tuple[Path, bool]] = []
            failures: list[tuple[Path, OSError, bool]] = []
            odd: list[tuple[Path, bool, str]] = []
            root, files, single = path, _walk(path, hidden, failures, odd), None
            skipped.extend(FileOutcome(_shown(_rel(h, root)) + ("/" if is_folder else ""),
                                       "skipped", "hidden", str(root))
                           for h, is_folder in sorted(hidden))
            skipped.extend(FileOutcome(_shown(_rel(p, root)) + ("/" if is_folder else ""),
                                       "skipped", _shown(why), str(root))
                           for p, is_folder, why in sorted(odd))
            for where, error, listing in failures:
                rel = _rel(where, root)
                why = error.strerror or str(error)
                if listing:
                    prefix = "" if where == root else rel + "/"
                    unlisted.append(prefix)
                    reason = f"cannot list folder: {why}; the files indexed under it are kept"
                    skipped.append(FileOutcome(_shown(prefix) or "./", "failed", reason,
                                               str(root)))
                else:
                    unlisted.append(rel + "/")  # a file or a folder: either way, unknown
                    unreadable.append(rel)
                    skipped.append(FileOutcome(_shown(rel), "failed", f"cannot read: {why}",
                                               str(root)))
        else:
            raise ConfigError(f"No such file or folder: {given}")
        # Which indexed folders matter here: those holding this path or inside it.
        near = [r for r in record_roots if path.is_relative_to(r) or r.is_relative_to(path)]
        found: dict[Path, int] = {}
        for f, st in files:
            owner = _owner(f, near, given_dirs) or root
            source = f.relative_to(owner).as_posix()
            if kind_of(f) is None:
                skipped.append(FileOutcome(source, "skipped", "unsupported type", str(owner)))
                continue
            if st is None:
                try:
                    st = f.stat()
                except OSError as exc:
                    skipped.append(FileOutcome(source, "failed",
                                               f"cannot read: {exc.strerror}", str(owner)))
                    unreadable.append(f.relative_to(root).as_posix())
                    continue
            found[owner] = found.get(owner, 0) + 1
            cand = Candidate(f, owner, source, st.st_size, st.st_mtime_ns)
            if cand.key not in seen:
                seen.add(cand.key)
                candidates.append(cand)
        scopes.extend(_scopes(path if single else root, single is not None, near, given_dirs,
                              found, unlisted, unreadable))
    return candidates, skipped, scopes


def _resolved(given: Path) -> Path | None:
    """`given` resolved, if it is a folder (errors are reported by `discover` itself)."""
    try:
        path = given.expanduser().resolve()
        return path if path.is_dir() else None
    except (OSError, RuntimeError):
        return None


def _owner(path: Path, record_roots: Sequence[Path], given_dirs: Sequence[Path]) -> Path | None:
    """The folder `path` (a file, or a given folder) is keyed under: the innermost indexed
    folder holding it (or equal to it), else the outermost given folder holding it. Only
    folders whose walk reaches `path` count: not through a hidden folder (a walk skips it)."""
    inside = [r for r in record_roots if _reaches(r, path)]
    if inside:
        return max(inside, key=lambda r: len(r.parts))
    given = [g for g in given_dirs if _reaches(g, path)]
    return min(given, key=lambda g: len(g.parts)) if given else None


def _reaches(folder: Path, path: Path) -> bool:
    return path.is_relative_to(folder) and not any(
        name.startswith(".") for name in path.relative_to(folder).parts)


def _scopes(walked: Path, is_file: bool, record_roots: Sequence[Path],
            given_dirs: Sequence[Path], found: dict[Path, int], unlisted: list[str],
            unreadable: list[str]) -> list[Scope]:
    """The scopes of one given path (`unlisted`/`unreadable` are relative to the folder walked,
    or to a given file's folder). First the path itself under the folder that owns it: that
    folder whole, a subfolder of it ("sub/"), or one file. Then each indexed folder inside a
    walked folder (not hidden): it was walked whole, under its own keys."""
    folder = walked.parent if is_file else walked
    base = _owner(walked, record_roots, given_dirs) or folder
    inner = "" if base == folder else folder.relative_to(base).as_posix() + "/"
    if is_file:
        part: str | None = inner + walked.name
    else:
        part = inner or None
    scopes = [Scope(base, part, sum(found.values()), tuple(inner + u for u in unlisted),
                    tuple(inner + u for u in unreadable))]
    if is_file:
        return scopes
    for nested in record_roots:
        if nested == walked or not nested.is_relative_to(walked) or nested == base:
            continue
        rel = nested.relative_to(walked)
        if any(name.startswith(".") for name in rel.parts):
            continue  # never walked: hidden
        prefix = rel.as_posix() + "/"
        blind = [u[len(prefix):] for u in unlisted if u.startswith(prefix)]
        if any(prefix.startswith(u) for u in unlisted):  # a folder above it was not listed
            blind.append("")
        under = sum(n for owner, n in found.items() if owner.is_relative_to(nested))
        scopes.append(Scope(nested, None, under, tuple(blind),
                            tuple(u[len(prefix):] for u in unreadable if u.startswith(prefix))))
    return scopes


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _utf8_ok(name: str) -> bool:
    """False for a name with bytes that are not UTF-8 (os keeps them as lone surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(text: str) -> str:
    """`text` with the bytes of a non-UTF-8 name as \\xNN escapes: printable and storable."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _walk(root: Path, hidden: list[tuple[Path, bool]],
          failures: list[tuple[Path, OSError, bool]],
          odd: list[tuple[Path, bool, str]]) -> list[tuple[Path, os.stat_result]]:
    """Files under `root` (a resolved folder) with their stat, sorted, each real file once and
    never one outside `root`.

    Hidden entries (files or whole folders) go to `hidden` as (path, is_folder). Entries left
    out for another reason go to `odd` as (path, is_folder, reason): a name that is not UTF-8,
    and links that are broken, loop, lead outside `root`, or lead to a file or folder that is
    found anyway. A folder that cannot be listed, or an entry that cannot be stat-ed, goes to
    `failures` as (path, error, was_listing) and the walk goes on.

    Real folders are walked first and links only after, so a file reachable both ways keeps
    its real path; each real folder is walked once (tracked by (st_dev, st_ino)), so links to
    '.' or '..' end at once instead of nesting without end."""
    found: list[tuple[Path, os.stat_result]] = []
    files: dict[tuple[int, int], Path] = {}  # (st_dev, st_ino) -> where it was found
    try:
        top = root.stat()
    except OSError as exc:
        failures.append((root, exc, True))
        return found
    folders: set[tuple[int, int]] = {(top.st_dev, top.st_ino)}
    links: list[Path] = []

    def walk(start: Path) -> None:
        stack = [start]
        while stack:
            folder = stack.pop()
            try:
                entries = sorted(folder.iterdir())
            except OSError as exc:
                failures.append((folder, exc, True))
                continue
            for path in entries:
                if path.name.startswith(".") or not _utf8_ok(path.name):
                    try:
                        is_folder = path.is_dir()
                    except OSError:
                        is_folder = False
                    if path.name.startswith("."):
                        hidden.append((path, is_folder))
                    else:
                        what = "folder" if is_folder else "file"
                        odd.append((path, is_folder, f"{what} name is not valid UTF-8: rename it"))
                    continue
                try:
                    st = path.lstat()
                except OSError as exc:
                    failures.append((path, exc, False))
                    continue
                if stat.S_ISLNK(st.st_mode):
                    links.append(path)  # followed once the real folders are all known
                    continue
                ident = (st.st_dev, st.st_ino)
                if stat.S_ISDIR(st.st_mode):
                    if ident in folders:  # a bind mount of a folder inside itself
                        odd.append((path, True, "folder loop"))
                    else:
                        folders.add(ident)
                        stack.append(path)
                elif stat.S_ISREG(st.st_mode):
                    files.setdefault(ident, path)
                    found.append((path, st))

    walk(root)
    links.sort()
    for link in links:  # grows while the folders that links lead to are walked
        try:
            target = Path(os.path.realpath(link, strict=True))
            st = target.stat()
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                odd.append((link, False, "link loop"))
            elif exc.errno in (errno.ENOENT, errno.ENOTDIR):
                odd.append((link, False, "broken link"))
            else:
                failures.append((link, exc, False))
            continue
        ident = (st.st_dev, st.st_ino)
        is_folder = stat.S_ISDIR(st.st_mode)
        if is_folder and Path(os.path.realpath(link.parent)).is_relative_to(target):
            odd.append((link, True, "link loop"))  # to the folder it is in, or above
        elif not target.is_relative_to(root):
            odd.append((link, is_folder, "link leads outside the folder"))
        elif is_folder and ident in folders:
            odd.append((link, True, f"link to {_rel(target, root)}/, included anyway"))
        elif is_folder:
            folders.add(ident)
            walk(link)
        elif stat.S_ISREG(st.st_mode):
            if ident in files:
                odd.append((link, False, f"link to {_rel(files[ident], root)}, "
                                         "included anyway"))
            else:
                files[ident] = link
                found.append((link, st))
    found.sort(key=lambda item: item[0])
    return found
