"""Shared test setup: offline, strict plugins, lgvq's pytest fixtures, the test plugin distributions."""

import os
import tempfile
from pathlib import Path

# One thread per process: the suite runs on small CPUs and starts subprocesses (torchrun, CLI runs);
# more threads only oversubscribe the cores. Set before torch is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# Never reach a model hub: a hub attempt without network hangs for ~45 s before failing.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Every plugin failure is fatal in tests (a broken plugin must not hide behind a warning);
# tests of the tolerant behaviour build managers with strict=False or unset it themselves.
os.environ.setdefault("LGVQ_STRICT_PLUGINS", "1")
# lgvq-core's test doubles (tiny-ae, tiny-text, tiny-prior) are opt-in; the suite and its `lgvq` subprocesses use them.
os.environ.setdefault("LGVQ_TEST_COMPONENTS", "1")
# Caches (text features, VQCT word priors) go to a temporary folder, never the user's home.
os.environ.setdefault("LGVQ_CACHE_DIR", tempfile.mkdtemp(prefix="lgvq-test-cache-"))

pytest_plugins = ["lgvq_core.testing.fixtures"]

FIXTURE_PLUGINS = Path(__file__).parent / "fixtures" / "plugins"


@pytest.fixture
def fixture_plugin(install_plugin):
    """``fixture_plugin("sample")``: tests/fixtures/plugins/lgvq-test-sample installed for this test only."""
    return lambda name: install_plugin(FIXTURE_PLUGINS / f"lgvq-test-{name}")


@pytest.fixture(autouse=True)
def _torch_seed():
    """Every test starts from the same global torch seed, whatever ran before it in the process."""
    torch.manual_seed(0)


@pytest.fixture
def component_builds(monkeypatch):
    """Every component built through the registry during the test, as ``(kind, run-file path)`` pairs."""
    from lgvq_core.registry import Registry

    built: list[tuple[str, str]] = []
    original = Registry.build

    def recording(self, kind, table, path="$", context=None):
        built.append((kind, path))
        return original(self, kind, table, path, context)

    monkeypatch.setattr(Registry, "build", recording)
    return built
