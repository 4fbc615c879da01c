"""Checks shared by the backbone configs: does the image size give an integer latent grid? (no torch)"""

from __future__ import annotations

from typing import Any

from lgvq_core.api import ConfigError, Problem


def is_power_of_two(value: int) -> bool:
    return value >= 1 and value & (value - 1) == 0


def dataset_image_size(run: Any) -> int | None:
    """The ``image_size`` key of the run's ``[data]`` table, when its dataset has one."""
    size = getattr(getattr(getattr(run, "data", None), "config", None), "image_size", None)
    return size if isinstance(size, int) and not isinstance(size, bool) else None


def latent_grid_problems(image_size: int | None, downsample: int, path: str, what: str) -> list[Problem]:
    """A problem when ``image_size`` is not a multiple of the downsampling factor ``what`` implies."""
    if image_size is None or image_size % downsample == 0:
        return []
    return [
        Problem(
            path,
            f"{what} downsamples by {downsample}, but the images are {image_size} px: "
            f"{image_size}/{downsample} is not an integer latent size; use an image size that is a "
            f"multiple of {downsample} or change {what}",
        )
    ]


def require_quantizer(context: Any, backbone: str) -> Any:
    """The quantizer a backbone factory needs from its build context."""
    quantizer = getattr(context, "quantizer", None)
    if quantizer is None:
        raise ConfigError(
            [
                f"$.model.quantizer: the {backbone} backbone needs a quantizer; build [model.quantizer] and "
                "pass it as BuildContext.quantizer"
            ]
        )
    return quantizer
