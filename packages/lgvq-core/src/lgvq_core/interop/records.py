"""What an importer hands back to ``lgvq import`` (no torch at import): the run file, the weights under
lgvq's names, and the account of every source key and config key."""

from __future__ import annotations

from typing import Any

import attrs

from lgvq_core.contracts import require_methods


@attrs.define
class ImportedCheckpoint:
    """Another project's checkpoint, translated; :mod:`lgvq_core.interop.importing` checks and writes it.

    ``weights`` are keyed as an lgvq checkpoint keys them (``tokenizer.encoder.conv_in.weight``,
    ``discriminator.main.0.weight``) and ``sources`` names the source key of each. Every key of the
    source checkpoint is either taken (in ``sources``) or in ``ignored`` with its reason; a weight
    of the lgvq model that no source key fills must be in ``kept_initial`` with its reason, or the
    import is refused.
    """

    #: The run file (``config.toml``) as TOML tables; validated before anything is written.
    run_file: dict[str, Any]
    #: lgvq key -> tensor.
    weights: dict[str, Any]
    #: lgvq key -> the source key it came from.
    sources: dict[str, str]
    #: Images the tokenizer works on (the source model's resolution and channels).
    image_size: int
    in_channels: int
    #: Source key -> why it was not taken.
    ignored: dict[str, str] = attrs.field(factory=dict)
    #: lgvq key -> why it keeps the value a freshly built model has.
    kept_initial: dict[str, str] = attrs.field(factory=dict)
    #: Source config key (``model.params.ddconfig.drop_prob``) -> why it has no lgvq equivalent.
    unmapped_config: dict[str, str] = attrs.field(factory=dict)
    #: The training step the source had reached (its ``global_step``; 0 if unknown).
    step: int = 0
    #: What the source was: format, Lightning version, epoch, where its config came from, ...
    source: dict[str, Any] = attrs.field(factory=dict)


def check_importer(importer: Any) -> None:
    """The importer contract: ``convert(checkpoint)`` returning an :class:`ImportedCheckpoint`."""
    require_methods(importer, "an importer", {"convert": ("checkpoint",)})
