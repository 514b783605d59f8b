"""A stacked job is a Hydra job: what ``run_job`` gives a job of the basic launcher, the stacked launcher's
job context (``hreg.engines.stacked.job``) gives a member of a stack, or the job trains alone."""

from __future__ import annotations

import logging

from omegaconf import open_dict, read_write

from hreg.engines.stacked.job import job_log
from tests.conftest import compose_config, read_result, run_train

FAST = ("epochs=1", "monitor=none", "data.train_fraction=0.02")
#: A job's own format for its log file, and a variable its task sees (through an interpolation of its config).
SETTINGS = ("hydra.job_logging.formatters.simple.format='JOB %(levelname)s %(message)s'",
            "+hydra.job.env_set.HREG_NOTE=from-env-set", "+note=${oc.env:HREG_NOTE,unset}")


def test_a_stacked_job_sees_its_env_set_and_logs_in_its_job_logging_format_as_a_basic_job_does(tmp_path):
    outputs = {}
    for launcher in ("basic", "stacked"):
        proc = run_train("-m", f"hydra/launcher={launcher}", "seed=0,1", *FAST, *SETTINGS,
                         f"hydra.sweep.dir={tmp_path / launcher}", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outputs[launcher] = proc.stdout + proc.stderr
    assert "Launching 2 jobs as 1 stack (2)" in outputs["stacked"]
    for launcher in ("basic", "stacked"):
        for job in range(2):
            run_dir = tmp_path / launcher / str(job)
            assert read_result(run_dir)["config"]["note"] == "from-env-set", (launcher, job)
            lines = (run_dir / "train.log").read_text().splitlines()
            assert any(line.startswith("JOB INFO completed: best val acc") for line in lines), (launcher, lines)
            assert not any(line.startswith("[") for line in lines), (launcher, lines)  # not Hydra's default format
    assert read_result(tmp_path / "stacked" / "0")["launcher"] == "stacked"


def test_a_job_log_writes_each_file_of_hydra_job_logging_and_none_when_it_is_disabled(tmp_path):
    def handlers(*overrides: str) -> list[logging.Handler]:
        config = compose_config(*overrides, hydra=True)
        with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
            config.hydra.runtime.output_dir = str(tmp_path)
        logger = job_log(config)
        assert logger is not logging.getLogger("hreg")  # its own, outside the hierarchy: members share a process
        return logger.handlers

    (file,) = handlers()  # Hydra's default: the console (left to the stack) and JOB_DIR/<job name>.log
    assert isinstance(file, logging.FileHandler) and file.baseFilename.startswith(str(tmp_path))
    assert file.baseFilename.endswith(".log") and file.formatter._fmt.startswith("[%(asctime)s]")
    file.close()
    assert handlers("hydra/job_logging=disabled") == []


def test_a_job_with_hydra_job_chdir_trains_alone_in_its_own_directory(tmp_path):
    proc = run_train("-m", "hydra/launcher=stacked", "seed=0,1", *FAST, "hydra.job.chdir=true",
                     f"hydra.sweep.dir={tmp_path / 's'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert "Launching 2 jobs as 2 stacks (1, 1)" in output and output.count("needs a process of its own") == 2
    for job in range(2):
        result = read_result(tmp_path / "s" / str(job))
        assert result["status"] == "completed" and "launcher" not in result  # the native loop, through run_job
