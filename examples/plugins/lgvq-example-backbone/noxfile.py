"""Test this plugin against lgvq: the plugin contract, then every combination with the installed components.

    nox -s lgvq                                  contract + combinations
    nox -s lgvq -- --quantizer vq --steps 1      narrower (options of lgvq_core.testing.combos)

Where lgvq comes from: ``LGVQ_WHEELS=/path/to/lgvq/dist`` installs the wheels that ``nox -s wheels``
built in an lgvq checkout; ``LGVQ_REPO=/path/to/lgvq`` installs the checkout itself; with neither,
PyPI (once lgvq is released).

Torch takes about 5 GB with its CUDA libraries, so it is installed once per machine into a folder of
its own (``~/.cache/lgvq/nox/``, the one lgvq's own noxfile uses; ``LGVQ_NOX_TORCH`` names another)
that the session's virtualenv sees through a ``.pth`` file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import nox

nox.options.reuse_existing_virtualenvs = True

#: The lgvq packages this plugin is combined with: core (with its test support), the paper's
#: backbones and quantizers, and the text encoders for the language-guided column.
LGVQ = ("lgvq-core[testing]", "lgvq-backbones", "lgvq-text-encoders")
#: The torch that lgvq's CI pins: shared with lgvq's own nox sessions.
TORCH = ("torch==2.14.1", "torchvision==0.29.1")


def lgvq_requirements() -> list[str]:
    """lgvq from the wheels in ``LGVQ_WHEELS``, the checkout at ``LGVQ_REPO``, or PyPI."""
    wheels = os.environ.get("LGVQ_WHEELS")
    if wheels:
        return ["--find-links", str(Path(wheels).expanduser().resolve()), *LGVQ]
    repo = os.environ.get("LGVQ_REPO")
    if repo:
        return [f"{Path(repo).expanduser().resolve()}/packages/{requirement}" for requirement in LGVQ]
    return list(LGVQ)


def torch_folder(python_tag: str) -> Path:
    """The folder holding the pinned torch for interpreters of ``python_tag`` (e.g. ``"311"``)."""
    named = os.environ.get("LGVQ_NOX_TORCH")
    if named:
        return Path(named).expanduser() / f"cp{python_tag}"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "lgvq" / "nox" / f"torch-{TORCH[0].split('==')[1]}-cp{python_tag}"


def share_torch(session: nox.Session) -> None:
    """Install the pinned torch once per machine and make it importable in this virtualenv."""
    where = "import sys, sysconfig; print(sysconfig.get_paths()['purelib'], '%d%d' % sys.version_info[:2])"
    purelib, tag = str(session.run("python", "-c", where, silent=True)).split()[-2:]
    folder = torch_folder(tag)
    if not (folder / "INSTALLED").exists():  # filled beside, then renamed: never half-filled
        folder.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        session.run("python", "-m", "pip", "install", "--quiet", "--target", str(partial), *TORCH)
        (partial / "INSTALLED").write_text("\n".join(TORCH) + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        try:
            partial.rename(folder)
        except OSError:  # another session finished first
            shutil.rmtree(partial, ignore_errors=True)
    (Path(purelib) / "_lgvq_torch.pth").write_text(f"{folder}\n")


@nox.session
def lgvq(session: nox.Session) -> None:
    """The plugin contract and the combination runs (python -m lgvq_core.testing.plugin_check)."""
    share_torch(session)
    session.install(*lgvq_requirements(), "-e", ".")
    session.run(
        "python",
        "-m",
        "lgvq_core.testing.plugin_check",
        ".",
        *session.posargs,
        env={"HF_HUB_OFFLINE": "1", "LGVQ_STRICT_PLUGINS": "1"},
    )
