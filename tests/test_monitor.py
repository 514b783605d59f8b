"""TensorBoard event files: what a run records, read back as TensorBoard would."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hreg.monitor import snapshot_epochs
from hreg.run import train
from tests.conftest import compose_config, events

EPOCHS = 12
SNAPSHOTS = 4
LAYERS = ["fc1", "fc2", "fc3", "fc4"]


@pytest.fixture(scope="module", params=["native", "lightning"])
def runs(request, tmp_path_factory):
    """The same short run, unregularized and with a strong L1 penalty, trained by each engine."""
    out = {}
    for name, overrides in {"none": [], "l1": ["regularizer=l1", "regularizer.lam=1e-3"]}.items():
        run_dir = tmp_path_factory.mktemp(name)
        cfg = compose_config(f"epochs={EPOCHS}", "eval_every=4", f"monitor.histograms={SNAPSHOTS}",
                             f"engine={request.param}", *overrides)
        out[name] = (run_dir, train(cfg, run_dir), events(run_dir))
    return out


def test_snapshot_epochs_are_at_most_n_evaluation_epochs_with_first_and_last():
    for epochs, count, every in [(1000, 20, 10), (1000, 20, 1), (12, 4, 4), (5, 20, 1), (1, 3, 10), (7, 1, 2)]:
        chosen = snapshot_epochs(epochs, count, every)
        assert len(chosen) <= count and epochs in chosen and (count == 1 or 1 in chosen)
        assert all(e == 1 or e == epochs or e % every == 0 for e in chosen)
    assert len(snapshot_epochs(1000, 20, 10)) == 20
    # A huge count (a user's monitor.histograms=10**12) is every evaluation, at once: once it took O(count).
    assert snapshot_epochs(1000, 10**12, 10) == snapshot_epochs(1000, 101, 10) == {1, *range(10, 1001, 10)}


def test_scalars_at_every_evaluation(runs):
    _, result, acc = runs["none"]
    tags = acc.Tags()["scalars"]
    for tag in ["loss/train", "loss/val", "loss/test", "accuracy/val", "loss/train_batches_data",
                "loss/train_batches_penalty", "optim/lr"]:
        assert tag in tags
        assert [e.step for e in acc.Scalars(tag)] == [h["epoch"] for h in result.history] == [1, 4, 8, 12]
    assert acc.Scalars("loss/val")[-1].value == pytest.approx(result.final["val_loss"], rel=1e-5)


def test_penalty_is_logged_apart_from_the_data_loss(runs):
    _, _, acc = runs["l1"]
    assert all(e.value > 0 for e in acc.Scalars("loss/train_batches_penalty"))
    _, _, plain = runs["none"]
    assert all(e.value == 0 for e in plain.Scalars("loss/train_batches_penalty"))


def test_histograms_for_every_linear_layer_at_most_n_snapshots(runs):
    _, _, acc = runs["none"]
    histograms = acc.Tags()["histograms"]
    for tag in [f"{kind}/{layer}" for kind in ("weights", "input_grad") for layer in LAYERS] + ["entropy/model"]:
        assert tag in histograms
        steps = [e.step for e in acc.Histograms(tag)]
        assert len(steps) <= SNAPSHOTS and steps[0] == 1 and steps[-1] == EPOCHS
    grad = acc.Histograms("input_grad/fc1")[-1].histogram_value
    assert grad.num == 300 * 784 and grad.sum_squares > 0  # d loss / d input of fc1, one training batch


def test_random_model_entropy_is_near_max_and_trained_entropy_is_lower(runs):
    _, result, acc = runs["none"]
    random_mean = acc.Scalars("entropy/random_model_mean")[0].value
    assert acc.Scalars("entropy/max_log10")[0].value == pytest.approx(math.log(10))
    assert 0.9 * math.log(10) < random_mean <= math.log(10)
    assert "entropy/random_model" in acc.Tags()["histograms"]
    trained = acc.Scalars("entropy/model_mean")[-1].value
    assert trained < 0.5 * random_mean
    assert result.extras["random_model_entropy"] == pytest.approx(random_mean, rel=1e-5)


def mass_near_zero(histogram, threshold: float) -> float:
    limits = np.array(histogram.bucket_limit)
    counts = np.array(histogram.bucket)
    lower = np.concatenate([[histogram.min], limits[:-1]])
    inside = (lower >= -threshold) & (limits <= threshold)
    return counts[inside].sum() / counts.sum()


def test_l1_puts_more_weight_mass_near_zero(runs):
    for layer in ("fc1", "fc2"):
        shares = {
            name: mass_near_zero(acc.Histograms(f"weights/{layer}")[-1].histogram_value, 0.01)
            for name, (_, _, acc) in runs.items()
        }
        assert shares["l1"] > 1.5 * shares["none"], shares


def test_hparams_table_is_written(runs):
    run_dir, _, _ = runs["l1"]
    plugin = events(run_dir).PluginTagToContent("hparams")
    assert "_hparams_/experiment" in plugin and "_hparams_/session_start_info" in plugin
    assert b"regularizer" in plugin["_hparams_/session_start_info"] and b"l1" in plugin["_hparams_/session_start_info"]


def test_event_files_stay_small(runs):
    run_dir, _, _ = runs["none"]
    size = sum(p.stat().st_size for p in run_dir.glob("events.out.tfevents.*"))
    assert size < 1_000_000  # 4 snapshots; a default 1000-epoch run with 20 is about 1.3 MB


@pytest.mark.parametrize("on_host", [True, False], ids=["numpy", "torch"])
@pytest.mark.parametrize("values", [torch.randn(300 * 784) * 1e-3, torch.rand(10000) * 2.3, -torch.rand(7),
                                    torch.tensor([0.0, 0.0, 1e-13])], ids=["gradients", "entropies", "negative", "zeros"])
def test_histograms_are_tensorboards_own_counted_on_the_host_or_the_device(values, on_host, tmp_path):
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import make_histogram

    from hreg.monitor import histogram

    edges = SummaryWriter(log_dir=str(tmp_path)).default_bins
    expected = make_histogram(values.double().numpy(), np.array(edges))
    got = histogram(values, torch.tensor(edges, dtype=torch.float64), on_host=on_host)
    assert got["bucket_counts"] == list(expected.bucket) and got["bucket_limits"] == list(expected.bucket_limit)
    assert got["num"] == expected.num and got["min"] == expected.min and got["max"] == expected.max
    assert got["sum"] == pytest.approx(expected.sum) and got["sum_squares"] == pytest.approx(expected.sum_squares)


def test_event_files_read_whole_with_their_checksums(runs):
    # Each record's checksum is checked as TensorBoard reads it (events() above): the run's files read whole.
    _, result, acc = runs["none"]
    assert [e.step for e in acc.Scalars("loss/val")] == [m["epoch"] for m in result.history]
