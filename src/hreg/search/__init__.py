"""The Optuna search (``python train.py -m hydra/sweeper=optuna``): hreg's sweeper on Optuna 5.

- ``loop``: the sweep (ask, launch, tell; a pool of stacks on a pool launcher), where each trial
  ends as its run did (a pruned run's trial PRUNED).
- ``distributions``: Hydra's sweep syntax as Optuna distributions; ``sampler``: the plugin's sampler
  configs built for today's Optuna; ``space``: ``search.space`` (dependent parameters) and its checks.
- ``study``: what the sweeper's and the jobs' sides share (trial attributes, the storage).
- ``trial``: the job's side, which reports to the trial it was given and stops when pruned.
- ``pool``: the launcher interface that asks for jobs one by one; ``pruners``: ``RungPruner``.
- ``outage``: riding through a database that does not answer; ``heartbeat``: finding vanished workers.
- ``callback``: the Hydra callback that sets the sweep directory and launcher, checks the search,
  resumes its study and writes its summary; ``summary``: the trial table and plots, ``hreg-study``;
  ``learned``: which parameters mattered; ``history``: ``optimization_history.png``, every trial in it.
"""
