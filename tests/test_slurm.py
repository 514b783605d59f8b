"""`hydra/launcher=submitit_slurm` against a real one-node SLURM cluster (tests/slurm.py), with the study in
a real PostgreSQL server: a multirun, an Optuna search, a cancelled job, and a job the scheduler warns
(SIGUSR2, as `--signal` sends it before a time limit or a preemption) that is requeued and resumes.

The cluster has this machine's cores; each job asks for one. Jobs are a few epochs on 1% of the training set.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from hreg.search.study import RUN_DIR_ATTR, STATUS_ATTR
from tests import slurm
from tests.conftest import read_result, run_train, start_train, wait_for
from tests.test_cluster import database, no_worker_left, postgres, reporting, slow, trials  # noqa: F401
from tests.test_sweep import FAST, FIXED

if not slurm.available():
    if os.environ.get("HREG_REQUIRE_SLURM"):  # .ci/run installs SLURM: there, a missing cluster is a failure
        raise RuntimeError("HREG_REQUIRE_SLURM is set but slurmctld, slurmd, slurmdbd, munged or mariadbd is missing")
    pytest.skip("no SLURM here (apt-get install slurm-wlm slurmdbd munge mariadb-server, as root)",
                allow_module_level=True)

SLURM = ("hydra/launcher=submitit_slurm", f"hydra.launcher.partition={slurm.PARTITION}", "hydra.launcher.cpus_per_task=1")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The cluster, its SLURM_CONF in this process's environment (the commands the tests start inherit it)."""
    running = slurm.SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(running.conf)
    yield running
    running.stop()
    if before is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = before


def accounted(cluster: slurm.SlurmCluster) -> dict[str, str]:
    """Every job's state as SLURM's accounting has it (array tasks as JOB_TASK), steps left out."""
    out = cluster.run("sacct", "-n", "-X", "-P", "-D", "-o", "JobID,State").stdout
    return dict(line.split("|", 1) for line in out.splitlines() if line)


def job_id(run_dir: Path) -> str:
    """The SLURM job that trains in ``run_dir`` (Hydra's submitit launcher records it as the job's id)."""
    return str(OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra.job.id)


def search(tmp_path: Path, url: str, study: str, *args: str) -> list[str]:
    return ["-m", "hydra/sweeper=optuna", f"hydra.sweeper.study_name={study}", f'hydra.sweeper.storage="{url}"',
            "hydra.sweeper.n_jobs=2", *SLURM, *args]


def test_a_multirun_of_four_jobs_runs_on_slurm_as_on_the_basic_launcher(tmp_path, cluster):
    proc = run_train("-m", *SLURM, *FAST, "seed=0,1,2,3", "hydra.sweep.dir=sweep", cwd=tmp_path, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [tmp_path / "sweep" / str(i) for i in range(4)]
    for i, run_dir in enumerate(runs):
        run = read_result(run_dir)
        assert run["status"] == "completed" and run["config"]["seed"] == i and run["epochs_completed"] == 3
        assert {"config.yaml", "hydra.yaml", "overrides.yaml"} <= {p.name for p in (run_dir / ".hydra").iterdir()}
        assert (run_dir / "checkpoints" / "last.pt").is_file() and (run_dir / "checkpoints" / "best.pt").is_file()
        assert "threads: 1 " in (run_dir / "train.log").read_text(), "SLURM_CPUS_PER_TASK=1: one thread"
    ids = [job_id(run_dir) for run_dir in runs]
    assert len(set(ids)) == 4 and all("_" in i for i in ids), "one array job, a task each"
    states = accounted(cluster)
    assert [states[i] for i in ids] == ["COMPLETED"] * 4
    assert (tmp_path / "sweep" / "report.md").is_file()


def test_a_search_of_four_trials_where_a_cancelled_job_fails_alone_and_the_same_command_resumes(
        tmp_path, cluster, database):
    args = search(tmp_path, database, "c", *slow(15), "hydra.sweeper.n_trials=4")
    with open(tmp_path / "sweeper.log", "w") as out:
        sweeper = start_train(*args, cwd=tmp_path, output=out)
    try:
        victim = wait_for(lambda: len(reporting(database, "c")) == 2 and reporting(database, "c"), "two reporting")[0]
        victim_dir = tmp_path / victim.system_attrs[RUN_DIR_ATTR]
        cancelled = job_id(victim_dir)
        cluster.run("scancel", cancelled)
        assert sweeper.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        sweeper.kill()
    done = trials(database, "c")
    assert len(done) == 4 and done[victim.number].state == TrialState.FAIL
    assert [t.state for t in done if t.number != victim.number] == [TrialState.COMPLETE] * 3
    for trial in done:  # each trial's job directory, as with the basic launcher
        run_dir = tmp_path / trial.system_attrs[RUN_DIR_ATTR]
        assert (run_dir / ".hydra" / "overrides.yaml").is_file() and (run_dir / "train.log").is_file()
        assert read_result(run_dir)["optuna_trial"] == trial.number
    assert accounted(cluster)[cancelled] == "CANCELLED by 0"
    lines = [line for line in (tmp_path / "sweeper.log").read_text().splitlines() if "ended without a result" in line]
    assert len(lines) == 1 and f"job {cancelled} " in lines[0], lines
    assert read_result(victim_dir)["status"] == "interrupted", "SIGTERM: stopped after its epoch, resumable by hand"

    records = {t.number: (tmp_path / t.system_attrs[RUN_DIR_ATTR] / "result.json").read_bytes() for t in done}
    again = run_train(*args, cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "4 trials done, 0 to resume, 0 to run" in again.stdout + again.stderr
    after = trials(database, "c")
    assert [(t.state, t.value) for t in after] == [(t.state, t.value) for t in done], "no trial ran again"
    assert records == {t.number: (tmp_path / t.system_attrs[RUN_DIR_ATTR] / "result.json").read_bytes() for t in after}


def test_a_warned_job_checkpoints_is_requeued_and_resumes_its_trial_where_it_stopped(tmp_path, cluster, database):
    epochs, beat = 20, 2
    args = search(tmp_path, database, "r", *slow(epochs), "optimizer.lr=1e-3", "hydra.sweeper.n_trials=1",
                  f"search.heartbeat_s={beat}")
    log = tmp_path / "sweeper.log"
    with open(log, "w") as out:
        sweeper = start_train(*args, cwd=tmp_path, output=out)
    try:
        trial = wait_for(lambda: [t for t in reporting(database, "r") if len(t.intermediate_values) >= 3], "3 reports",
                         log=log)[0]
        run_dir = tmp_path / trial.system_attrs[RUN_DIR_ATTR]
        job = job_id(run_dir)
        cluster.run("scancel", "--signal=USR2", job)  # what --signal=USR2@N sends before a time limit or preemption
        wait_for(lambda: read_result(run_dir)["status"] == "interrupted", "the run to stop after its epoch", log=log)
        stopped_at = read_result(run_dir)["epochs_completed"]
        wait_for(lambda: cluster.run("squeue", "-h", "-j", job, "-o", "%T").stdout.strip() == "PENDING", "requeued",
                 log=log)
        time.sleep(4 * beat)  # past the heartbeat's grace period: no process beats, yet the trial waits in the queue
        cluster.release_requeued()
        assert sweeper.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        sweeper.kill()
    (only,) = trials(database, "r")
    assert only.number == trial.number and only.state == TrialState.COMPLETE, "the same trial, not a new one"
    assert sorted(only.intermediate_values) == list(range(1, epochs + 1))
    run = read_result(run_dir)
    assert run["status"] == "completed" and run["resumed_at_epoch"] == [stopped_at + 1]
    assert [h["epoch"] for h in run["history"]] == list(range(1, epochs + 1)), "one history, no gap or repeat"
    assert only.value == run["final"]["val_acc"] and only.system_attrs[STATUS_ATTR] == "completed"
    log = (run_dir / "train.log").read_text()
    assert "requeued: the run goes on from its last checkpoint" in log and f"at epoch {stopped_at + 1}" in log

    # The same run, never stopped: the same final metrics, to the last bit.
    alone = run_train(*slow(epochs), "optimizer.lr=1e-3", "threads=1", "hydra.run.dir=alone", cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert read_result(tmp_path / "alone")["final"] == run["final"]
