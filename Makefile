# Everything a fresh machine needs, in two commands: `make train` and `make test`.
# Each creates .venv from requirements.lock when needed and provisions MNIST.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: train test data bench clean-venv

$(BIN)/.installed: requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip<27"
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

data: $(BIN)/.installed
	$(BIN)/hreg-mnist

train: data
	$(BIN)/python train.py $(ARGS)

# A pytest-xdist worker per core; each test file stays on one worker (its module fixtures run once).
test: data
	$(BIN)/python -m pytest -n auto --dist loadfile $(ARGS)

bench: data
	$(BIN)/python benchmarks/bench_run.py $(ARGS)

clean-venv:
	rm -rf $(VENV)
