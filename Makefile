# The two commands of the README (`make demo`, `make test`) do all the set-up:
# they create .venv when missing and install the package with its extras (pip, which
# takes torch/torchvision from this machine's local wheel store).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
EXTRAS := dev,metrics,text,stream,llm,speech
STAMP := $(VENV)/.neurodecode-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export NEURODECODE_OFFLINE := 1
export MPLBACKEND := Agg
PYTEST_ARGS ?= -n 2

.PHONY: install demo test test-slow test-real test-real-chains lint docs bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/neurodecode reconstruct

lint: install
	$(VENV)/bin/ruff check --output-format concise neurodecode tests benchmarks
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-real: install ; $(PY) -m pytest -m "realarch and not chain" -p no:randomly $(PYTEST_ARGS)

test-real-chains: install ; $(PY) -m pytest -m chain -p no:randomly -n 0

test-slow: install
	$(PY) -m pytest -m slow

docs: install
	$(VENV)/bin/mkdocs build --strict

bench: install
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info site
