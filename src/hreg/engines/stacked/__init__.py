"""Stacked training: ``hydra/launcher=stacked`` trains a whole batch of runs as one batched model.

- ``grouping``: which jobs can share a stack.
- ``model``: K MLPs as stacked tensors; ``optim``: Adam, AdamW and SGD over them, per-member numbers.
- ``layout``: the members' data as stacked tensors; ``trainer``: an epoch of every member at once;
  ``evaluator``: their losses, accuracies and snapshot measurements at once.
- ``stack``: a stack's members and ``fit_stack``, each member inside its own lifecycle.
- ``job``: a stacked job opened and closed as Hydra's ``run_job`` does.
- ``launcher``: what the Hydra launcher plugin (hydra_plugins/hreg_plugins/stacked_launcher.py) does
  with a batch of jobs; ``pool``: the pool of stacks that hreg's sweeper trains its trials on.
"""
