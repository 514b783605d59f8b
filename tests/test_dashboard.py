"""A finished search opened in optuna-dashboard (README "Hyperparameter search"): its HTTP API and its study page.

The dashboard reads the study database directly, so what the search writes there (trial states, pruned trials
included, intermediate values, sampled parameters) must be what Optuna itself reads back, and the page must
render it in a real browser. One tiny search (4 trials of 2 epochs on 1% of the training set, a pruner that
judges from epoch 1: some trials are pruned) is opened by one dashboard on 127.0.0.1, stopped at the end.
The browser test needs Debian's `chromium` (.ci/run installs it and sets HREG_REQUIRE_BROWSER=1: there, a
missing browser is a failure, elsewhere a skip).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hreg.search.study import database_url
from tests.conftest import BIN, run_train, wait_for

STUDY = "dash"
SEARCH = (
    "-m", "hydra/sweeper=optuna", f"hydra.sweeper.study_name={STUDY}", "hydra.sweeper.n_trials=4",
    "hydra.sweeper.sampler.seed=0", "epochs=2", "eval_every=1", "data.train_fraction=0.01", "monitor=none",
    "search.stacked_pruner.min_resource=1", "search.stacked_pruner.min_kept=1",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> dict | None:
    """The JSON ``url`` answers, or None while nothing listens there yet."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)
    except (urllib.error.URLError, ConnectionError):
        return None


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[optuna.Study, str]:
    """The finished search, read with Optuna, and its database URL."""
    tmp_path = tmp_path_factory.mktemp("dashboard")
    proc = run_train(*SEARCH, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    url = database_url(tmp_path / "multirun" / "optuna" / STUDY)
    return optuna.load_study(study_name=STUDY, storage=url), url


@pytest.fixture(scope="module")
def dashboard(study, tmp_path_factory) -> Iterator[str]:
    """`optuna-dashboard DATABASE` on a free local port; yields its base URL."""
    base, log = f"http://127.0.0.1:{free_port()}", tmp_path_factory.mktemp("dashboard-log") / "dashboard.log"
    with open(log, "w") as out:
        server = subprocess.Popen([str(BIN / "optuna-dashboard"), study[1], "--host", "127.0.0.1",
                                   "--port", base.rsplit(":", 1)[1]], stdout=out, stderr=subprocess.STDOUT)
    try:
        def up() -> bool:
            assert server.poll() is None, f"optuna-dashboard exited: {log.read_text()[-2000:]}"
            return get_json(f"{base}/api/studies") is not None

        wait_for(up, "optuna-dashboard to answer", timeout=60)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


def study_id(base: str) -> int:
    (summary,) = [s for s in get_json(f"{base}/api/studies")["study_summaries"] if s["study_name"] == STUDY]
    return summary["study_id"]


def test_the_api_serves_the_trials_optuna_reads(study, dashboard):
    expected = study[0].trials
    assert any(t.state == TrialState.PRUNED for t in expected), "the search pruned no trial: nothing to show"
    trials = get_json(f"{dashboard}/api/studies/{study_id(dashboard)}")["trials"]
    assert [t["number"] for t in trials] == [t.number for t in expected]
    for served, trial in zip(trials, expected):
        assert served["state"] == trial.state.name.capitalize()  # "Complete", "Pruned"
        assert {v["step"]: v["value"] for v in served["intermediate_values"]} == trial.intermediate_values
        # The API writes each parameter's value as str(value): exact for floats (repr round-trips).
        assert {p["name"]: p["param_external_value"] for p in served["params"]} == {
            name: str(value) for name, value in trial.params.items()}
        assert served.get("values") == trial.values  # the objective; a pruned trial keeps its last value


@pytest.fixture(scope="module")  # module scope: set up before the search, so a skip costs nothing
def chromium() -> str:
    """The browser's path; without one a skip, or a failure under HREG_REQUIRE_BROWSER."""
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("HREG_REQUIRE_BROWSER"):
            pytest.fail("HREG_REQUIRE_BROWSER is set but chromium is not on PATH")
        pytest.skip("no chromium here (apt-get install chromium, as root)")
    return path


def test_a_headless_browser_renders_the_study_page(chromium, study, dashboard):
    sid = study_id(dashboard)
    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
         "--dump-dom", f"{dashboard}/dashboard/studies/{sid}"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    texts = {text.strip() for text in re.split(r"<[^>]*>", dom)}  # each element's own text
    trials = study[0].trials
    assert f"{STUDY} (id={sid})" in texts, "the app bar names the study"
    assert f"Best Trial (number={study[0].best_trial.number})" in texts
    assert {f"trial #{t.number}" for t in trials} <= texts, "the intermediate values plot has every trial"
    assert {"Complete", "Pruned"} <= texts, "the timeline's legend has both states"
