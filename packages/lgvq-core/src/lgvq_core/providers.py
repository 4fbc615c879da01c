"""Which of lgvq's own distributions provides each of its component names.

An unknown component that one of lgvq's packages provides is most often a package that is not
installed (``lgvq-core`` alone has no text encoder), so the error says what to install. A test
keeps this table equal to what the packages register.
"""

from __future__ import annotations

import importlib.metadata

from lgvq_core.specs import normalize_kind, normalize_name

#: kind -> component name -> distribution.
PROVIDERS: dict[str, dict[str, str]] = {
    "backbone": {name: "lgvq-backbones" for name in ("vqvae", "vqgan", "cvq", "vqct")},
    "quantizer": {name: "lgvq-backbones" for name in ("cvq", "vqct")},
    "text_encoder": {name: "lgvq-text-encoders" for name in ("open_clip", "minilm")},
    "task": {
        name: "lgvq-tasks"
        for name in (
            "reconstruction",
            "retrieval",
            "masked-words",
            "relation",
            "codebook",
            "code-probe",
            "caption-scores",
            "generation-fid",
            "grounding-scores",
            "vqa-scores",
        )
    },
    "downstream": {name: "lgvq-tasks" for name in ("code-gpt", "text-to-image", "captioning", "grounding", "vqa")},
}

#: The opt-in test doubles of lgvq-core (see :mod:`lgvq_core.plugins`).
TEST_DOUBLES: dict[str, set[str]] = {
    "backbone": {"tiny-ae"},
    "text_encoder": {"tiny-text"},
    "downstream": {"tiny-prior"},
}


def provider_of(kind: str, name: str) -> str | None:
    """The lgvq distribution that provides component ``name`` of ``kind``, or ``None``."""
    table = PROVIDERS.get(normalize_kind(kind), {})
    wanted = normalize_name(name)
    return next((dist for known, dist in table.items() if normalize_name(known) == wanted), None)


def install_hint(kind: str, name: str) -> str:
    """What to do about an unknown ``name`` that lgvq itself provides (``""`` when it does not)."""
    kind = normalize_kind(kind)
    if normalize_name(name) in {normalize_name(n) for n in TEST_DOUBLES.get(kind, ())}:
        return f" {name!r} is one of lgvq-core's test doubles: set LGVQ_TEST_COMPONENTS=1 to use it."
    dist = provider_of(kind, name)
    if dist is None:
        return ""
    try:
        importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return f" {name!r} is provided by {dist}, which is not installed: pip install {dist}"
    return f" {name!r} is provided by {dist}, which is installed but did not register it: see `lgvq plugins`."


def kind_hint(kind: str) -> str:
    """For an empty ``lgvq list KIND``: which of lgvq's distributions provide components of it and are missing."""
    missing = []
    for dist in sorted(set(PROVIDERS.get(normalize_kind(kind), {}).values())):
        try:
            importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            missing.append(dist)
    if not missing:
        return ""
    return f"; {' and '.join(missing)} provide{'s' if len(missing) == 1 else ''} them: pip install {' '.join(missing)}"
