# Two entry points on a fresh machine: `make demo` (build the embedded demo and serve it) and
# `make test` (the test suite, what .ci/run runs). Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The demo needs the package only; the tests also need its test extra (reference libraries, a browser
# driver, real weights), which `make demo` on a fresh machine does not wait for.
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# pip byte-compiles what it installs in one process; installing with --no-compile and compiling with one
# worker per core saves ~30 s of a fresh install on 2 cores (PYTHONDONTWRITEBYTECODE machines never
# compile on import, so it must happen here). A file that does not compile is skipped, as pip skips it.
COMPILE := $(PY) -m compileall -q -j 0 "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null || true

.PHONY: venv demo test test-fast browser-deps bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile -e .
	$(COMPILE)
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install -q --no-compile -e '.[test]'
	$(PY) -m pip install -q --no-compile --no-deps 'quantus==0.6.0'  # test reference; see pyproject's test extra
	$(COMPILE)
	touch $(TEST_STAMP)

venv: $(TEST_STAMP)

# Debian's Chromium drives the browser tests (never `playwright install`).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

demo: $(STAMP)
	$(VENV)/bin/mmit-demo $(DEMO_ARGS)

test: $(TEST_STAMP) browser-deps
	$(PY) -m pytest -q -ra

test-fast: $(TEST_STAMP)
	$(PY) -m pytest -q -m "not slow and not browser"

bench: $(TEST_STAMP)
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) demo_out .pytest_cache
