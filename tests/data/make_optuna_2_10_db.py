"""Regenerate ``tests/data/optuna-2.10.sql``: a study database in Optuna 2.10's schema, as SQLite's text dump.

The fixture lets the tests check that hreg upgrades a study database written by
an old Optuna (tests/test_pins.py rebuilds the database from the dump). It must
be written by the old version, so run this script with Optuna 2.10.1 and
SQLAlchemy<2 (Optuna 2.10's storage does not work with SQLAlchemy 2.x), in a
throwaway environment outside the repo::

    python3 -m venv /tmp/optuna210
    /tmp/optuna210/bin/pip install "optuna==2.10.1" "sqlalchemy<2" "alembic<1.14"
    /tmp/optuna210/bin/python tests/data/make_optuna_2_10_db.py tests/data/optuna-2.10.sql

What it contains: one study, ``"hreg"``, direction ``maximize``, with four
trials made the way hreg's search made them under Optuna 2.10 (``study.ask()``
plus ``suggest_*``, ``set_system_attr`` and ``report``):

* params ``optimizer.lr`` (log-uniform float in [1e-4, 1e-2]),
  ``regularizer`` (categorical: none / l1 / l2) and ``model.dropout``
  (float in [0, 0.5]);
* system attrs ``hreg:overrides`` (sorted ``"k=v"`` strings of the params),
  ``hreg:status``, ``hreg:epochs``, ``hreg:final`` (val/test acc and loss) and
  ``hreg:run_dir`` (``/nonexistent/run/N``);
* intermediate values (validation accuracy) at steps 1, 10, 20, 30;
* trials 0 and 1 COMPLETE (status "completed", 30 epochs, value = final
  val_acc); trial 2 PRUNED at step 20 (status "pruned", 20 epochs); trial 3
  FAIL (status "diverged").

The sampler is seeded, so the params are the same on every run.
"""

import os
import sqlite3
import sys
import tempfile

import optuna

STEPS = (1, 10, 20, 30)

# (state, hreg:status, epochs, intermediate accuracies, final metrics)
TRIALS = [
    (
        optuna.trial.TrialState.COMPLETE,
        "completed",
        30,
        (0.80, 0.88, 0.92, 0.95),
        {"val_acc": 0.95, "val_loss": 0.16, "test_acc": 0.948, "test_loss": 0.17},
    ),
    (
        optuna.trial.TrialState.COMPLETE,
        "completed",
        30,
        (0.82, 0.87, 0.90, 0.93),
        {"val_acc": 0.93, "val_loss": 0.22, "test_acc": 0.927, "test_loss": 0.23},
    ),
    (
        optuna.trial.TrialState.PRUNED,
        "pruned",
        20,
        (0.81, 0.84, 0.85),
        {"val_acc": 0.85, "val_loss": 0.45, "test_acc": 0.846, "test_loss": 0.46},
    ),
    (
        optuna.trial.TrialState.FAIL,
        "diverged",
        30,
        (0.80, 0.83, 0.86, 0.88),
        {"val_acc": 0.88, "val_loss": 0.38, "test_acc": 0.874, "test_loss": 0.39},
    ),
]


def main(dump: str) -> None:
    path = os.path.join(tempfile.mkdtemp(), "optuna.db")
    study = optuna.create_study(
        study_name="hreg",
        storage="sqlite:///" + path,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=0),
    )
    for n, (state, status, epochs, accs, final) in enumerate(TRIALS):
        trial = study.ask()
        params = {
            "optimizer.lr": trial.suggest_float("optimizer.lr", 1e-4, 1e-2, log=True),
            "regularizer": trial.suggest_categorical("regularizer", ["none", "l1", "l2"]),
            "model.dropout": trial.suggest_float("model.dropout", 0.0, 0.5),
        }
        trial.set_system_attr(
            "hreg:overrides", sorted(f"{k}={v}" for k, v in params.items())
        )
        trial.set_system_attr("hreg:status", status)
        trial.set_system_attr("hreg:epochs", epochs)
        trial.set_system_attr("hreg:final", final)
        trial.set_system_attr("hreg:run_dir", f"/nonexistent/run/{n}")
        for step, acc in zip(STEPS, accs):
            trial.report(acc, step)
        if state == optuna.trial.TrialState.COMPLETE:
            study.tell(trial, final["val_acc"])
        else:
            study.tell(trial, state=state)
    with open(dump, "w") as out:
        out.writelines(line + "\n" for line in sqlite3.connect(path).iterdump())


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} PATH/TO/optuna-2.10.sql")
    main(sys.argv[1])
