import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LGVQ_STRICT_PLUGINS", "1")

pytest_plugins = ["lgvq_core.testing.fixtures"]
