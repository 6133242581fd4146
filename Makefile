# Every target installs what it needs first. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# the command-line tool, made by `pip install -e .` in the install step ([project.scripts])
RAG := $(VENV)/bin/rag
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
# Where torch comes from. Empty: decided by `install-torch` (CPU build on CPU machines).
TORCH_INDEX ?=
STAMP := $(VENV)/.installed
DOCS ?= data/samples

.DEFAULT_GOAL := help
.PHONY: help install run ask test test-fast lint bench bench-scale eval clean browser ocr

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv and install everything, with the `rag` command (CPU torch on CPU machines)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@$(MAKE) --no-print-directory install-torch
	$(PIP) install -q -e ".[dev,llm,eval]"
	@touch $(STAMP)

.PHONY: install-torch
install-torch:
	@if $(PY) -c "import torch" 2>/dev/null; then \
	  echo "torch $$($(PY) -c 'import torch; print(torch.__version__)') already installed"; \
	elif [ -n "$(TORCH_INDEX)" ]; then \
	  $(PIP) install -q "torch==$(TORCH_VERSION)" --index-url "$(TORCH_INDEX)"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then \
	  echo "NVIDIA GPU found: installing the CUDA build of torch"; \
	  $(PIP) install -q "torch==$(TORCH_VERSION)"; \
	elif $(PIP) download -q --no-deps --no-index -d $(VENV)/.torch-wheel "torch==$(TORCH_VERSION)" >/dev/null 2>&1; then \
	  echo "installing the CPU build of torch found on this machine"; \
	  $(PIP) install -q $(VENV)/.torch-wheel/torch-*.whl; \
	else \
	  echo "no GPU: installing the CPU build of torch"; \
	  $(PIP) install -q "torch==$(TORCH_VERSION)" --index-url https://download.pytorch.org/whl/cpu; \
	fi

Q ?= How long is the warranty on an Aurora kettle, and how can it be extended?

HOST ?= 127.0.0.1
PORT ?= 8501

run: install ## the chat on http://127.0.0.1:8501: rag serve (ingests data/samples, or DOCS=folder, when the index is empty)
	@trap : INT; $(RAG) serve --docs $(DOCS) --host $(HOST) --port $(PORT) || [ $$? -eq 130 ]

ask: install ## rag ask Q="your question": an answer from the index (local LLM unless OPENAI_BASE_URL is set)
	$(RAG) ask "$(Q)"

CHROMIUM ?= /usr/bin/chromium

browser: ## install Debian's chromium for the browser tests (never `playwright install`)
	@if [ -x "$(CHROMIUM)" ]; then echo "chromium: $(CHROMIUM)"; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium; \
	else echo "install chromium (Debian package) for the browser tests" >&2; exit 1; fi

TESSERACT ?= tesseract
OCR_PACKAGES ?= tesseract-ocr tesseract-ocr-eng

ocr: ## install Debian's tesseract-ocr, which reads scanned PDF pages and images (RAG_OCR)
	@if command -v $(TESSERACT) >/dev/null 2>&1; then echo "tesseract: $$(command -v $(TESSERACT))"; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q $(OCR_PACKAGES); \
	else echo "install Tesseract OCR (Debian package tesseract-ocr) to read scans" >&2; exit 1; fi

test: install browser ocr ## the whole suite: ruff, mypy, pytest (real model, real Chroma, a chroma server, chromium)
	$(PY) -m ruff check --no-cache .
	$(PY) -m mypy
	$(PY) -m pytest

test-fast: install ## the edit loop: ruff, mypy and the tests not marked slow, server or browser (a few minutes)
	$(PY) -m ruff check --no-cache .
	$(PY) -m mypy
	$(PY) -m pytest -q -m "not slow and not server and not browser"

lint: install ## ruff and mypy only
	$(PY) -m ruff check --no-cache .
	$(PY) -m mypy

bench: install ocr ## ingest speed: this project vs the LangChain tutorial pipeline; OCR per page (prints tables)
	$(PY) bench/ingest_bench.py
	$(PY) bench/ocr_bench.py --threads

bench-scale: install ## query latency at 10k and 100k passages, embedded and `chroma run` (about 15 min; SIZES="1000000" on purpose)
	$(PY) bench/query_scale.py --sizes $(or $(SIZES),10000 100000)

EVAL ?= qa data/eval/samples-qa.jsonl --docs data/samples -c hybrid

eval: install ## rag eval: the sample question set with the local LLM; EVAL="…" for others
	$(RAG) eval $(EVAL)

clean: ## delete runtime state and caches (data/store, data/cache) and the virtualenv (keeps data/chats, data/documents)
	rm -rf data/store data/cache $(VENV)
