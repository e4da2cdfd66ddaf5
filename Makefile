# Two entry points (see README): `make demo` and `make test`. Both create .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A pinned torch: on a GPU machine this is the CUDA build from PyPI, here the local CPU wheel.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup demo test clean

$(BIN)/bigkg: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]"
	@touch $@

setup: $(BIN)/bigkg

demo: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) out runs
