"""lgvq-tasks keeps the contract every third-party plugin is held to."""

import pytest

from lgvq_core.testing.contract import PluginContract

pytestmark = pytest.mark.slow  # builds every task and imports the plugin in a fresh interpreter


class TestTasksPlugin(PluginContract):
    plugin = "tasks"
