"""lgvq-core's own plugins keep the contract every third-party plugin is held to."""

from lgvq_core.testing.contract import PluginContract


class TestCorePlugin(PluginContract):
    plugin = "core"


class TestTestingPlugin(PluginContract):
    plugin = "testing"
