"""The example plugin keeps the lgvq plugin contract."""

from lgvq_core.testing.contract import PluginContract


class TestExampleBackbonePlugin(PluginContract):
    plugin = "example-backbone"
