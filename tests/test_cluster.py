"""The cluster path, run here: Optuna sweeps through `hydra/launcher=submitit_local` with two workers at once,
their study in a real PostgreSQL server (pgserver's, started for these tests on a local socket), and the
``threads`` setting that keeps jobs running at once from spinning against each other.

Trials are a few epochs on 1% of the training set, as in test_sweep.py; the tests that kill a process
evaluate every epoch, so that a trial runs long enough to be caught mid-way.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import optuna
import psutil
import pytest
from optuna.trial import TrialState
from sqlalchemy.pool import NullPool

from hreg.search.study import RUN_DIR_ATTR, STATUS_ATTR
from hreg import threads
from hreg.threads import CONCURRENT_JOBS_ENV, cpu_cores, resolve_threads
from tests.conftest import compose_config, one_error_line, read_result, run_train, start_train, wait_for
from tests.test_sweep import FAST, FIXED, assert_dependent_parameters_apply

pgserver = pytest.importorskip("pgserver")

SUBMITIT = ("hydra/launcher=submitit_local", "hydra.sweeper.n_jobs=2")


def slow(epochs: int) -> tuple[str, ...]:
    """Trials long enough to be killed mid-way: an evaluation of 67,000 images every epoch (about 0.3 s here)."""
    return (f"epochs={epochs}", "eval_every=1", "data.train_fraction=0.01", "monitor=none", *FIXED)


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    """A PostgreSQL server of its own (pgserver's binaries, a unix socket in a temporary directory)."""
    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    yield server
    server.cleanup()


@pytest.fixture(autouse=True)
def no_worker_left(tmp_path):
    """After each test, whatever still runs in its directory is killed (a failed test's workers would train on)."""
    yield
    for proc in psutil.process_iter(["cwd"]):
        try:
            if proc.pid != os.getpid() and proc.info["cwd"] and Path(proc.info["cwd"]).is_relative_to(tmp_path):
                proc.kill()
        except psutil.Error:
            continue


@pytest.fixture
def database(postgres, request) -> str:
    """A fresh database on the server for one test; its URL."""
    name = request.node.name.split("[")[0].lower()[:60]
    postgres.psql(f"DROP DATABASE IF EXISTS {name};")
    postgres.psql(f"CREATE DATABASE {name};")
    return postgres.get_uri(name)


def sweep_args(url: str, study: str, *args: str) -> list[str]:
    return ["-m", "hydra/sweeper=optuna", f"hydra.sweeper.study_name={study}", f'hydra.sweeper.storage="{url}"',
            *SUBMITIT, *args]


def sweep(tmp_path: Path, url: str, study: str, *args: str) -> subprocess.CompletedProcess:
    proc = run_train(*sweep_args(url, study, *args), cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def start_sweep(tmp_path: Path, url: str, study: str, *args: str) -> subprocess.Popen:
    """The same sweep as a process of its own (to be killed, or beside another); its output in sweeper-STUDY.log."""
    with open(tmp_path / f"sweeper-{study}.log", "a") as out:
        return start_train(*sweep_args(url, study, *args), cwd=tmp_path, output=out)


def finished(proc: subprocess.Popen, tmp_path: Path, study: str) -> None:
    """``proc`` (a sweep of ``study``) ends well."""
    assert proc.wait(timeout=400) == 0, (tmp_path / f"sweeper-{study}.log").read_text()[-4000:]


def trials(url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    """The study's trials, read over a connection closed at once (tests poll: a pool per call would keep
    each poll's connection open, until the server has no more to give)."""
    storage = optuna.storages.RDBStorage(url, engine_kwargs={"poolclass": NullPool})
    return optuna.load_study(study_name=study, storage=storage).trials


def reporting(url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    """The running trials whose job has claimed them and reported an evaluation (none before the study exists).

    The run directory is asked for too: Optuna reads a trial's attributes and its reports in separate queries,
    so a read can see the first report of a job that had not yet recorded its directory when attributes were read.
    """
    try:
        return [t for t in trials(url, study)
                if t.state == TrialState.RUNNING and t.intermediate_values and RUN_DIR_ATTR in t.system_attrs]
    except KeyError:
        return []


def worker_of(run_dir: Path) -> psutil.Process:
    """The process that trains in ``run_dir`` (it holds the run's log file open)."""
    log_file = str(run_dir / "train.log")
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "submitit.core._submit" in " ".join(proc.info["cmdline"] or []) and any(
                f.path == log_file for f in proc.open_files()
            ):
                return proc
        except psutil.Error:
            continue
    raise AssertionError(f"no worker process holds {log_file}")


def test_threads_auto_shares_the_cores_among_the_jobs_that_run_at_once(monkeypatch):
    """The arithmetic of threads=auto on a pretend machine of 8 cores (torch's default: 8)."""
    monkeypatch.setattr(threads, "cpu_cores", lambda: 8)
    monkeypatch.setattr(threads, "_torch_default", 8)
    for name in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS", CONCURRENT_JOBS_ENV):
        monkeypatch.delenv(name, raising=False)
    single = compose_config(hydra=True)
    assert resolve_threads("auto", single.hydra) == 8
    assert resolve_threads(3, single.hydra) == 3, "a number wins"
    monkeypatch.setattr(threads, "_torch_default", 4)  # torch counted physical cores only: auto stays below
    assert resolve_threads("auto", single.hydra) == 4
    monkeypatch.setattr(threads, "_torch_default", 8)

    joblib = compose_config("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", hydra=True)
    joblib.hydra.mode = "MULTIRUN"
    assert resolve_threads("auto", joblib.hydra) == 4
    joblib.hydra.launcher.n_jobs = -1  # joblib's every core: 8 workers
    assert resolve_threads("auto", joblib.hydra) == 1

    local = compose_config("hydra/launcher=submitit_local", hydra=True)
    local.hydra.mode = "MULTIRUN"
    assert resolve_threads("auto", local.hydra) == 8, "the launcher did not say it runs several at once"
    monkeypatch.setenv(CONCURRENT_JOBS_ENV, "2")  # hreg's submitit_local started two together
    assert resolve_threads("auto", local.hydra) == 4
    local.hydra.launcher.cpus_per_task = 3  # what each task asked for bounds its share
    assert resolve_threads("auto", local.hydra) == 3
    local.hydra.launcher.cpus_per_task = 6  # more than its share: the share
    assert resolve_threads("auto", local.hydra) == 4
    monkeypatch.setenv(CONCURRENT_JOBS_ENV, "16")  # more jobs at once than cores: one thread each
    assert resolve_threads("auto", local.hydra) == 1

    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
    assert resolve_threads("auto", single.hydra) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert resolve_threads("auto", single.hydra) == 1


def test_a_mistake_in_any_job_stops_the_batch_with_one_line_before_anything_is_submitted(tmp_path):
    proc = run_train("-m", "hydra/launcher=submitit_local", "epochs=1,0", "monitor=none", cwd=tmp_path)
    assert one_error_line(proc) == "epochs=0: must be an integer >= 1"
    assert not list(tmp_path.glob("multirun/*/*/.submitit")), "no job was submitted"


def test_a_postgresql_sweep_with_two_submitit_workers_prunes_and_samples_dependent_parameters(tmp_path, database):
    prune_early = ("search.pruner.n_startup_trials=1", "search.pruner.n_warmup_steps=0")
    sweep(tmp_path, database, "s", *FAST, *FIXED, "optimizer.lr=1e-3", "hydra.sweeper.n_trials=2", *prune_early)
    # Two more trials, at once, free in the rest of the search space, with a learning rate too small to learn.
    proc = sweep(tmp_path, database, "s", *FAST, "optimizer.lr=1e-7", "hydra.sweeper.n_trials=4", *prune_early)
    assert "2 trials done, 0 to resume, 2 to run" in proc.stdout + proc.stderr
    done = trials(database, "s")
    assert [t.state for t in done] == [TrialState.COMPLETE] * 2 + [TrialState.PRUNED] * 2
    assert len({t.system_attrs[RUN_DIR_ATTR] for t in done}) == 4, "jobs at once with the same overrides: a trial each"
    for trial in done[2:]:
        assert_dependent_parameters_apply(trial.params)
        run = read_result(tmp_path / trial.system_attrs[RUN_DIR_ATTR])
        assert run["status"] == "pruned" and run["optuna_trial"] == trial.number and list(trial.intermediate_values) == [1]
        log = (tmp_path / trial.system_attrs[RUN_DIR_ATTR] / "train.log").read_text()
        taken = int(re.search(r"threads: (\d+) \(threads=auto\)", log).group(1))
        assert 1 <= taken <= max(1, cpu_cores() // 2), "two jobs at once share the cores"
    sweep_dir = tmp_path / "multirun" / "optuna" / "s"
    assert (sweep_dir / "summary.csv").read_text().count("pruned") == 4  # state and status of each


def test_a_killed_worker_fails_its_trial_and_the_sweep_goes_on(tmp_path, database):
    sweeper = start_sweep(tmp_path, database, "w", *slow(20), "hydra.sweeper.n_trials=3")  # killed at epoch 1
    try:
        victim = wait_for(lambda: reporting(database, "w"), "a trial that reports", log=tmp_path / "sweeper-w.log")[0]
        worker_of(tmp_path / victim.system_attrs[RUN_DIR_ATTR]).kill()
        finished(sweeper, tmp_path, "w")
    finally:
        sweeper.kill()
    done = trials(database, "w")
    assert len(done) == 3
    assert done[victim.number].state == TrialState.FAIL
    assert [t.state for t in done if t.number != victim.number] == [TrialState.COMPLETE] * 2
    assert "ended without a result, so it failed" in (tmp_path / "sweeper-w.log").read_text()


def test_a_sweeper_killed_mid_sweep_resumes_without_losing_or_rerunning_a_finished_trial(tmp_path, database):
    # 40 epochs: trials 2 and 3 must outlive the restarted sweeper's start-up (about 10 s) to be found running.
    sweeper = start_sweep(tmp_path, database, "k", *slow(40), "hydra.sweeper.n_trials=4")
    try:
        def second_batch_reporting():
            running = reporting(database, "k")
            return len(running) == 2 and [t.number for t in running] == [2, 3]

        wait_for(second_batch_reporting, "trials 0 and 1 finished and trials 2 and 3 reporting")
        sweeper.send_signal(signal.SIGKILL)  # the sweeper alone: its two workers train on, orphaned
        sweeper.wait()
    finally:
        sweeper.kill()
    before = trials(database, "k")
    orphans = [tmp_path / t.system_attrs[RUN_DIR_ATTR] for t in before[2:]]

    proc = sweep(tmp_path, database, "k", *slow(40), "hydra.sweeper.n_trials=4")
    assert "2 trials done, 0 to resume, 2 to run" in proc.stdout + proc.stderr
    after = trials(database, "k")
    assert [t.state for t in after] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL] * 2 + [TrialState.COMPLETE] * 2
    assert [(t.value, t.datetime_complete) for t in after[:2]] == [(t.value, t.datetime_complete) for t in before[:2]]
    assert [t.system_attrs[STATUS_ATTR] for t in after[2:4]] == ["lost", "lost"]
    new_dirs = {t.system_attrs[RUN_DIR_ATTR] for t in after[4:]}
    assert len(new_dirs) == 2 and not new_dirs & {t.system_attrs[RUN_DIR_ATTR] for t in before}
    # The orphaned workers notice their trials ended and stop, their runs marked lost (and resumable by hand).
    for run_dir in orphans:
        wait_for(lambda: read_result(run_dir)["status"] != "running", f"{run_dir} to stop", timeout=120)
        assert read_result(run_dir)["status"] == "lost"


def test_two_sweeps_with_different_study_names_share_the_database(tmp_path, database):
    args = (*FAST, *FIXED, "hydra.sweeper.n_trials=2", "threads=1")  # two sweeps at once: a thread per job
    first = start_sweep(tmp_path, database, "a", *args, "optimizer.lr=1e-3")
    second = start_sweep(tmp_path, database, "b", *args, "optimizer.lr=3e-3")
    finished(first, tmp_path, "a")
    finished(second, tmp_path, "b")
    for study, lr in (("a", 1e-3), ("b", 3e-3)):
        done = trials(database, study)
        assert [t.state for t in done] == [TrialState.COMPLETE] * 2
        for trial in done:  # each job reported to a trial of its own study
            run = read_result(tmp_path / trial.system_attrs[RUN_DIR_ATTR])
            assert run["config"]["optimizer"]["lr"] == lr and trial.value == run["final"]["val_acc"]
            assert run["config"]["threads"] == 1
    assert len(optuna.get_all_study_summaries(database)) == 2


def test_a_submitit_local_job_warned_of_its_time_limit_is_requeued_and_resumes_where_it_stopped(tmp_path):
    """SIGUSR2 is what submitit_local sends a job ``signal_delay_s`` before its ``timeout_min``."""
    with open(tmp_path / "sweep.log", "w") as out:
        proc = start_train("-m", "hydra/launcher=submitit_local", *slow(20), "hydra.sweep.dir=sweep", cwd=tmp_path,
                           output=out)
    run_dir = tmp_path / "sweep" / "0"
    try:
        wait_for(lambda: (run_dir / "result.json").exists() and read_result(run_dir)["epochs_completed"] >= 3,
                 "3 epochs")
        worker_of(run_dir).send_signal(signal.SIGUSR2)
        assert proc.wait(timeout=300) == 0, (tmp_path / "sweep.log").read_text()[-3000:]
    finally:
        proc.kill()
    run = read_result(run_dir)
    (stopped_at,) = [epoch - 1 for epoch in run["resumed_at_epoch"]]
    assert run["status"] == "completed" and stopped_at >= 3
    assert [h["epoch"] for h in run["history"]] == list(range(1, 21)), "one history, no gap or repeat"
    log = (run_dir / "train.log").read_text()
    assert f"SIGUSR2 received; stopped cleanly after epoch {stopped_at}" in log
    assert "requeued: the run goes on from its last checkpoint" in log
