"""Caption scores with the COCO caption evaluation code (``pycocoevalcap``): BLEU-4, ROUGE-L, CIDEr-D,
and METEOR where Java is present (paper Table 11).

**Tokenisation.** ``pycocoevalcap``'s own tokenizer (``PTBTokenizer``) runs Stanford CoreNLP under Java.
The default here, ``tokenizer = "words"``, is a pure-Python rule instead: lower-case, split at anything
that is not a letter, digit or apostrophe, punctuation dropped (what ``PTBTokenizer`` leaves after it
removes punctuation, except that PTB also splits clitics: "dog's" -> "dog 's"). It runs anywhere, and it
is the rule the captioning vocabulary is built with. ``tokenizer = "ptb"`` uses the Java tokenizer for
numbers comparable to published COCO evaluations.

**CIDEr-D** (coco-caption's ``Cider``: sigma 6, clipped counts, x10, maximum 10) takes its IDF from the
references being evaluated, so a score depends on the evaluated set: the result carries
``cider_images`` beside it. It needs at least two images (one image gives every n-gram zero weight).

**METEOR** (METEOR 1.5 jar, Java, 2 GB heap) is reported as ``"absent: ..."`` when Java is missing or the
jar fails; it is never reported as zero.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from .vocabulary import words_of


def _tokenise(captions: Mapping[Any, Sequence[str]], tokenizer: Literal["words", "ptb"]) -> dict[Any, list[str]]:
    if tokenizer == "words":
        return {key: [" ".join(words_of(c)) for c in texts] for key, texts in captions.items()}
    if tokenizer == "ptb":
        if shutil.which("java") is None:
            raise RuntimeError("tokenizer = 'ptb' runs Stanford CoreNLP under Java, and no java is on PATH")
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        return PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})
    raise ValueError(f"tokenizer must be 'words' or 'ptb', got {tokenizer!r}")


def _meteor(references: dict, candidates: dict) -> float | str:
    if shutil.which("java") is None:
        return "absent: METEOR needs Java (apt-get install default-jre-headless)"
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = None
    try:
        scorer = Meteor()
        score, _ = scorer.compute_score(references, candidates)
        return float(score)
    except (OSError, ValueError, AssertionError) as error:
        return f"absent: the METEOR jar failed ({type(error).__name__}: {error})"
    finally:
        if scorer is not None:
            scorer.meteor_p.kill()
            scorer.meteor_p.wait()


def caption_scores(
    candidates: Sequence[str],
    references: Sequence[Sequence[str]],
    tokenizer: Literal["words", "ptb"] = "words",
    meteor: bool = True,
) -> dict[str, Any]:
    """Scores of one candidate per image against that image's references.

    Returns ``bleu4``, ``rouge_l``, ``cider_d`` (coco-caption scale: BLEU and ROUGE-L in [0, 1], CIDEr-D
    in [0, 10]), ``cider_images`` (images its IDF came from), ``meteor`` (in [0, 1], or an "absent: ..."
    note; "not requested" when ``meteor`` is false) and ``images``.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidate captions for {len(references)} images' references")
    if not candidates:
        raise ValueError("no captions to score")
    for i, refs in enumerate(references):
        if isinstance(refs, str) or not refs:
            raise ValueError(f"references[{i}] must be a non-empty list of caption strings, got {refs!r}")
    candidate_map = _tokenise({i: [c] for i, c in enumerate(candidates)}, tokenizer)
    reference_map = _tokenise({i: list(r) for i, r in enumerate(references)}, tokenizer)
    bleu, _ = Bleu(4).compute_score(reference_map, candidate_map, verbose=0)
    rouge, _ = Rouge().compute_score(reference_map, candidate_map)
    cider, _ = Cider().compute_score(reference_map, candidate_map)
    return {
        "bleu4": float(bleu[3]),
        "rouge_l": float(rouge),
        "cider_d": float(cider),
        "cider_images": len(candidates),
        "meteor": _meteor(reference_map, candidate_map) if meteor else "not requested",
        "images": len(candidates),
    }
