"""The study preset and hreg-report, on a real small multirun of the preset (2 variants x 3 seeds, 3 epochs)."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
from pathlib import Path

import pytest
import yaml
from scipy import stats
from omegaconf import OmegaConf
from PIL import Image

from hreg.report.runs import Run, group_runs, label_runs
from tests.conftest import CONF_DIR, compose_config, read_result, run_cli, run_train

FIGURES = ("loss_curves.png", "accuracy.png", "weights.png")
VARIANTS = ("none", "l1")
SEEDS = (0, 1, 2)


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


def interval(values: list[float]) -> str:
    """``mean [low, high]``: scipy's Student t 95% interval of the mean, as the report writes it."""
    mean = statistics.mean(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=stats.sem(values))
    return f"{mean:.2f} [{low:.2f}, {high:.2f}]"


def test_configuration_table_gives_mean_and_95_interval_over_seeds(sweep):
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
        assert row["runs"] == f"{len(SEEDS)}/{len(SEEDS)}"
        assert row["test acc (%)"] == interval(test_acc)
        assert row["train−val gap (pp)"] == interval(gap)
        assert row["near-zero weights (%)"] == interval(near_zero)


def test_each_configuration_is_compared_with_the_baseline_seed_by_seed(sweep):
    report = (sweep / "report.md").read_text()
    [row] = md_table(report, "Which differences are real")
    by_seed = {(r["config"]["regularizer"]["kind"], r["config"]["seed"]): 100 * r["final"]["test_acc"]
               for r in map(read_result, job_dirs(sweep))}
    l1, none = ([by_seed[(kind, s)] for s in SEEDS] for kind in ("l1", "none"))
    reference = stats.ttest_rel(l1, none)
    low, high = reference.confidence_interval()
    assert row["configuration"] == "variant=l1" and row["paired seeds"] == "3"
    assert row["test acc difference (pp)"] == f"{statistics.mean(l1) - statistics.mean(none):+.2f}"
    assert row["95% interval"] == f"[{low:+.2f}, {high:+.2f}]"
    assert float(row["p (paired t)"]) == pytest.approx(reference.pvalue, abs=5e-4)
    assert row["p (Holm)"] == row["p (paired t)"]  # one comparison: nothing to correct
    assert row["verdict"] == ("no significant difference" if reference.pvalue >= 0.05 else
                              "better" if statistics.mean(l1) > statistics.mean(none) else "worse")
    assert "against `variant=none`, paired by seed (the same seed: the same initial weights and split)" in report


def test_another_baseline_is_named_on_the_command_line_and_a_wrong_one_is_said(sweep, tmp_path):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    assert report_cli(str(copy), "--baseline", "variant=l1").returncode == 0
    [row] = md_table((copy / "report.md").read_text(), "Which differences are real")
    assert row["configuration"] == "variant=none" and row["paired seeds"] == "3"
    assert report_cli(str(copy), "--baseline", "variant=l3").returncode == 0
    assert ("The baseline `variant=l3` (report.baseline) is not among the configurations with finished runs: "
            "`variant=none`, `variant=l1`.") in (copy / "report.md").read_text()


def test_fewer_than_three_seeds_give_no_test_and_say_so(sweep, tmp_path):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    for job in job_dirs(copy):
        if read_result(job)["config"]["seed"] == 2:
            shutil.rmtree(job)
    done = report_cli(str(copy))
    assert done.returncode == 0, done.stderr
    report = (copy / "report.md").read_text()
    [row] = md_table(report, "Which differences are real")
    assert row["paired seeds"] == "2" and row["95% interval"] == "–" and row["p (Holm)"] == "–"
    assert "No test is possible: a test needs at least 3 seeds" in report


def test_known_differences_are_reported_in_words_with_their_intervals(sweep, tmp_path):
    """Hand-made records: `augment` +2 points on every seed give or take 0.1, `l1` no real change, against none."""
    template = read_result(job_dirs(sweep)[0])
    accuracy = {"none": [96.0, 96.5, 95.8, 96.2, 96.4], "augment": [98.1, 98.3, 97.8, 98.2, 98.4],
                "l1": [96.1, 96.3, 95.9, 96.4, 96.2]}
    for job, (variant, seed) in enumerate((v, s) for v in accuracy for s in range(5)):
        job_dir = tmp_path / "sweep" / str(job)
        (job_dir / ".hydra").mkdir(parents=True)
        (job_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"variant={variant}", f"seed={seed}"]))
        record = json.loads(json.dumps(template))
        record["final"]["test_acc"] = accuracy[variant][seed] / 100
        (job_dir / "result.json").write_text(json.dumps(record))
    done = report_cli(str(tmp_path / "sweep"))
    assert done.returncode == 0, done.stderr
    report = (tmp_path / "sweep" / "report.md").read_text()
    rows = {r["configuration"]: r for r in md_table(report, "Which differences are real")}
    p_values = {v: stats.ttest_rel(accuracy[v], accuracy["none"]).pvalue for v in ("augment", "l1")}
    holm = {v: min(1.0, p * (2 if p == min(p_values.values()) else 1)) for v, p in p_values.items()}
    holm["l1"] = max(holm["l1"], holm["augment"])
    for variant in ("augment", "l1"):
        assert float(rows[f"variant={variant}"]["p (Holm)"].replace("< ", "")) == pytest.approx(holm[variant], abs=1e-3)
    assert rows["variant=augment"]["verdict"] == "better" and rows["variant=augment"]["p (Holm)"] == "< 0.001"
    assert rows["variant=l1"]["verdict"] == "no significant difference"
    low, high = stats.ttest_rel(accuracy["augment"], accuracy["none"]).confidence_interval()
    assert f"- Better than `variant=none`: `variant=augment`: +1.98 points [{low:+.2f}, {high:+.2f}], p < 0.001." in report
    assert "- No significant difference at 5%: `variant=l1`." in report
    assert "- Worse than `variant=none`: none." in report


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
    (copy / "4" / "result.json").unlink()  # variant=l1, seed=1: crashed before training

    done = report_cli(str(copy))
    assert done.returncode == 0, done.stderr
    report = (copy / "report.md").read_text()
    assert "6 runs: 4 completed, 1 running, 1 failed." in report
    assert "- job 1 (variant=none): running after epoch 1/3" in report
    assert "- job 4 (variant=l1): failed: no result.json" in report
    rows = {r["configuration"]: r for r in md_table(report, "By configuration")}
    assert rows["variant=none"]["runs"] == "2/3"
    for variant, jobs in (("none", "02"), ("l1", "35")):
        accuracy = [100 * read_result(copy / job)["final"]["test_acc"] for job in jobs]
        assert rows[f"variant={variant}"]["test acc (%)"] == interval(accuracy)
    assert md_table(report, "Which differences are real")[0]["paired seeds"] == "2"  # seeds 0 and 2: no test
    jobs = {r["job"]: r for r in md_table(report, "Every run")}
    assert jobs["1"]["status"] == "running" and jobs["1"]["test acc (%)"] == pct(running["final"]["test_acc"])
    assert jobs["4"]["status"] == "failed" and jobs["4"]["test acc (%)"] == "–"
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
