"""hreg's Hydra plugins (Hydra finds plugins in the ``hydra_plugins`` namespace package).

- ``optuna_sweeper``: the Optuna plugin's sweeper, ending cleanly when no trial completed.
- ``stacked_launcher``: ``hydra/launcher=stacked``, many runs trained as one batched model.
- ``submitit_launchers``: submitit's launchers, with a lost worker failing its job only.

Hydra imports these modules at every start: they import nothing heavy at the top.
"""
