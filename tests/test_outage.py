"""A search rides through its database going away: a PostgreSQL server restarted mid-search, one down
for longer than ``search.outage_limit_s``, and a SQLite study locked by another process; and through a
worker that vanishes without a word (frozen: no scheduler says so), found by its heartbeat.

The server is pgserver's, as in test_cluster.py; it is stopped and started again with its own ``pg_ctl``.
Trials train without a pruner, so that a search with an outage and one without end alike.
"""

from __future__ import annotations

import logging
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from optuna.exceptions import StorageInternalError
from optuna.trial import TrialState

from hreg.search.outage import DatabaseAway, Outage
from hreg.search.study import RUN_DIR_ATTR, database_url
from tests.conftest import read_result, run_train, start_train, wait_for
from tests.test_cluster import database, no_worker_left, postgres, reporting, slow, trials, worker_of  # noqa: F401

pgserver = pytest.importorskip("pgserver")

NO_PRUNING = ("search.pruner=null", "search.stacked_pruner=null", "hydra.sweeper.sampler.seed=0")


def test_an_outage_is_retried_with_one_line_at_each_end_and_stops_past_its_limit(caplog, monkeypatch):
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) <= 3:
            raise StorageInternalError("could not connect to server")
        return "answer"

    waits = Outage(60, "the sweep waits for it")
    with monkeypatch.context() as patch, caplog.at_level(logging.WARNING, logger="hreg"):
        patch.setattr(Outage, "wait", lambda self, tries: None)  # no backoff: the same calls, at once
        assert waits.retry(flaky, "asking") == "answer" and len(calls) == 4
    assert [r.getMessage().split(";")[0].split(" after")[0] for r in caplog.records] == [
        "optuna: the study database does not answer (could not connect to server)",
        "optuna: the study database answers again"]
    gone = Outage(0.05, "the sweep waits for it")  # gone for good: past the limit after one backoff
    with pytest.raises(DatabaseAway, match="has not answered for 0 s .* while asking: stopping; the same command"):
        gone.retry(lambda: (_ for _ in ()).throw(StorageInternalError("down")), "asking")


def search(url: str, study: str, *args: str) -> list[str]:
    return ["-m", "hydra/sweeper=optuna", f"hydra.sweeper.study_name={study}", f'hydra.sweeper.storage="{url}"',
            *NO_PRUNING, *args]


def stop(server) -> None:
    pgserver.pg_ctl(["stop", "-m", "fast"], pgdata=server.pgdata, user=server.system_user)


def outcome(url: str, study: str, tmp_path: Path) -> list[tuple]:
    """Each trial's state, parameters and its run's final metrics and status."""
    return [(t.state, t.params, read_result(tmp_path / t.system_attrs[RUN_DIR_ATTR])["final"],
             read_result(tmp_path / t.system_attrs[RUN_DIR_ATTR])["status"]) for t in trials(url, study)]


def logs(tmp_path: Path) -> str:
    """What the sweeper and its jobs logged (a job logs into its run directory)."""
    return "".join(path.read_text() for path in sorted(tmp_path.rglob("*.log")))


def restarted_mid_search(tmp_path: Path, server, url: str, study: str, args: list[str], running: int) -> None:
    """Run the search, restart the server (5 s down) once ``running`` trials have reported 3 evaluations."""
    tmp_path.mkdir(exist_ok=True)
    log = tmp_path / f"sweeper-{study}.log"
    with open(log, "w") as out:
        sweeper = start_train(*search(url, study, *args), cwd=tmp_path, output=out)
    try:
        wait_for(lambda: len([t for t in reporting(url, study) if len(t.intermediate_values) >= 3]) >= running,
                 f"{running} trials reporting")
        stop(server)
        time.sleep(5)
        server.ensure_postgres_running()
        assert sweeper.wait(timeout=400) == 0, log.read_text()[-4000:]
    finally:
        sweeper.kill()
    assert "Traceback" not in log.read_text()


@pytest.mark.parametrize("launcher", [
    ("hydra/launcher=submitit_local", "hydra.sweeper.n_jobs=2"),
    ("hydra/launcher=stacked",),  # the pool, in the sweeper's own process
], ids=["submitit_local", "pool"])
def test_a_database_restart_mid_search_changes_nothing(tmp_path, postgres, database, launcher):
    args = [*slow(20), "hydra.sweeper.n_trials=4", *launcher]
    restarted_mid_search(tmp_path / "outage", postgres, database, "r", args, running=2)
    text = logs(tmp_path / "outage")
    assert "the study database does not answer" in text and "the study database answers again" in text
    with_outage = outcome(database, "r", tmp_path / "outage")
    assert [(state, status) for state, _, _, status in with_outage] == [(TrialState.COMPLETE, "completed")] * 4

    # The same search on a database that stays up: the same trials, to the last bit.
    proc = run_train(*search(database, "quiet", *args), cwd=tmp_path / "outage", timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert outcome(database, "quiet", tmp_path / "outage") == with_outage


def test_an_outage_past_the_limit_stops_the_sweeper_in_one_line_and_the_same_command_finishes(
        tmp_path, postgres, database):
    args = search(database, "long", *slow(30), "hydra.sweeper.n_trials=3", "search.outage_limit_s=3")
    log = tmp_path / "sweeper.log"
    with open(log, "w") as out:
        sweeper = start_train(*args, cwd=tmp_path, output=out)
    try:
        wait_for(lambda: len(reporting(database, "long")) == 3, "3 trials reporting")
        stop(postgres)
        assert sweeper.wait(timeout=300) == 2, log.read_text()[-3000:]
    finally:
        sweeper.kill()
        postgres.ensure_postgres_running()
    text = log.read_text()
    last = text.strip().splitlines()[-1]
    assert last.startswith("hreg: error: the study database has not answered for 3 s"), text[-3000:]
    assert "the same command resumes the study" in last and "Traceback" not in text

    proc = run_train(*args, cwd=tmp_path, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = trials(database, "long")
    assert [t.state for t in done] == [TrialState.COMPLETE] * 3, "the same trials, none asked again"
    for trial in done:
        run = read_result(tmp_path / trial.system_attrs[RUN_DIR_ATTR])
        assert run["status"] == "completed" and run["epochs_completed"] == 30 and trial.value == run["final"]["val_acc"]


def test_a_sqlite_study_locked_by_another_process_for_seconds_changes_nothing(tmp_path):
    args = ["-m", "hydra/sweeper=optuna", "hydra.sweeper.study_name=lock", *NO_PRUNING, *slow(20),
            "hydra.sweeper.n_trials=3"]
    sweep_dir = tmp_path / "multirun" / "optuna" / "lock"
    with open(tmp_path / "sweeper.log", "w") as out:
        sweeper = start_train(*args, cwd=tmp_path, output=out)
    try:
        def reported_thrice() -> bool:  # read from the runs' records: a reader of the database would take its lock
            runs = list(sweep_dir.glob("*/result.json"))
            return len(runs) == 3 and all(read_result(run.parent)["epochs_completed"] >= 3 for run in runs)

        wait_for(reported_thrice, "3 trials 3 epochs in")
        holder = sqlite3.connect(sweep_dir / "optuna.db", isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN EXCLUSIVE")  # what a second process writing the study does, held for 8 s
        threading.Timer(8, holder.rollback).start()
        assert sweeper.wait(timeout=300) == 0, (tmp_path / "sweeper.log").read_text()[-3000:]
    finally:
        sweeper.kill()
    assert "Traceback" not in (tmp_path / "sweeper.log").read_text()
    assert "the study database does not answer" in logs(tmp_path)
    assert [t.state for t in trials(database_url(sweep_dir), "lock")] == [TrialState.COMPLETE] * 3


def test_a_frozen_worker_is_found_by_its_heartbeat_and_the_sweep_goes_on(tmp_path, database):
    args = search(database, "beat", *slow(30), "hydra.sweeper.n_trials=3", "hydra/launcher=submitit_local",
                  "hydra.sweeper.n_jobs=2", "search.heartbeat_s=2")
    log = tmp_path / "sweeper.log"
    with open(log, "w") as out:
        sweeper = start_train(*args, cwd=tmp_path, output=out)
    try:
        victim = wait_for(lambda: reporting(database, "beat"), "a trial that reports")[0]
        frozen = time.monotonic()
        worker_of(tmp_path / victim.system_attrs[RUN_DIR_ATTR]).send_signal(signal.SIGSTOP)  # alive, silent
        wait_for(lambda: trials(database, "beat")[victim.number].state == TrialState.FAIL, "the trial failed", 60)
        assert time.monotonic() - frozen < 30, "within 3 heartbeats of 2 s, and a look at the study"
        assert sweeper.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        sweeper.kill()
    done = trials(database, "beat")
    assert [t.state for t in done if t.number != victim.number] == [TrialState.COMPLETE] * 2
    assert "stopped its heartbeat for 6 s, so it was cancelled and failed" in log.read_text()
