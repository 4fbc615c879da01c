import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LGVQ_STRICT_PLUGINS", "1")
# lgvq-core's test doubles (tiny-ae, tiny-text, tiny-prior) are opt-in; `lgvq` subprocesses of the tests see them too.
os.environ.setdefault("LGVQ_TEST_COMPONENTS", "1")

pytest_plugins = ["lgvq_core.testing.fixtures"]
