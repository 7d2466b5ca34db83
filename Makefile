# Two entry points for a fresh machine: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA ?= $(firstword $(wildcard ../shared/data/her2st))
DEMO_OUT ?= runs/demo

.PHONY: demo test lint docs install clean chromium

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt torch torchvision
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	$(PY) -m stem_st.evaluation.warm
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@test -n "$(DATA)" || { echo "error: HER2ST data not found; run 'make demo DATA=/path/to/her2st'"; exit 2; }
	$(VENV)/bin/stem demo --data $(DATA) --out $(DEMO_OUT)

# Debian's chromium renders report.html in a test; install it when we can (root + apt).
chromium:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } || \
	  echo "warning: chromium could not be installed; the report rendering test will be skipped"

test: $(STAMP) chromium
	$(PY) -m ruff check src tests benchmarks docs
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

# The documentation site, offline, into docs/_build/html (the tutorial runs once, cached by its source).
docs: $(STAMP)
	$(PY) -m sphinx -j 2 -W --keep-going -b html -d docs/_build/doctrees docs docs/_build/html
	@echo "open docs/_build/html/index.html"

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks docs
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) build *.egg-info docs/_build docs/benchmarks/results
