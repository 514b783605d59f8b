"""Which jobs can train together as one stack, and how many members a stack may hold.

Jobs stack when they share what gives every member the same shapes and the same
schedule: the model's layer sizes, the optimizer class, the batch size, the
training-set size, the number of epochs, the evaluation cadence, the
learning-rate schedule, the device and ``train.cuda_graph``; off a GPU, the
normalisation too (its kind and settings). Everything else may differ member by
member: seeds and splits, normalisation on a GPU (none, BatchNorm, LayerNorm: a
stack normalises each run of members with one as a block; on a GPU, where a
small stack's epoch is bound by kernel launches, one stack should beat three; on
a CPU a mixed stack trained slower than the separate ones
(``bench_stacked.py --parts mixed``), so there they stay apart), learning rate
and the optimizer's other numbers, penalty kind and strength, dropout,
augmentation kind and strengths, and every per-run setting (objective,
TensorBoard, checkpoints, early stopping, Optuna trial). A job whose config uses
something the stacked engine does not implement (another model, norm, penalty or
augmentation class, an optimizer option such as amsgrad) gets no key: it runs
alone, through the native loop.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from hreg.engines import engine_name
from hreg.engines.stacked.optim import stackable

#: Memory a member of a stack takes beyond the data (weights, optimizer state, activations of a
#: training batch and of an evaluation chunk, its own copy of the model), measured with margin
#: (``benchmarks/bench_stacked.py``).
MEMORY_PER_MEMBER = 48 * 2**20
#: Memory of one split of MNIST on the device (train, validation and test images as float32).
MEMORY_PER_SPLIT = 230 * 2**20
#: On a CPU, bigger stacks than this train no faster per member (``benchmarks/bench_stacked.py``).
CPU_MEMBERS = 12

MODEL = "hreg.model.MLP"
PENALTY = "hreg.regularizer.WeightPenalty"
AUGMENT = "hreg.augment.build_augment"
NORMS = {"torch.nn.BatchNorm1d": {"eps", "momentum"}, "torch.nn.LayerNorm": {"eps"}}


def _norm_stackable(norm: DictConfig | None) -> bool:
    """Whether a stack can build this norm layer (a member's own, whatever its stack-mates')."""
    if norm is None:
        return True
    target = norm.get("_target_")
    if target not in NORMS or not norm.get("_partial_", False):
        return False
    extra = {k: v for k, v in norm.items() if not k.startswith("_")}
    return not set(extra) - NORMS[target] and (
        target != "torch.nn.BatchNorm1d" or isinstance(extra.get("momentum", 0.1), float))


def stack_key(cfg: DictConfig, device: str) -> Hashable | None:
    """What must be equal for two runs to share a stack; None when this run cannot be stacked."""
    model = cfg.model
    if model.get("_target_") != MODEL or cfg.regularizer.get("_target_") != PENALTY:
        return None
    if cfg.augment.get("_target_") != AUGMENT or not stackable(cfg.optimizer):
        return None
    norm = model.get("norm")
    if not _norm_stackable(norm) or engine_name(cfg) != "native":
        return None
    # Off a GPU, one stack per normalisation (kind and settings); on a GPU, one for all of them.
    own_stack = None if device.startswith("cuda") or norm is None else OmegaConf.to_yaml(norm, resolve=True)
    return (
        model.in_features, tuple(model.hidden), model.num_classes, own_stack, cfg.optimizer._target_,
        cfg.data.batch_size, cfg.data.train_fraction, cfg.epochs, cfg.eval_every, cfg.lr_schedule, device,
        str(cfg.train.cuda_graph),
    )


def plan_stacks(keys: Sequence[Hashable | None], max_members: int) -> list[list[int]]:
    """Job indices in stacks: jobs of one key together, at most ``max_members`` a stack, in job order;
    a job without a key alone."""
    groups: dict[Hashable, list[int]] = {}
    alone: list[list[int]] = []
    for index, key in enumerate(keys):
        if key is None:
            alone.append([index])
        else:
            groups.setdefault(key, []).append(index)
    stacks = [members[i : i + max_members] for members in groups.values() for i in range(0, len(members), max_members)]
    return sorted(stacks + alone, key=lambda members: members[0])


def default_max_members(device: torch.device, splits_per_member: float) -> int:
    """As many members as fit in half of the free memory of ``device`` (on a CPU, at most CPU_MEMBERS),
    each counting MEMORY_PER_MEMBER and its share of the data splits: ``splits_per_member`` is the
    batch's distinct splits over its jobs (1 in a sweep over seeds, where each seed has its own split)."""
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        import psutil

        free = psutil.virtual_memory().available
    fit = max(1, int(0.5 * free // (MEMORY_PER_MEMBER + splits_per_member * MEMORY_PER_SPLIT)))
    return fit if device.type == "cuda" else min(fit, CPU_MEMBERS)


def data_key(cfg: DictConfig) -> str:
    """What decides a job's splits: its data config, resolved (``data.seed`` is ``${seed}`` by default)."""
    return OmegaConf.to_yaml(cfg.data, resolve=True)
