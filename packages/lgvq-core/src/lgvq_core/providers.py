"""Which of lgvq's own plugin packages provides which kinds of component.

This is package metadata, not a list of component names: lgvq-core does not know what its plugins
call their components (the registry learns that from the installed plugins). What it knows is the
ecosystem's layout, so that an unknown component of a kind that a package which is not installed
provides (``lgvq-core`` alone has no text encoder) says what to install. A test keeps the table
equal to the kinds each package registers.
"""

from __future__ import annotations

import importlib.metadata

from lgvq_core.specs import normalize_kind, normalize_name

#: lgvq's plugin packages -> the component kinds each registers.
PACKAGES: dict[str, tuple[str, ...]] = {
    "lgvq-backbones": ("backbone", "quantizer", "importer", "exporter"),
    "lgvq-text-encoders": ("text_encoder",),
    "lgvq-tasks": ("task", "downstream"),
    "lgvq-loggers": ("logger",),
}

#: The opt-in test doubles of lgvq-core's own ``testing`` plugin (see :mod:`lgvq_core.plugins`).
TEST_DOUBLES: dict[str, set[str]] = {
    "backbone": {"tiny-ae"},
    "text_encoder": {"tiny-text"},
    "downstream": {"tiny-prior"},
}


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def missing_providers(kind: str) -> list[str]:
    """lgvq's packages that provide components of ``kind`` and are not installed."""
    kind = normalize_kind(kind)
    return sorted(dist for dist, kinds in PACKAGES.items() if kind in kinds and not _installed(dist))


def install_hint(kind: str, name: str) -> str:
    """What to do about an unknown component ``name`` of ``kind`` (``""`` when lgvq has nothing to add)."""
    kind = normalize_kind(kind)
    if normalize_name(name) in {normalize_name(n) for n in TEST_DOUBLES.get(kind, ())}:
        return f" {name!r} is one of lgvq-core's test doubles: set LGVQ_TEST_COMPONENTS=1 to use it."
    missing = missing_providers(kind)
    if not missing:
        return ""
    what = kind.replace("_", "-")
    return (
        f" {' and '.join(missing)} provide{'s' if len(missing) == 1 else ''} {what} components and "
        f"{'is' if len(missing) == 1 else 'are'} not installed: pip install {' '.join(missing)}"
    )


def kind_hint(kind: str) -> str:
    """For an empty ``lgvq list KIND``: which of lgvq's packages provide components of it and are missing."""
    missing = missing_providers(kind)
    if not missing:
        return ""
    return f"; {' and '.join(missing)} provide{'s' if len(missing) == 1 else ''} them: pip install {' '.join(missing)}"
