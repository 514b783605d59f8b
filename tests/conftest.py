"""Shared helpers: compose configs with Hydra's compose API, run the commands as a user would, read results.

Short runs use the ``debug=quick`` preset (conf/debug/quick.yaml: 5 epochs,
evaluated every epoch) with the few overrides a test needs on top.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest
from hydra import compose, initialize_config_dir
from hypothesis import HealthCheck, settings
from omegaconf import DictConfig
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
BIN = Path(sys.executable).parent  # the console scripts of pyproject.toml, installed beside this Python
QUICK = "debug=quick"

# Property tests (test_fuzz.py): the same draws on every CI run; `--hypothesis-profile=long` by hand draws
# ten times as many, at random, and remembers failures in .hypothesis/ to replay them first.
_SLOW_DRAWS = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture]
settings.register_profile("ci", max_examples=1000, derandomize=True, database=None, deadline=None,
                          suppress_health_check=_SLOW_DRAWS, print_blob=True)
settings.register_profile("long", max_examples=10000, deadline=None, suppress_health_check=_SLOW_DRAWS)
settings.load_profile("ci")


def compose_config(*overrides: str, hydra: bool = False) -> DictConfig:
    """The config that `python train.py OVERRIDES` would run with (``hydra``: with its hydra node)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra)


def run_cli(
    command: str, *args: str, cwd: Path | None = None, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """A user's command in a subprocess: ``train.py`` (run from ``cwd``, where outputs/ or multirun/ go)
    or a console script (``hreg-resume``, ``hreg-eval``, ``hreg-report``, ``hreg-study``, ``hreg-mnist``)."""
    argv = [sys.executable, str(REPO / "train.py")] if command == "train.py" else [str(BIN / command)]
    return subprocess.run([*argv, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=cli_env(env))


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a user's command: Hydra's short error messages, no Python warnings."""
    return {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONWARNINGS": "ignore", **(extra or {})}


def run_train(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    """`python train.py ARGS` from ``cwd``."""
    return run_cli("train.py", *args, cwd=cwd, **kwargs)


def start_train(*args: str, cwd: Path, output: IO[str] | int = subprocess.PIPE) -> subprocess.Popen:
    """`python train.py ARGS` from ``cwd`` in the background (to be interrupted or killed); stdout and stderr
    together go to ``output`` (a pipe by default)."""
    return subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=cli_env(),
                            stdout=output, stderr=subprocess.STDOUT, text=True)


def read_result(run_dir: Path) -> dict:
    """result.json as the file holds it (the schema is what the tests check)."""
    return json.loads((run_dir / "result.json").read_text())


def events(run_dir: Path) -> EventAccumulator:
    """A run's TensorBoard event files, read back as TensorBoard reads them (every value kept)."""
    acc = EventAccumulator(str(run_dir), size_guidance={"histograms": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def wait_for(condition, what: str, timeout: float = 240, log: Path | None = None):
    """``condition()``'s first true value, polled; an AssertionError naming ``what`` after ``timeout`` s, with the
    tail of ``log`` (the process waited on) when there is one: a timeout in CI says why."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def one_error_line(proc: subprocess.CompletedProcess, prog: str = "hreg") -> str:
    """The single `PROG: error: ...` line a mistake gets (exit code 2, no traceback); returns its message."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"{prog}: error: "), proc.stderr
    return line.removeprefix(f"{prog}: error: ")


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make test`` runs a worker per core), each worker's torch and the commands it
    starts take one thread (``threads=auto`` honours OMP_NUM_THREADS): workers side by side then share the
    cores instead of spinning against each other."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"


#: The slowest test files, slowest first (``pytest --durations``). pytest-xdist's ``loadfile`` hands out files in
#: collection order: started first, the long ones do not leave one worker busy alone at the end.
SLOWEST_FIRST = ("test_cluster.py", "test_stacked.py", "test_outage.py", "test_slurm.py", "test_lightning.py",
                 "test_sweep.py", "test_dashboard.py", "test_reliability.py", "test_lifecycle.py", "test_pool.py",
                 "test_hydra_suites.py", "test_pins.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Test files in SLOWEST_FIRST order, then the others as collected (each file's tests keep their order)."""
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    path.mkdir()
    return path
