"""pytest fixtures for lgvq and its plugins.

Enable them in a ``conftest.py``::

    import os

    os.environ.setdefault("LGVQ_TEST_COMPONENTS", "1")  # tiny-ae / tiny-text in `lgvq` subprocesses too
    pytest_plugins = ["lgvq_core.testing.fixtures"]

The test doubles ``tiny-ae`` and ``tiny-text`` (the ``testing`` plugin) are opt-in: a manager made
by ``make_plugin_manager(["core", "testing"])`` has them because it names them; the process-wide
manager and ``lgvq`` subprocesses have them only with ``LGVQ_TEST_COMPONENTS=1``.

- ``make_plugin_manager(names, plugins=..., strict=True)``: a fresh plugin manager holding only the
  named entry-point plugins (plus plugin objects the test hands over), installed as the
  process-wide manager for the test and replaced by the previous one afterwards.
- ``plugin_manager``: such a manager with lgvq-core's ``core`` and ``testing`` plugins.
- ``run_dir``: an empty temporary folder to use as ``run.output_dir``.
- ``tiny_run_config`` / ``tiny_run_file``: a run file that trains in seconds on CPU, as a dict
  and written as TOML.
- ``lgvq_cli``: call the ``lgvq`` command in-process; get its exit code, stdout and stderr.
- ``install_plugin(project_dir)``: pip-install a plugin project into a temporary folder and put it
  on ``sys.path`` and ``PYTHONPATH`` for the test, so its entry points are found in-process and by
  subprocesses, without touching the environment.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest

from lgvq_core import registry as lgvq_registry
from lgvq_core.cli import main
from lgvq_core.config.describe import dumps_toml
from lgvq_core.plugins import ENTRY_POINT_GROUP, LgvqPluginManager, plugin_names
from lgvq_core.registry import set_plugin_manager

#: The run file of ``tiny_run_config``, without ``run.output_dir`` (the fixture sets it).
#: The tiny-ae backbone with a small ``vq`` codebook on 32-pixel ``shapes`` images, the tiny-text
#: encoder and the three LG-VQ losses at the official CelebA-HQ weights: every part of a run,
#: fast enough for a test.
TINY_RUN: dict[str, Any] = {
    "run": {"name": "tiny", "seed": 0, "device": "cpu", "progress": "off", "log_every": 1},
    "train": {
        "batch_size": 4,
        "max_steps": 2,
        "base_lr": 1e-3,
        "lr_scaling": "none",
        "val_every": 2,
        "val_batches": 1,
        "checkpoint_every": 2,
        "sample_every": 2,
    },
    "model": {
        "backbone": {"type": "tiny-ae", "hidden": 8, "downsample": 4},
        "quantizer": {"type": "vq", "codebook_size": 32, "dim": 16},
    },
    "code_vit": {"layers": 1, "heads": 1},
    "text_encoder": {"type": "tiny-text", "width": 32, "vocab_size": 256, "context_length": 16},
    "alignment": [
        {"type": "semantic-nce", "weight": 0.001},
        {"type": "masked-text", "weight": 0.01},
        {"type": "relation", "weight": 0.0001},
    ],
    "data": {"type": "shapes", "image_size": 32, "num_train": 16, "num_val": 8, "captions_per_image": 2},
}


def write_run_file(config: Mapping[str, Any], path: str | Path) -> Path:
    """Write a run-file dict as TOML and return the path."""
    path = Path(path)
    path.write_text(dumps_toml(dict(config)), encoding="utf-8")
    return path


def installed_plugin_names() -> list[str]:
    """Names of every plugin in the ``lgvq`` entry-point group (installed or on ``sys.path``), and
    ``testing``: naming lgvq-core's test doubles opts in to them."""
    return plugin_names(testing=True)


@pytest.fixture
def make_plugin_manager() -> Iterator[Callable[..., LgvqPluginManager]]:
    """Factory of fresh plugin managers that hold only the plugins a test names.

    ``make_plugin_manager(names=("core", "testing"), plugins=(), strict=True, install=True)``:

    - ``names``: entry-point plugins to load (an unknown name fails the test);
    - ``plugins``: extra plugin objects (modules, classes, instances): a mapping of plugin name to
      object, or objects registered under their ``__name__``;
    - ``strict``: a plugin failure raises :class:`~lgvq_core.errors.PluginLoadError`;
    - ``install``: make it the process-wide manager (what ``get_registry()`` and the CLI use).

    The previous process-wide manager comes back when the test ends.
    """
    previous = lgvq_registry._MANAGER
    installed = False

    def make(
        names: Iterable[str] = ("core", "testing"),
        plugins: Mapping[str, Any] | Iterable[Any] = (),
        strict: bool = True,
        install: bool = True,
    ) -> LgvqPluginManager:
        nonlocal installed
        names = list(names)
        missing = sorted(set(names) - set(installed_plugin_names()))
        if missing:
            raise LookupError(
                f"no plugin named {', '.join(map(repr, missing))} in the {ENTRY_POINT_GROUP!r} entry-point "
                f"group; installed: {', '.join(installed_plugin_names())}"
            )
        manager = LgvqPluginManager(strict=strict)
        manager.load_entry_points(disabled=(), only=names)
        extra = plugins.items() if isinstance(plugins, Mapping) else ((_plugin_name(p), p) for p in plugins)
        for name, plugin in extra:
            manager.register_plugin(plugin, name, "(registered by the test)", "0")
        if install:
            set_plugin_manager(manager)
            installed = True
        return manager

    yield make
    if installed:
        set_plugin_manager(previous)


def _plugin_name(plugin: Any) -> str:
    return getattr(plugin, "__name__", None) or type(plugin).__name__


@pytest.fixture
def plugin_manager(make_plugin_manager: Callable[..., LgvqPluginManager]) -> LgvqPluginManager:
    """A fresh strict plugin manager with lgvq-core's ``core`` and ``testing`` plugins, installed for the test."""
    return make_plugin_manager(["core", "testing"])


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """An empty folder for run directories (``run.output_dir``), removed with the test's tmp_path."""
    path = tmp_path / "runs"
    path.mkdir()
    return path


@pytest.fixture
def tiny_run_config(run_dir: Path) -> dict[str, Any]:
    """A run file as a dict (a fresh copy: change it freely) that trains in seconds on CPU.

    It writes its runs under ``run_dir``. See :data:`TINY_RUN` for what it contains.
    """
    config = copy.deepcopy(TINY_RUN)
    config["run"]["output_dir"] = str(run_dir)
    return config


@pytest.fixture
def tiny_run_file(tiny_run_config: dict[str, Any], tmp_path: Path) -> Path:
    """``tiny_run_config`` written to ``<tmp_path>/tiny.toml``."""
    return write_run_file(tiny_run_config, tmp_path / "tiny.toml")


@attrs.frozen
class CliResult:
    """What one ``lgvq`` command did: its exit code and what it printed."""

    code: int
    out: str
    err: str


@pytest.fixture
def lgvq_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run ``lgvq ARGS...`` in-process (with the process-wide plugin manager) and capture it."""

    def run(*argv: str) -> CliResult:
        capsys.readouterr()
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse usage errors
            code = exc.code if isinstance(exc.code, int) else 2
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def _plugin_builds() -> dict[Path, Path]:
    """Project folder -> the folder it was installed into, for the whole test session."""
    return {}


@pytest.fixture
def install_plugin(
    _plugin_builds: dict[Path, Path], tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Callable[[str | Path], Path]:
    """``install_plugin(project_dir) -> folder``: make a plugin project installed, for this test only.

    The project (a folder with ``pyproject.toml``) is installed once per test session with
    ``pip install --no-deps --no-index --no-build-isolation --target <folder>`` (its build backend,
    e.g. hatchling, must be importable), so the real wheel metadata and entry points exist. The
    folder is put in front of ``sys.path`` and ``PYTHONPATH`` until the test ends; the environment
    itself is never changed.
    """

    def install(project_dir: str | Path) -> Path:
        project = Path(project_dir).resolve()
        target = _plugin_builds.get(project)
        if target is None:
            target = tmp_path_factory.mktemp(f"plugin-{project.name}")
            command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
            command += ["--no-build-isolation", "--target", str(target), str(project)]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(f"could not install {project}:\n{result.stdout}\n{result.stderr}")
            _plugin_builds[project] = target
        monkeypatch.syspath_prepend(str(target))
        existing = os.environ.get("PYTHONPATH")
        monkeypatch.setenv("PYTHONPATH", str(target) + (os.pathsep + existing if existing else ""))
        return target

    return install
