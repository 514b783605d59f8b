# Everything a fresh machine needs, in two commands: `make train` and `make test`.
# Each builds .venv from requirements.lock with uv when needed and provisions MNIST.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=
UV_VERSION := 0.13.9
UV := .uv/bin/uv
# uv does not read pip's configuration: hand it this machine's own wheel locations (a local find-links
# directory, a local index), if pip has any, so that torch comes from them as it would with pip.
export UV_FIND_LINKS ?= $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null)
export UV_EXTRA_INDEX_URL ?= $(shell $(PYTHON) -m pip config get global.extra-index-url 2>/dev/null)
export UV_INDEX_STRATEGY := unsafe-best-match
export UV_PYTHON_DOWNLOADS := never
# Python writes a module's bytecode (into .venv and src/, both ignored by git) the first time a process
# imports it; where PYTHONDONTWRITEBYTECODE is set, as on this project's machines, every process would
# compile torch's and Hydra's sources again (5 s a start). Compiling all of .venv at install instead
# (UV_COMPILE_BYTECODE) takes 20 s for 12801 files, most of them never imported. A process started
# outside make with the variable set reads that bytecode but writes none.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: train test data bench lock clean-venv

$(UV):
	PIP_ROOT_USER_ACTION=ignore $(PYTHON) -m pip install -qq --disable-pip-version-check --target .uv "uv==$(UV_VERSION)"

# The environment is exactly the lock (uv pip sync removes anything else; --seed keeps pip, which
# hreg-mnist downloads its source package with), then hreg itself, editable.
$(BIN)/.installed: requirements.lock pyproject.toml | $(UV)
	test -x $(BIN)/python || $(UV) venv --quiet --seed --python $(PYTHON) $(VENV)
	$(UV) pip sync --quiet --python $(BIN)/python requirements.lock
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

# Rewrite the lock from pyproject.toml (its dependencies, the test extra, and [tool.uv]'s override);
# uv keeps the versions of the present lock where they still fit, so a lock changes only where it must.
lock: | $(UV)
	cp requirements.lock requirements.lock.new
	$(UV) pip compile --quiet --python-version 3.11 --no-annotate --no-header --extra test pyproject.toml -o requirements.lock.new
	(echo "# Written by 'make lock' from pyproject.toml; one 'name==version' a line."; cat requirements.lock.new) > requirements.lock
	rm requirements.lock.new

data: $(BIN)/.installed
	$(BIN)/hreg-mnist

train: data
	$(BIN)/python train.py $(ARGS)

# A pytest-xdist worker per core; each test file stays on one worker (its module fixtures run once), and
# files go out in tests/conftest.py's order, slowest first (xdist would reorder them by their number of tests);
# the 20 slowest tests are listed at the end, to keep the suite's time in view.
test: data
	$(BIN)/python -m pytest -n auto --dist loadfile --no-loadscope-reorder --durations=20 $(ARGS)

bench: data
	$(BIN)/python benchmarks/bench_run.py $(ARGS)

clean-venv:
	rm -rf $(VENV) .uv
