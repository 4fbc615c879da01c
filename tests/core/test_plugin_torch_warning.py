"""`lgvq plugins` names a plugin whose import pulls in torch (it makes every listing slow)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import importlib, importlib.metadata, sys, types
from lgvq_core import plugins

class Point:
    name, group, value = "heavy", "lgvq", "heavy_plugin"
    dist = types.SimpleNamespace(name="acme-heavy", version="1.0", metadata={"Name": "acme-heavy"})
    def load(self):
        import torch  # noqa: F401 - the mistake under test
        return types.ModuleType("heavy_plugin")

real = importlib.metadata.entry_points
importlib.metadata.entry_points = lambda group=None, **kw: [Point()] if group == "lgvq" else real(group=group, **kw)
assert "torch" not in sys.modules
manager = plugins.LgvqPluginManager(strict=False)
manager.load_entry_points(disabled=())
print("\n".join(manager.warnings))
"""


def test_a_plugin_whose_import_pulls_in_torch_is_named():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "plugin 'heavy' (acme-heavy 1.0): importing heavy_plugin imported torch" in out.stdout


def test_lgvq_plugins_of_lgvq_itself_imports_no_torch():
    out = subprocess.run(
        [sys.executable, "-m", "lgvq_core.cli", "plugins"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "imported torch" not in out.stderr
