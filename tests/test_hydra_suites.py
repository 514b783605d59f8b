"""Hydra's own launcher test suites (``hydra.test_utils.launcher_common_tests``) on ``hydra/launcher=stacked``,
as Hydra's launcher plugins run them: the suites' applications are not hreg runs, so the launcher runs
each of their jobs through Hydra's ``run_job``, as the basic launcher does. What is particular to hreg's
runs on stacks (directories, files, callbacks, returns) is in test_stacked.py, test_stacked_job.py and test_pool.py.
"""

from __future__ import annotations

import pytest
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.version import VersionBase
from packaging.version import Version
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from hydra_plugins.hreg_plugins.stacked_launcher import StackedLauncher


@pytest.fixture(autouse=True)
def hydra_compat_defaults():
    """The suites expect Hydra's defaults without a ``version_base`` (1.1's: a job runs in its output
    directory); tests before them in the same worker composed with ``version_base="1.3"``."""
    base = VersionBase.instance()
    before = base.getbase()
    base.setbase(Version("1.1"))
    yield
    base.version_base = before


def test_hydra_discovers_the_stacked_launcher():
    assert StackedLauncher.__name__ in [plugin.__name__ for plugin in Plugins.instance().discover(Launcher)]


@pytest.mark.parametrize("launcher_name, overrides", [("stacked", [])])
class TestStackedLauncher(LauncherTestSuite):
    pass


@pytest.mark.parametrize("task_launcher_cfg, extra_flags",
                         [({"defaults": [{"override hydra/launcher": "stacked"}, "_self_"]}, ["-m"])])
class TestStackedLauncherIntegration(IntegrationTestSuite):
    pass
