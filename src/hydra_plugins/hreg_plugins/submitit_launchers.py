"""hreg's ``submitit_local`` and ``submitit_slurm`` launchers: the plugin's, with a lost worker failing its job only.

``hreg.cluster.SubmititLaunchers`` (a callback) puts these in place of the
plugin's classes; the work is in ``hreg.cluster.launch`` (which submits the jobs
as the plugin's own ``launch`` does, through submitit's public API).
"""

from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher import submitit_launcher as plugin


class LocalLauncher(plugin.LocalLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hreg.cluster import launch

        return launch(self, "local", job_overrides, initial_job_idx)


class SlurmLauncher(plugin.SlurmLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hreg.cluster import launch

        return launch(self, "slurm", job_overrides, initial_job_idx)
