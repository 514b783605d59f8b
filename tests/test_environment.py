"""The environment the lock builds: consistent but for the one documented override (ARCHITECTURE.md, "Pins")."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

#: hydra-optuna-sweeper 1.3.0 declares optuna<3; the lock overrides it with Optuna 5 (pyproject.toml [tool.uv]).
KNOWN = "hydra-optuna-sweeper 1.3.0 has requirement optuna<3.0.0,>=2.10.0"


def test_pip_check_finds_no_conflict_but_the_documented_optuna_override():
    proc = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    problems = [line for line in proc.stdout.splitlines() if line.strip()]
    assert [line for line in problems if not line.startswith(KNOWN)] == [], proc.stdout
    assert len(problems) == 1, "the override is in place (Optuna 5 beside the plugin)"


def test_nothing_needs_pkg_resources():
    """datamaestro 1.6 reads its plugins without pkg_resources, so setuptools is no runtime pin."""
    assert importlib.util.find_spec("pkg_resources") is None
    code = "import warnings; warnings.simplefilter('error'); from datamaestro import prepare_dataset; import hreg.mnist"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
