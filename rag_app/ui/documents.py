"""The documents page: what is indexed, upload, delete, re-ingest — in the background."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import streamlit as st

from rag_app.ui.services import (
    Job,
    UploadRecord,
    check_upload_batch,
    read_manifest,
    save_upload,
    uploads_dir,
)
from rag_app.ui.state import explain, load_settings, services
from rag_app.ui.text import folder_label, md, short_paths

UPLOAD_TYPES = ["pdf", "md", "markdown", "txt", "text", "rst", "html", "htm", "docx", "pptx",
                "xlsx", "csv", "epub", "png", "jpg", "jpeg", "tif", "tiff"]  # = SUPPORTED_SUFFIXES


def render() -> None:
    settings = load_settings()
    st.title("Documents")
    try:
        svc = services()
        from rag_app.service import index_overview

        info = index_overview(settings)
    except Exception as exc:  # noqa: BLE001 - shown where it happens
        st.error(md(explain(exc)))
        return
    _upload(settings)
    _jobs(svc)
    uploads = uploads_dir(settings)
    manifest = read_manifest(uploads)
    indexed = {(Path(r.root) / r.source).resolve() for r in info.files} if info.exists else set()
    _not_indexed(svc, uploads, manifest, indexed)
    st.subheader("Indexed files")
    from ingest.entry import sync_line, sync_status  # when it last synced, what is watched

    st.caption(md(sync_line(sync_status(settings))))
    if not info.exists or not info.files:
        st.info("Nothing is indexed yet: upload files above, or run "
                "`python -m ingest FOLDER` in a terminal.")
        return
    st.caption(f"{len(info.files)} files, {int(info.pages)} pages, {int(info.chunks)} passages "
               f"in collection {md(info.collection)} ({md(short_paths(info.store))})")
    from rag_app.service import (
        kind_label,
        language_label,
        languages_line,
        length_label,
        ocr_label,
    )

    st.caption(md(languages_line(info.languages, info.languages_unknown)))
    if info.sizes:
        from rag_app.service import size_line

        st.caption(md(size_line(info.sizes)))
    # plain text (a data frame renders no Markdown), with no absolute path (REVIEW L8)
    def shown(r: Any) -> str:  # an upload shows the name it was uploaded under (REVIEW M3)
        rec = manifest.get(r.source) if Path(r.root).resolve() == uploads else None
        return r.source if rec is None or rec.name == r.source else f"{rec.name} ({r.source})"

    rows = [{"file": shown(r), "folder": folder_label(r.root, uploads), "kind": kind_label(r),
             "length": length_label(r), "OCR": ocr_label(r), "language": language_label(r),
             "chunks": r.chunks,
             "status": "failed (previous version kept)" if r.error else
             ("pending" if r.state != "done" else "indexed"),
             "last error": short_paths(r.error or "")} for r in info.files]
    st.dataframe(rows, hide_index=True, width="stretch",
                 column_config={"folder": st.column_config.TextColumn(width="small")})
    labels = {r.key: f"{shown(r)}  ({folder_label(r.root, uploads)})" for r in info.files}
    chosen = st.selectbox("A file", list(labels), format_func=labels.__getitem__,
                          key="doc-pick")
    record = next(r for r in info.files if r.key == chosen)
    path = Path(record.root) / record.source
    uploaded = _is_upload(settings, path)
    c1, c2 = st.columns(2)
    def reingest() -> None:
        svc.submit_ingest([path], label=f"re-ingest {record.source}")

    c1.button("Re-ingest", icon=":material/refresh:", key="doc-reingest",
              disabled=not path.is_file(), on_click=reingest,
              help="Parse and index this file again (it is skipped if unchanged)")
    confirm = c2.checkbox("Confirm delete", key="doc-confirm",
                          help="Saved chats keep the passages their answers quoted; their "
                          "citations then say the document was deleted and no longer open it.")

    def delete() -> None:
        # the file as it is now: a newer upload of this name, arriving before the delete
        # runs, is kept (REVIEW M5)
        svc.submit_delete([record.key], label=f"delete {record.source}",
                          delete_files=[path] if uploaded else [])
        st.session_state["doc-confirm"] = False

    c2.button("Delete", icon=":material/delete:", key="doc-delete", disabled=not confirm,
              type="primary", on_click=delete)
    if not uploaded:
        st.caption("Deleting removes this file from the index only: it lives outside the "
                   "uploads folder, so a later `python -m ingest` of its folder adds it again.")


def _is_upload(settings: Any, path: Path) -> bool:
    try:
        return path.resolve().is_relative_to(uploads_dir(settings))
    except OSError:
        return False


def _upload(settings: Any) -> None:
    st.subheader("Add documents")
    key = f"uploader-{st.session_state.get('uploader_round', 0)}"
    files = st.file_uploader(
        f"Your documents, up to {settings.upload_max_mb:g} MB each (the kinds this app reads "
        "are listed below)",
        # with their dots: Streamlit reads a bare "text" as the MIME wildcard text/* (so a
        # .text file was not offered, and any text file was)
        type=[f".{t}" for t in UPLOAD_TYPES], accept_multiple_files=True, key=key,
        # whole megabytes, at least 1: Streamlit refuses 0 (REVIEW L3); save_upload keeps the
        # exact limit
        max_upload_size=max(1, math.ceil(settings.upload_max_mb)))
    if not files or not st.button("Add to the index", icon=":material/upload:",
                                  key="upload-go", type="primary"):
        return
    try:
        check_upload_batch(settings, [(f.name, f.size) for f in files])
    except Exception as exc:  # noqa: BLE001 - the budget's message says what to do
        st.error(md(explain(exc)))
        return
    saved: list[Path] = []
    for f in files:
        try:
            f.seek(0)
            saved.append(save_upload(settings, f.name, f))  # streamed: no copy (REVIEW L6)
        except Exception as exc:  # noqa: BLE001 - one bad file is reported, the rest go on
            st.error(f"{md(f.name)}: {md(explain(exc))}")
    if saved:
        names = ", ".join(p.name for p in saved)
        services().submit_ingest(saved, label=f"upload {names}")
        # a new key empties the uploader, so the same files are not ingested on every rerun
        st.session_state["uploader_round"] = st.session_state.get("uploader_round", 0) + 1
        st.rerun()


def _not_indexed(svc: Any, uploads: Path, manifest: dict[str, UploadRecord],
                 indexed: set[Path]) -> None:
    """Uploaded files that are not in the index (failed, refused while another program
    wrote, or not ingested yet), with retry and delete: never invisible orphans (REVIEW M5)."""
    if svc.busy():
        return  # their jobs may still be running
    from ingest.loaders import SUPPORTED_SUFFIXES

    waiting = sorted(p for p in uploads.iterdir()
                     if not p.name.startswith(".") and p.suffix.lower() in SUPPORTED_SUFFIXES
                     and p.is_file() and not p.is_symlink() and p.resolve() not in indexed)
    if not waiting:
        return
    st.subheader("Uploaded but not indexed")
    rows = []
    for p in waiting:
        rec = manifest.get(p.name)
        rows.append({"file": rec.name if rec else p.name, "stored as": p.name,
                     "status": "failed" if rec and rec.state == "failed" else "not indexed",
                     "reason": short_paths(rec.reason) if rec else ""})
    st.dataframe(rows, hide_index=True, width="stretch")
    names = [p.name for p in waiting]
    chosen = st.selectbox("An upload", names, key="upload-pick",
                          format_func=lambda n: f"{manifest[n].name} ({n})"
                          if n in manifest and manifest[n].name != n else n)
    path = uploads / chosen
    c1, c2 = st.columns(2)
    c1.button("Retry", icon=":material/refresh:", key="upload-retry",
              on_click=lambda: svc.submit_ingest([path], label=f"retry {chosen}"),
              help="Ingest this file again")
    c2.button("Delete file", icon=":material/delete:", key="upload-delete",
              on_click=lambda: svc.submit_delete([], label=f"delete {chosen}",
                                                 delete_files=[path]),
              help="Remove it from the uploads folder")


def _jobs(svc: Any) -> None:
    if not svc.jobs:
        return

    @st.fragment(run_every=1.0 if svc.busy() else None)
    def panel() -> None:
        jobs: list[Job] = list(reversed(svc.jobs))[:5]
        for job in jobs:
            _job(job)
        if not svc.busy() and st.session_state.get("jobs_seen") != len(svc.jobs):
            st.session_state["jobs_seen"] = len(svc.jobs)
            st.rerun()  # refresh the file list once the last job ended

    panel()


def stage_text(job: Job) -> str:
    """What a running job is doing, in words: which file of how many, and its stage (reading
    the file, then embedding its passages) with how far that stage is."""
    from ingest.outcomes import PARSE_SHARE

    if job.state == "queued":
        return "waiting for the job before it"
    if job.kind == "delete":
        return "removing from the index"
    if not job.current:
        return "looking at the files"
    which = (f"file {min(job.files_done + 1, job.files_total)} of {job.files_total}, "
             f"{job.current}: " if job.files_total > 1 else "")  # one file: named in the label
    if job.fraction < PARSE_SHARE:
        done = job.fraction / PARSE_SHARE
        stage = "reading the file" + (f" ({done:.0%} of its pages)" if done > 0 else "")
    else:
        done = (job.fraction - PARSE_SHARE) / (1 - PARSE_SHARE)
        stage = f"embedding its passages ({done:.0%})"
    return f"{which}{stage}"


def _job(job: Job) -> None:
    with st.container(border=True):
        label = md(job.label)
        if job.state in ("queued", "running"):
            st.progress(job.progress, text=f"{label}: {md(stage_text(job))}")
        elif job.state == "failed":
            st.error(f"{label}: {md(short_paths(job.error))}")
        else:
            st.success(f"{label}: done")
        if job.outcomes:
            st.dataframe([{**o, "reason": short_paths(str(o.get("reason") or ""))}
                          for o in job.outcomes], hide_index=True, width="stretch")
