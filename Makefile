# Two entry points, each sets up .venv on first use:
#   make repro   fetch the raw datasets the runs need (when absent), then run the pipeline
#   make test    run the test suite
#   make plots   dvc plots show, rendered without internet (dvc_plots/index.html)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: repro test lint bench setup plots

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	# torchattacks (the evaluate stage's AutoAttack masking check, and the FGSM/PGD/APGD oracle of
	# tests/test_adversarial.py and tests/test_masking.py) pins an old `requests` that conflicts
	# with DVC's; it needs nothing else that is not already installed, hence --no-deps
	$(BIN)/pip install --quiet --no-deps "torchattacks>=3.5"
	# `dvc plots show --html-template .venv/offline-plots.html`: Vega's libraries inlined
	$(BIN)/python -m fragile_neurons.reporting.offline $(VENV)/offline-plots.html
	touch $(STAMP)

repro: $(STAMP)
	$(BIN)/python -m fragile_neurons.interface.fetch
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc repro

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" pytest -q

plots: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc plots show --html-template $(VENV)/offline-plots.html

lint: $(STAMP)
	$(BIN)/ruff check src stages tests benchmarks
	$(BIN)/ruff format --check src stages tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/scan_speed.py
