"""Stacked training: ``hydra/launcher=stacked`` trains a whole batch of runs as one batched model.

- ``grouping``: which jobs can share a stack.
- ``model``: K MLPs as stacked tensors; ``optim``: Adam, AdamW and SGD over them, per-member numbers.
- ``stack``: one epoch and one evaluation of a stack, and ``fit_stack``, each member inside its own lifecycle.
- ``launcher``: what the Hydra launcher plugin (hydra_plugins/hreg_plugins/stacked_launcher.py) does
  with a batch of jobs.
"""
