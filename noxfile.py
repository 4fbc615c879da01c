"""Maintainer sessions. ``nox -l`` lists them; ``nox`` runs lint, tests, contract and isolated.

    nox -s "tests(core)"            one package's tests (core, backbones, text_encoders, tasks, integration)
    nox -s isolated                 each package's wheel alone in a fresh virtualenv
    nox -s contract                 the plugin contract on every installed plugin
    nox -s combos                   every backbone x quantizer x (no LG, LG per text encoder): a few CPU steps each
    nox -s combos contract -- --plugin PATH     the same for the plugin project at PATH (installed first)
    nox -s bench -- --steps 5       benchmarks (not run by default, never in CI)

Torch is pinned (``torch==2.14.1``, ``torchvision==0.29.1``). With its CUDA libraries it takes
about 4 GB, so it is installed once, into ``.nox/_torch-<version>-cp<python>``, and every session's
virtualenv sees that folder through a ``.pth`` file: each virtualenv still has only its own
packages, and pip treats the pinned torch as installed when it resolves the packages' ``torch>=``
requirements.
"""

from __future__ import annotations

import json
import shutil
import sys
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
}
EXAMPLE_PLUGIN = "examples/plugins/lgvq-example-backbone"


# ------------------------------------------------------------------------------------------
# installing
# ------------------------------------------------------------------------------------------
def _python_value(session: nox.Session, expression: str) -> str:
    output = session.run("python", "-c", f"print({expression})", silent=True)
    return str(output).strip().splitlines()[-1]


def install_torch(session: nox.Session) -> None:
    """Make the pinned torch and torchvision importable in the session's virtualenv."""
    tag = _python_value(session, "'%d%d' % __import__('sys').version_info[:2]")
    layer = ROOT / ".nox" / f"_torch-{TORCH[0].split('==')[1]}-cp{tag}"
    marker = layer / "INSTALLED"
    if not marker.exists():
        shutil.rmtree(layer, ignore_errors=True)
        session.run("python", "-m", "pip", "install", "--quiet", "--target", str(layer), *TORCH)
        marker.write_text("\n".join(TORCH) + "\n")
    site_packages = Path(_python_value(session, "__import__('sysconfig').get_paths()['purelib']"))
    (site_packages / "_lgvq_torch.pth").write_text(f"{layer}\n")


def install_workspace(session: nox.Session, *extra: str) -> None:
    """torch, the four packages editable, and ``extra``."""
    install_torch(session)
    editable = [arg for _, folder, _ in PACKAGES.values() for arg in ("-e", folder)]
    session.install(*editable, *extra)


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
    projects = sorted({PACKAGES["core"][1], folder})
    # Built by nox's own interpreter, so no build tool lands in the virtualenv under test.
    session.run(
        sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), *projects, external=True
    )
    built = sorted(str(p) for p in wheels.glob("*.whl"))
    session.install("--find-links", str(wheels), *built)

    session.run("python", "-c", _IMPORT_EVERY_MODULE, import_name, *NEEDS_PYTEST, env=OFFLINE)
    report = session.run("lgvq", "plugins", "--json", silent=True, env={"LGVQ_STRICT_PLUGINS": "1"})
    plugins = _plugins_of(str(report), distribution)
    session.log(f"{distribution} provides plugins: {', '.join(plugins)}")

    session.install("pytest")  # only now: pytest's own dependencies must not hide a missing one
    session.run(
        "python", "-m", "lgvq_core.testing.contract", *plugins, "--", "-q", env={**OFFLINE, "LGVQ_STRICT_PLUGINS": "1"}
    )


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


def plugin_names(project: str) -> list[str]:
    """The plugins a project declares under [project.entry-points.lgvq]."""
    data = tomllib.loads((Path(project) / "pyproject.toml").read_text(encoding="utf-8"))
    return sorted(data.get("project", {}).get("entry-points", {}).get("lgvq", {}))


@nox.session
def contract(session: nox.Session) -> None:
    """The plugin contract on every installed plugin (the four packages and the example plugin), or with
    ``-- --plugin PATH`` on the plugins of that project only."""
    projects, rest = plugin_projects(session.posargs)
    install_workspace(session, "pytest", *[arg for path in projects or [EXAMPLE_PLUGIN] for arg in ("-e", path)])
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
    install_workspace(session, "pytest", *[arg for path in projects for arg in ("-e", path)])
    names = [arg for path in projects for name in plugin_names(path) for arg in ("--plugin", name)]
    session.run("python", "-m", "lgvq_core.testing.combos", *names, *rest, env={**OFFLINE, "LGVQ_STRICT_PLUGINS": "1"})


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Every bench/*.py in turn; arguments after -- go to each script. Not a test: not run in CI."""
    install_workspace(session, "vector-quantize-pytorch", "einops")
    scripts = sorted(p for p in (ROOT / "bench").glob("*.py") if p.name != "harness.py")  # harness: shared setup
    if not scripts:
        session.skip("no benchmark in bench/")
    for script in scripts:
        session.run("python", str(script), *session.posargs, env=OFFLINE)
