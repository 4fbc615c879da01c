"""Maintainer sessions. ``nox -l`` lists them; ``nox`` runs lint, tests, contract and isolated.

    nox -s "tests(core)"            one package's tests (core, backbones, text_encoders, tasks, integration)
    nox -s isolated                 each package's wheel alone in a fresh virtualenv
    nox -s contract                 the plugin contract on every installed plugin
    nox -s combos                   every backbone x quantizer x (no LG, LG per text encoder): a few CPU steps each
    nox -s combos contract -- --plugin PATH     the same for the plugin project at PATH (installed first)
    nox -s wheels [-- DIR]          the four packages' wheels into DIR (default dist/), to install from
    nox -s bench -- --steps 5       benchmarks (not run by default, never in CI)

Torch is pinned (``torch==2.14.1``, ``torchvision==0.29.1``). With its CUDA libraries it takes
about 5 GB, so it is installed once per machine, into a folder of its own
(``~/.cache/lgvq/nox/torch-<version>-cp<python>``; ``LGVQ_NOX_TORCH`` names another), and every
session's virtualenv sees that folder through a ``.pth`` file: each virtualenv still has only its
own packages, and pip treats the pinned torch as installed when it resolves the packages' ``torch>=``
requirements. The example plugin's noxfile uses the same folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests", "contract", "isolated"]

ROOT = Path(__file__).resolve().parent
TORCH = ("torch==2.14.1", "torchvision==0.29.1")
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

#: Short name -> (distribution, project folder, import name).
PACKAGES = {
    "core": ("lgvq-core", "packages/lgvq-core", "lgvq_core"),
    "backbones": ("lgvq-backbones", "packages/lgvq-backbones", "lgvq_backbones"),
    "text_encoders": ("lgvq-text-encoders", "packages/lgvq-text-encoders", "lgvq_text_encoders"),
    "tasks": ("lgvq-tasks", "packages/lgvq-tasks", "lgvq_tasks"),
    "loggers": ("lgvq-loggers", "packages/lgvq-loggers", "lgvq_loggers"),
}
EXAMPLE_PLUGIN = "examples/plugins/lgvq-example-backbone"


# ------------------------------------------------------------------------------------------
# installing
# ------------------------------------------------------------------------------------------
def _python_value(session: nox.Session, expression: str) -> str:
    output = session.run("python", "-c", f"print({expression})", silent=True)
    return str(output).strip().splitlines()[-1]


def torch_folder(python_tag: str) -> Path:
    """The folder that holds the pinned torch for interpreters of ``python_tag`` (e.g. ``"311"``)."""
    named = os.environ.get("LGVQ_NOX_TORCH")
    if named:
        return Path(named).expanduser() / f"cp{python_tag}"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "lgvq" / "nox" / f"torch-{TORCH[0].split('==')[1]}-cp{python_tag}"


def install_torch(session: nox.Session) -> None:
    """Make the pinned torch and torchvision importable in the session's virtualenv.

    The folder is filled once, in a temporary folder beside it that is renamed into place when pip
    has finished: an interrupted install leaves no half-filled folder that a later session would trust.
    """
    layer = torch_folder(_python_value(session, "'%d%d' % __import__('sys').version_info[:2]"))
    if not (layer / "INSTALLED").exists():
        layer.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{layer.name}-", dir=layer.parent))
        session.run("python", "-m", "pip", "install", "--quiet", "--target", str(partial), *TORCH)
        (partial / "INSTALLED").write_text("\n".join(TORCH) + "\n")
        shutil.rmtree(layer, ignore_errors=True)
        try:
            partial.rename(layer)
        except OSError:  # another session finished first
            shutil.rmtree(partial, ignore_errors=True)
    site_packages = Path(_python_value(session, "__import__('sysconfig').get_paths()['purelib']"))
    (site_packages / "_lgvq_torch.pth").write_text(f"{layer}\n")


def install_workspace(session: nox.Session, *extra: str, plugins: tuple[str, ...] = ()) -> None:
    """torch, the four packages editable, the plugin projects at ``plugins`` editable, and ``extra``.

    The virtualenv is reused between runs, so a plugin project installed by an earlier run (another
    ``--plugin``) is uninstalled first: only the projects of this run join its combinations.
    """
    install_torch(session)
    keep = {PACKAGES[name][0] for name in PACKAGES} | {project_name(path) for path in plugins}
    stale = stale_plugins(_plugin_distributions(session), keep)
    if stale:
        session.log(f"uninstalling plugin projects of an earlier run: {', '.join(stale)}")
        session.run("python", "-m", "pip", "uninstall", "--yes", "--quiet", *stale)
    editable = [arg for _, folder, _ in PACKAGES.values() for arg in ("-e", folder)]
    session.install(*editable, *[arg for path in plugins for arg in ("-e", path)], *extra)


def normalized(distribution: str) -> str:
    """A distribution name as pip compares it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def stale_plugins(installed: list[str], keep: set[str]) -> list[str]:
    """The installed distributions with lgvq plugins that are not in ``keep``."""
    wanted = {normalized(name) for name in keep}
    return sorted(name for name in installed if normalized(name) not in wanted)


_LIST_PLUGIN_DISTRIBUTIONS = """
import importlib.metadata as metadata, json
names = {d.metadata["Name"] for d in metadata.distributions() if any(e.group == "lgvq" for e in d.entry_points)}
print(json.dumps(sorted(names)))
"""


def _plugin_distributions(session: nox.Session) -> list[str]:
    """Distributions in the session's virtualenv that register ``lgvq`` entry points."""
    output = session.run("python", "-c", _LIST_PLUGIN_DISTRIBUTIONS, silent=True)
    return json.loads(str(output).strip().splitlines()[-1])


def build_wheels(session: nox.Session, folder: Path, projects: list[str]) -> list[Path]:
    """Wheels of ``projects`` (folders) into ``folder``, built by nox's own interpreter (no build tool
    lands in a session's virtualenv); earlier wheels of the same distributions are removed first."""
    folder.mkdir(parents=True, exist_ok=True)
    for project in projects:
        stem = normalized(project_name(project)).replace("-", "_")
        for old in folder.glob(f"{stem}-*.whl"):
            old.unlink()
    session.run(
        sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(folder), *projects, external=True
    )
    names = {normalized(project_name(project)).replace("-", "_") for project in projects}
    return sorted(p for p in folder.glob("*.whl") if p.name.split("-")[0].lower() in names)


# ------------------------------------------------------------------------------------------
# sessions
# ------------------------------------------------------------------------------------------
@nox.session
@nox.parametrize(
    "package",
    ["core", "backbones", "text_encoders", "tasks", "integration"],
    ids=[
        "core",
        "backbones",
        "text_encoders",
        "tasks",
        "integration",
    ],
)
def tests(session: nox.Session, package: str) -> None:
    """One folder of tests/, with every package installed editable."""
    # hatchling: the test suite pip-installs small plugin projects without build isolation.
    install_workspace(session, "pytest", "hatchling")
    session.run("pytest", f"tests/{package}", *session.posargs, env=OFFLINE)


@nox.session(reuse_venv=False)
@nox.parametrize("package", list(PACKAGES), ids=list(PACKAGES))
def isolated(session: nox.Session, package: str) -> None:
    """One package's wheel alone (with lgvq-core's) in a fresh virtualenv, with its declared dependencies.

    Every module of the package must import, ``lgvq plugins --json`` must show its components with
    no failure, and its plugins must pass the plugin contract.
    """
    distribution, folder, import_name = PACKAGES[package]
    install_torch(session)
    wheels = Path(session.create_tmp()) / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    built = [str(p) for p in build_wheels(session, wheels, sorted({PACKAGES["core"][1], folder}))]
    session.install("--find-links", str(wheels), *built)
    extras = optional_extras(ROOT / folder)
    if extras:  # the components that need an extra (a tracker, diffusers) are built by the contract too
        session.install("--find-links", str(wheels), f"{distribution}[{','.join(extras)}]")

    session.run("python", "-c", _IMPORT_EVERY_MODULE, import_name, *NEEDS_PYTEST, env=OFFLINE)
    report = session.run("lgvq", "plugins", "--json", silent=True, env={"LGVQ_STRICT_PLUGINS": "1"})
    plugins = _plugins_of(str(report), distribution)
    session.log(f"{distribution} provides plugins: {', '.join(plugins)}")

    session.install("pytest")  # only now: pytest's own dependencies must not hide a missing one
    session.run(
        "python", "-m", "lgvq_core.testing.contract", *plugins, "--", "-q", env={**OFFLINE, "LGVQ_STRICT_PLUGINS": "1"}
    )


def optional_extras(project: Path) -> list[str]:
    """The extras a project declares, but ``testing`` (pytest is the contract's host, installed apart)."""
    data = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    return sorted(set(data.get("project", {}).get("optional-dependencies", {})) - {"testing"})


#: Modules that run inside pytest (pytest is their host, not a dependency); imported by the contract run.
NEEDS_PYTEST = ("lgvq_core.testing.fixtures", "lgvq_core.testing.contract")

_IMPORT_EVERY_MODULE = """
import importlib, pkgutil, sys
package = importlib.import_module(sys.argv[1])
names = [sys.argv[1]] + [m.name for m in pkgutil.walk_packages(package.__path__, sys.argv[1] + ".")]
names = [name for name in names if name not in sys.argv[2:]]
for name in names:
    importlib.import_module(name)
print(f"imported {len(names)} modules of {sys.argv[1]}")
"""


def _plugins_of(report_text: str, distribution: str) -> list[str]:
    report = json.loads(report_text[report_text.index("{") :])
    if report["failed"] or report["conflicts"]:
        raise RuntimeError(f"lgvq plugins reports problems: {report['failed']} {report['conflicts']}")
    plugins = [p for p in report["plugins"] if p["distribution"] == distribution]
    if not plugins or not any(p["components"] for p in plugins):
        raise RuntimeError(f"{distribution} registers no plugin or no component: {report['plugins']}")
    return [p["name"] for p in plugins]


def plugin_projects(posargs: list[str]) -> tuple[list[str], list[str]]:
    """``--plugin PATH`` arguments (plugin project folders) and the other arguments, apart."""
    paths, rest = [], []
    args = iter(posargs)
    for arg in args:
        if arg == "--plugin":
            paths.append(next(args, ""))
        elif arg.startswith("--plugin="):
            paths.append(arg.partition("=")[2])
        else:
            rest.append(arg)
    for path in paths:
        if not (Path(path) / "pyproject.toml").is_file():
            raise SystemExit(f"--plugin {path!r}: not a plugin project folder (no pyproject.toml)")
    return paths, rest


def project_name(project: str) -> str:
    """The distribution name a project folder declares ([project].name)."""
    return tomllib.loads((Path(project) / "pyproject.toml").read_text(encoding="utf-8"))["project"]["name"]


def plugin_names(project: str) -> list[str]:
    """The plugins a project declares under [project.entry-points.lgvq]."""
    data = tomllib.loads((Path(project) / "pyproject.toml").read_text(encoding="utf-8"))
    return sorted(data.get("project", {}).get("entry-points", {}).get("lgvq", {}))


@nox.session
def contract(session: nox.Session) -> None:
    """The plugin contract on every installed plugin (the four packages and the example plugin), or with
    ``-- --plugin PATH`` on the plugins of that project only."""
    projects, rest = plugin_projects(session.posargs)
    install_workspace(session, "pytest", plugins=tuple(projects or [EXAMPLE_PLUGIN]))
    names = [name for path in projects for name in plugin_names(path)] or ["--all"]
    session.run(
        "python",
        "-m",
        "lgvq_core.testing.contract",
        *names,
        "--",
        "-q",
        *rest,
        env={**OFFLINE, "LGVQ_STRICT_PLUGINS": "1"},
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the repository."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def combos(session: nox.Session) -> None:
    """Every installed backbone x quantizer x {no LG, LG with each text encoder}, a few training steps each on
    CPU, with finite losses, a checkpoint that reloads and indices within the codebook. The matrix comes from the
    registry (lgvq_core.testing.combos); pairs the run-file check refuses are skipped with its message.

    ``-- --plugin PATH`` installs that plugin project and keeps the combinations that use its components;
    other arguments go to ``python -m lgvq_core.testing.combos`` (``--quantizer vq``, ``--steps 1``, ``--list``).
    """
    projects, rest = plugin_projects(session.posargs)
    # pytest: lgvq-core[testing], whose contract module sizes the components (contract_config).
    install_workspace(session, "pytest", plugins=tuple(projects))
    names = [arg for path in projects for name in plugin_names(path) for arg in ("--plugin", name)]
    session.run("python", "-m", "lgvq_core.testing.combos", *names, *rest, env={**OFFLINE, "LGVQ_STRICT_PLUGINS": "1"})


@nox.session(venv_backend="none", default=False)
def wheels(session: nox.Session) -> None:
    """The four packages' wheels into ``dist/`` (or the folder given after ``--``), for installing lgvq
    without a release: ``pip install --find-links dist lgvq-core lgvq-backbones ...``."""
    folder = Path(session.posargs[0] if session.posargs else ROOT / "dist").resolve()
    built = build_wheels(session, folder, [str(ROOT / project) for _, project, _ in PACKAGES.values()])
    session.log(f"{len(built)} wheels in {folder}: {', '.join(p.name for p in built)}")


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Every bench/*.py in turn; arguments after -- go to each script. Not a test: not run in CI."""
    install_workspace(session, "vector-quantize-pytorch", "einops")
    scripts = sorted(p for p in (ROOT / "bench").glob("*.py") if p.name != "harness.py")  # harness: shared setup
    if not scripts:
        session.skip("no benchmark in bench/")
    for script in scripts:
        session.run("python", str(script), *session.posargs, env=OFFLINE)
