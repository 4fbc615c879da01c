"""The documented install lines work without a release: wheels built by `nox -s wheels`, installed by
the README's and the tutorial's own lines into a fresh virtualenv."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "plugins" / "lgvq-example-backbone"
DISTRIBUTIONS = {"lgvq-core", "lgvq-backbones", "lgvq-text-encoders", "lgvq-tasks", "lgvq-loggers"}

#: A documented line that installs from the wheels folder, as shown (``$ `` prompt and comment dropped).
INSTALL_LINE = re.compile(r'^(?:\$ )?(pip install --find-links "\$LGVQ_WHEELS" [^#\n]*?)\s*(?:#.*)?$', re.M)


def install_lines(document: Path) -> list[str]:
    return INSTALL_LINE.findall(document.read_text(encoding="utf-8"))


def test_every_install_line_of_the_docs_names_the_wheels_folder():
    """No plain `pip install lgvq-...` line is left, which would fail until a release exists."""
    documents = [ROOT / "README.md", EXAMPLE / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("packages/*/README.md")]
    for document in documents:
        for line in document.read_text(encoding="utf-8").splitlines():
            if re.search(r"pip install .*lgvq-(core|backbones|text-encoders|tasks)", line):
                assert '--find-links "$LGVQ_WHEELS"' in line, f"{document.name}: {line.strip()!r}"
    assert len(install_lines(ROOT / "README.md")) == 1
    assert len(install_lines(ROOT / "docs" / "writing-a-plugin.md")) == 3


def _without_lgvq(site_packages: Path, folder: Path) -> Path:
    """A folder of links to this environment's installed packages, lgvq's own left out: the new
    virtualenv sees torch and the other dependencies there (nothing to download or copy), and must
    install lgvq from the wheels."""
    folder.mkdir()
    for entry in site_packages.iterdir():
        name = entry.name.lower()
        if name.startswith(("lgvq", "_lgvq", "_editable_impl_lgvq", "__editable__")) or name.endswith(".pth"):
            continue
        (folder / entry.name).symlink_to(entry)
    return folder


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wheels") / "dist"
    envdir = tmp_path_factory.mktemp("nox")
    command = [sys.executable, "-m", "nox", "-f", str(ROOT / "noxfile.py"), "--envdir", str(envdir)]
    result = subprocess.run([*command, "-s", "wheels", "--", str(folder)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return folder


@pytest.fixture()
def fresh_env(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    purelib = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    others = _without_lgvq(Path(sysconfig.get_paths()["purelib"]), tmp_path / "dependencies")
    (purelib / "zz_dependencies.pth").write_text(f"{others}\n")
    return venv


def _shell(line: str, venv: Path, wheels: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(venv),
        LGVQ_WHEELS=str(wheels),
        HF_HUB_OFFLINE="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    env.pop("LGVQ_TEST_COMPONENTS", None)
    return subprocess.run(["bash", "-c", line], capture_output=True, text=True, cwd=cwd, env=env, timeout=900)


def _installed_plugins(venv: Path, wheels: Path, cwd: Path) -> dict[str, str]:
    result = _shell("lgvq plugins --json", venv, wheels, cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert not report["failed"], report["failed"]
    return {plugin["name"]: plugin["distribution"] for plugin in report["plugins"]}


def _from_the_wheel(venv: Path, wheels: Path, cwd: Path, module: str) -> None:
    """``module`` is installed into the virtualenv (not linked to the checkout)."""
    result = _shell(f"python -c 'import {module}; print({module}.__file__)'", venv, wheels, cwd)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).resolve().is_relative_to(venv.resolve()), result.stdout


def test_nox_wheels_builds_the_five_packages(wheels):
    names = {re.sub(r"_", "-", p.name.split("-")[0]) for p in wheels.glob("*.whl")}
    assert names == DISTRIBUTIONS


@pytest.mark.slow
def test_the_readme_install_line_installs_the_five_packages_from_the_wheels(wheels, fresh_env, tmp_path):
    (line,) = install_lines(ROOT / "README.md")

    result = _shell(line, fresh_env, wheels, tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert set(_installed_plugins(fresh_env, wheels, tmp_path).values()) == DISTRIBUTIONS
    for module in ("lgvq_core", "lgvq_backbones", "lgvq_text_encoders", "lgvq_tasks", "lgvq_loggers"):
        _from_the_wheel(fresh_env, wheels, tmp_path, module)


@pytest.mark.slow
def test_the_tutorial_install_lines_install_the_plugin_and_its_combination_check_runs(wheels, fresh_env, tmp_path):
    checkout = tmp_path / "checkout"
    shutil.copytree(EXAMPLE, checkout / "examples" / "plugins" / EXAMPLE.name)
    project = checkout / "examples" / "plugins" / EXAMPLE.name
    in_checkout, testing, in_project = install_lines(ROOT / "docs" / "writing-a-plugin.md")

    for line, cwd in ((in_checkout, checkout), (testing, checkout), (in_project, project)):
        result = _shell(line, fresh_env, wheels, cwd)
        assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"

    plugins = _installed_plugins(fresh_env, wheels, project)
    assert plugins["example-backbone"] == "lgvq-example-backbone"
    assert {"lgvq-core", "lgvq-backbones", "lgvq-text-encoders"} <= set(plugins.values())
    _from_the_wheel(fresh_env, wheels, project, "lgvq_core")
    check = "python -m lgvq_core.testing.plugin_check . --quantizer vq --text-encoder minilm --steps 1"
    result = _shell(check, fresh_env, wheels, project)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "2 passed, 0 failed" in result.stdout, result.stdout[-3000:]
