"""The study preset and hreg-report, on a real small multirun of the preset (2 variants x 2 seeds, 3 epochs)."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf
from PIL import Image

from hreg.report.runs import Run, group_runs, label_runs
from tests.conftest import CONF_DIR, compose_config, read_result, run_cli, run_train

FIGURES = ("loss_curves.png", "accuracy.png", "weights.png")
VARIANTS = ("none", "l1")
SEEDS = (0, 1)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """The preset, cut down on the command line; Hydra's callback writes the report at the end."""
    root = tmp_path_factory.mktemp("study")
    done = run_train(
        "-m", "+experiment=compare_regularizers", f"variant={','.join(VARIANTS)}", f"seed={','.join(map(str, SEEDS))}",
        "epochs=3", "eval_every=1", "data.train_fraction=0.02", f"hydra.sweep.dir={root / 'sweep'}",
        cwd=root,
    )
    assert done.returncode == 0, done.stderr
    return root / "sweep"


def report_cli(*args: str) -> subprocess.CompletedProcess:
    return run_cli("hreg-report", *args)


def md_table(report: str, heading: str) -> list[dict[str, str]]:
    """The rows of the markdown table under ``## heading``, as dicts by column header."""
    section = report.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def pct(value: float) -> str:
    return f"{100 * value:.2f}"


def job_dirs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def test_preset_lists_every_variant_and_runs_configurations_times_seeds(sweep):
    preset = yaml.safe_load((CONF_DIR / "experiment" / "compare_regularizers.yaml").read_text())
    swept = preset["hydra"]["sweeper"]["params"]["variant"].split(",")
    assert sorted(swept) == sorted(p.stem for p in (CONF_DIR / "variant").glob("*.yaml"))
    launched = {(read_result(d)["config"]["regularizer"]["kind"], read_result(d)["config"]["seed"]) for d in job_dirs(sweep)}
    assert launched == {(kind, seed) for kind in VARIANTS for seed in SEEDS}


@pytest.mark.parametrize(
    "variant, keys",
    [
        ("none", {"regularizer.kind": "none", "model.dropout": 0.0, "model.norm": None, "augment.degrees": None}),
        ("l1", {"regularizer.kind": "l1", "regularizer.lam": 1e-4}),
        ("l2", {"regularizer.kind": "l2", "regularizer.lam": 1e-3}),
        ("dropout", {"model.dropout": 0.2, "regularizer.kind": "none"}),
        ("batchnorm", {"model.norm._target_": "torch.nn.BatchNorm1d"}),
        ("layernorm", {"model.norm._target_": "torch.nn.LayerNorm"}),
        ("augment", {"augment.degrees": 15.0, "model.norm": None}),
        ("combined", {"regularizer.kind": "l2", "model.dropout": 0.2, "augment.degrees": 15.0}),
    ],
)
def test_each_variant_sets_its_keys_and_the_command_line_still_wins(variant, keys):
    cfg = compose_config("experiment=compare_regularizers", f"variant={variant}")
    assert cfg.epochs == 1000
    for key, value in keys.items():
        assert OmegaConf.select(cfg, key, default=None) == value, key
    assert compose_config("experiment=compare_regularizers", f"variant={variant}", "epochs=7").epochs == 7


def test_callback_writes_report_and_readable_figures(sweep):
    report = (sweep / "report.md").read_text()
    for name in FIGURES:
        assert f"]({name})" in report
        with Image.open(sweep / name) as image:
            image.verify()
        with Image.open(sweep / name) as image:
            assert image.format == "PNG" and image.width > 600 and image.height > 200
            low, high = image.convert("L").getextrema()
            assert high - low > 100  # something is drawn


def test_every_run_table_equals_the_result_files(sweep):
    rows = md_table((sweep / "report.md").read_text(), "Every run")
    assert [r["job"] for r in rows] == [d.name for d in job_dirs(sweep)]
    for row in rows:
        result = read_result(sweep / row["job"])
        final = result["final"]
        assert row["overrides"] == f"variant={result['config']['regularizer']['kind']} seed={result['config']['seed']}"
        assert row["status"] == "completed" and row["epochs"] == "3/3"
        assert row["train acc (%)"] == pct(final["train_acc"])
        assert row["val acc (%)"] == pct(final["val_acc"])
        assert row["test acc (%)"] == pct(final["test_acc"])
        assert row["gap (pp)"] == pct(final["train_acc"] - final["val_acc"])
        assert row["val loss"] == f"{final['val_loss']:.4f}"
        assert row["near-zero (%)"] == pct(result["weights"]["near_zero_share"])
        assert row["L2 norm"] == f"{result['weights']['l2_norm']:.3f}"
        assert row["entropy"] == f"{result['entropy_mean']:.3f}"


def test_configuration_table_gives_mean_and_std_over_seeds(sweep):
    rows = {r["configuration"]: r for r in md_table((sweep / "report.md").read_text(), "By configuration")}
    assert list(rows) == [f"variant={v}" for v in VARIANTS]
    for variant in VARIANTS:
        results = [read_result(d) for d in job_dirs(sweep)]
        mine = [r for r in results if r["config"]["regularizer"]["kind"] == variant]
        finals = [r["final"] for r in mine]
        near_zero = [100 * r["weights"]["near_zero_share"] for r in mine]
        test_acc = [100 * f["test_acc"] for f in finals]
        gap = [100 * (f["train_acc"] - f["val_acc"]) for f in finals]
        row = rows[f"variant={variant}"]
        assert row["runs"] == "2/2"
        assert row["test acc (%)"] == f"{statistics.mean(test_acc):.2f} ± {statistics.stdev(test_acc):.2f}"
        assert row["train−val gap (pp)"] == f"{statistics.mean(gap):.2f} ± {statistics.stdev(gap):.2f}"
        assert row["near-zero weights (%)"] == f"{statistics.mean(near_zero):.2f} ± {statistics.stdev(near_zero):.2f}"


def test_running_and_failed_runs_are_named_and_left_out_of_the_statistics(sweep, tmp_path):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    for name in (*FIGURES, "report.md"):
        (copy / name).unlink()
    running = read_result(copy / "1")  # variant=none, seed=1: as it looks after its first evaluation
    running.update(status="running", epochs_completed=1, history=running["history"][:1], final=running["history"][0])
    for key in ("weights", "entropy_mean"):
        running.pop(key)
    (copy / "1" / "result.json").write_text(json.dumps(running))
    (copy / "3" / "result.json").unlink()  # variant=l1, seed=1: crashed before training

    done = report_cli(str(copy))
    assert done.returncode == 0, done.stderr
    report = (copy / "report.md").read_text()
    assert "4 runs: 2 completed, 1 running, 1 failed." in report
    assert "- job 1 (variant=none): running after epoch 1/3" in report
    assert "- job 3 (variant=l1): failed: no result.json" in report
    rows = {r["configuration"]: r for r in md_table(report, "By configuration")}
    assert rows["variant=none"]["runs"] == "1/2"
    assert rows["variant=none"]["test acc (%)"] == pct(read_result(copy / "0")["final"]["test_acc"])
    assert rows["variant=l1"]["test acc (%)"] == pct(read_result(copy / "2")["final"]["test_acc"])
    jobs = {r["job"]: r for r in md_table(report, "Every run")}
    assert jobs["1"]["status"] == "running" and jobs["1"]["test acc (%)"] == pct(running["final"]["test_acc"])
    assert jobs["3"]["status"] == "failed" and jobs["3"]["test acc (%)"] == "–"
    for name in FIGURES:
        with Image.open(copy / name) as image:
            image.verify()


@pytest.mark.parametrize("target", ["missing", "file", "single_run"])
def test_a_directory_that_is_not_a_multirun_gives_one_line_and_exit_2(target, sweep, tmp_path):
    path = {"missing": tmp_path / "nope", "file": sweep / "report.md", "single_run": sweep / "0"}[target]
    done = report_cli(str(path))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("hreg-report: error: ")
    assert str(path) in done.stderr


def test_configurations_are_overrides_less_seeds_and_less_what_every_run_shares(tmp_path):
    runs = [
        Run(str(i), tmp_path, [f"regularizer={kind}", f"seed={seed}", "epochs=3"], None)
        for i, (kind, seed) in enumerate([("none", 0), ("none", 1), ("l1", 0), ("l1", 1)])
    ]
    assert label_runs(runs) == ["epochs=3"]
    assert {label: [r.name for r in rs] for label, rs in group_runs(runs).items()} == {
        "regularizer=none": ["0", "1"],
        "regularizer=l1": ["2", "3"],
    }
    only_seeds = [Run(str(seed), tmp_path, [f"seed={seed}", f"data.seed={seed}"], None) for seed in (0, 1)]
    label_runs(only_seeds)
    assert [r.label for r in only_seeds] == ["defaults", "defaults"]
