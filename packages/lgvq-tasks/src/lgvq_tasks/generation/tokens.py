"""The input vocabulary of ``code-gpt``: codes, the start token and condition tokens never share an id.

taming's Net2NetTransformer uses id 0 as its start-of-sequence token, the same id as code 0. Here
the K codes keep ``[0, K)``, the start token is ``K`` and condition tokens (segmentation classes or
mask-autoencoder codes) live in ``[K + 1, K + 1 + C)``. The output head predicts codes only (K).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TokenLayout:
    """Id ranges of one prior's input vocabulary."""

    codebook_size: int  # K
    condition_vocab: int = 0  # C

    @property
    def start(self) -> int:
        """Id of the start token that precedes the first code."""
        return self.codebook_size

    @property
    def condition_offset(self) -> int:
        """Id of condition token 0."""
        return self.codebook_size + 1

    @property
    def size(self) -> int:
        """Rows of the input embedding: K codes, the start token, C condition tokens."""
        return self.codebook_size + 1 + self.condition_vocab

    def ranges(self) -> dict[str, range]:
        """Each kind of token and its ids (disjoint, covering ``[0, size)``)."""
        return {
            "codes": range(0, self.codebook_size),
            "start": range(self.start, self.start + 1),
            "condition": range(self.condition_offset, self.size),
        }

    def condition_tokens(self, values, what: str):
        """Condition values ``[0, C)`` as token ids; anything outside the range is a clear error."""
        if values.numel() and (int(values.min()) < 0 or int(values.max()) >= self.condition_vocab):
            raise ValueError(
                f"{what}: values must lie in [0, {self.condition_vocab}) (condition_vocab), got "
                f"[{int(values.min())}, {int(values.max())}]; set condition_vocab to the number of classes or codes"
            )
        return values + self.condition_offset
