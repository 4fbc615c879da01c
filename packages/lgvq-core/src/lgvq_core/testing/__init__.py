"""Testing support for lgvq and its plugins.

- :mod:`lgvq_core.testing.fixtures`: pytest fixtures (``pytest_plugins = ["lgvq_core.testing.fixtures"]``):
  a fresh plugin manager holding only the named plugins, a temporary run folder, a tiny run file,
  the ``lgvq`` command in-process.
- :mod:`lgvq_core.testing.contract`: the plugin contract suite any plugin runs on itself
  (``class TestMine(PluginContract): plugin = "mine"``).
- :mod:`lgvq_core.testing.doubles`: the ``tiny-ae`` backbone and ``tiny-text`` encoder, registered by
  the ``testing`` plugin.

Importing this package imports neither pytest nor torch: the ``testing`` plugin lives here.
"""
