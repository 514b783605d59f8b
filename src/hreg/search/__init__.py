"""The Optuna search (``python train.py -m hydra/sweeper=optuna``), on top of hydra-optuna-sweeper.

- ``study``: what the sweeper's and the jobs' sides share (trial attributes, database URLs).
- ``space``: the search space hook (dependent parameters) and its validation.
- ``callback``: the Hydra callback that sets the search's defaults, validates it, resumes its study
  and writes its summary (with hydra_plugins/hreg_plugins/optuna_sweeper.py, the plugin's sweeper
  ending cleanly when no trial completed).
- ``trial``: the job's side, which reports to its trial and stops when pruned.
- ``loop``: hreg's sweep loop (ask, launch, tell; a pool of stacks on the stacked launcher), where a
  pruned run's trial ends PRUNED.
- ``pruners``: ``RungPruner``, successive halving that judges a stack's trials together.
- ``summary``: the trial table and plots, and ``hreg-study``.
"""
