"""One command for a plugin author: the plugin contract, then the combinations, for a project folder.

From the plugin's own repository, with the plugin and ``lgvq-core[testing]`` installed (plus any
other lgvq packages whose components it should be combined with)::

    python -m lgvq_core.testing.plugin_check .                    # contract + every combination
    python -m lgvq_core.testing.plugin_check . --quantizer vq --steps 1

The plugins are the names under ``[project.entry-points.lgvq]`` of the folder's
``pyproject.toml``. The combination options (``--backbone``, ``--quantizer``, ``--text-encoder``,
``--steps``, ``--out``, ``--list``) are those of :mod:`lgvq_core.testing.combos`; arguments after
``--`` go to pytest for the contract. Exit status: 0 when both pass.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import tomli

from lgvq_core.plugins import ENTRY_POINT_GROUP


def project_plugins(project_dir: str | Path) -> list[str]:
    """The plugin names a project declares under ``[project.entry-points.lgvq]``."""
    path = Path(project_dir) / "pyproject.toml"
    if not path.is_file():
        raise SystemExit(f"{path}: not found; give the folder of the plugin project (the one with pyproject.toml)")
    data = tomli.loads(path.read_text(encoding="utf-8"))
    names = sorted(data.get("project", {}).get("entry-points", {}).get(ENTRY_POINT_GROUP, {}))
    if not names:
        raise SystemExit(
            f"{path}: declares no plugin; add [project.entry-points.{ENTRY_POINT_GROUP}] "
            'my-plugin = "my_package._plugin" and install the project'
        )
    return names


def main(argv: Sequence[str] | None = None) -> int:
    from lgvq_core.testing import (
        combos,
        contract,
    )  # lazy: the contract imports pytest (lgvq-core[testing]); --help works without it

    args = list(sys.argv[1:] if argv is None else argv)
    pytest_args: list[str] = []
    if "--" in args:
        cut = args.index("--")
        args, pytest_args = args[:cut], args[cut + 1 :]
    project = "."
    if args and not args[0].startswith("-"):
        project, args = args[0], args[1:]
    plugins = project_plugins(project)
    print(f"== plugin contract: {', '.join(plugins)}", flush=True)
    contract_status = contract.main([*plugins, "--", "-q", *pytest_args])
    print(f"== combinations with {', '.join(plugins)}", flush=True)
    combos_status = combos.main([arg for name in plugins for arg in ("--plugin", name)] + args)
    return int(contract_status != 0 or combos_status != 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
