"""The benchmarks' second floor replays exactly the matrix products that a default run makes.

``benchmarks/floor.py`` times a training epoch's and an evaluation's products alone, at the
run's shapes, and ``bench_run.py --compare floor`` judges the loop against them. Those products
are only a floor while they are the run's own: the torch profiler (its public API) lists the
``mm`` and ``addmm`` calls, with their operand shapes, of the native loop on MNIST and of the
replay, and the two lists must agree.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from hreg.data import build_data
from hreg.engines.native import train_epoch
from hreg.metrics import eval_chunk, evaluate_all
from hreg.model import MLP
from hreg.regularizer import WeightPenalty
from tests.conftest import compose_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from floor import SPLITS, TRAIN_IMAGES, gemm_work  # noqa: E402

PRODUCTS = ("aten::mm", "aten::addmm")


def products(work: Callable[[], object]) -> Counter:
    """How many times ``work`` calls each matrix product, by operand shapes."""
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        work()
    return Counter((e.name, str(e.input_shapes)) for e in prof.events() if e.name in PRODUCTS)


def test_the_replay_makes_the_default_runs_products() -> None:
    cfg = compose_config()
    data = build_data(cfg.data, torch.device("cpu"))
    assert (len(data.train), len(data.val), len(data.test)) == SPLITS and len(data.train) == TRAIN_IMAGES
    model = MLP()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    epoch, evaluation = gemm_work("cpu")

    trained = products(lambda: train_epoch(model, data.train, cfg.data.batch_size, optimizer, WeightPenalty()))
    evaluated = products(lambda: evaluate_all(model, data))

    assert sum(trained.values()) == 10 * 11  # 10 batches of 300: 4 forward, 4 weight and 3 input gradients
    assert trained == products(epoch)
    assert evaluated == products(lambda: evaluation(eval_chunk(torch.device("cpu"))))
