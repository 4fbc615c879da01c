"""Test this plugin against lgvq: the plugin contract, then every combination with the installed components.

    nox -s lgvq                                  contract + combinations
    nox -s lgvq -- --quantizer vq --steps 1      narrower (options of lgvq_core.testing.combos)

lgvq comes from PyPI; ``LGVQ_REPO=/path/to/lgvq`` installs a checkout of the lgvq repository instead.
"""

from __future__ import annotations

import os

import nox

#: The lgvq packages this plugin is combined with: core (with its test support), the paper's
#: backbones and quantizers, and the text encoders for the language-guided column.
LGVQ = ("lgvq-core[testing]", "lgvq-backbones", "lgvq-text-encoders")


def lgvq_requirements() -> list[str]:
    """LGVQ from PyPI, or from the checkout named by ``LGVQ_REPO``."""
    repo = os.environ.get("LGVQ_REPO")
    if not repo:
        return list(LGVQ)
    return [f"{repo}/packages/{requirement}" for requirement in LGVQ]


@nox.session
def lgvq(session: nox.Session) -> None:
    """The plugin contract and the combination runs (python -m lgvq_core.testing.plugin_check)."""
    session.install(*lgvq_requirements(), "-e", ".")
    session.run(
        "python",
        "-m",
        "lgvq_core.testing.plugin_check",
        ".",
        *session.posargs,
        env={"HF_HUB_OFFLINE": "1", "LGVQ_STRICT_PLUGINS": "1"},
    )
