"""The learning rate through a run (``lr_schedule``): a pure function of the epoch, as torch's schedulers step it."""

from __future__ import annotations

import pytest
import torch

from hreg.schedule import LR_SCHEDULES, lr_factor, set_lr


@pytest.mark.parametrize("epochs", [1, 7, 1000])
def test_cosine_is_torchs_cosine_annealing_stepped_once_an_epoch(epochs):
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([weight], lr=0.01)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=0.0)
    for epoch in range(1, epochs + 1):
        assert 0.01 * lr_factor("cosine", epoch, epochs) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-9)
        optimizer.step()
        scheduler.step()


def test_constant_keeps_the_optimizers_rate_and_every_schedule_starts_at_it():
    assert all(lr_factor("constant", epoch, 10) == 1.0 for epoch in range(1, 11))
    assert all(lr_factor(schedule, 1, 10) == 1.0 for schedule in LR_SCHEDULES)


def test_set_lr_scales_the_rate_a_run_started_with_not_the_last_one_it_set():
    """What a resumed run relies on: ``initial_lr`` is kept (and saved in the optimizer's state dict)."""
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    set_lr(optimizer, 0.5)
    set_lr(optimizer, 0.25)
    restored = torch.optim.SGD([weight], lr=0.1)
    restored.load_state_dict(optimizer.state_dict())
    set_lr(restored, 0.2)
    assert optimizer.param_groups[0]["lr"] == 0.025 and restored.param_groups[0]["lr"] == pytest.approx(0.02)
