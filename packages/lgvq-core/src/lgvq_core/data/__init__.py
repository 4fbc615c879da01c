"""Image-caption datasets: the synthetic ``shapes`` set and the real formats (docs/method.md: Datasets).

- ``base``: the contract every dataset follows (keys, seeds, items, the caption rule) and ``collate``;
- ``config``, ``registration``: config classes and spec records (no torch);
- ``transforms``, ``files``, ``listed``: resizing and cropping, reading files, listed-image datasets;
- ``annotations``: the optional annotation kinds (segmentation, questions, referring, attributes) and their records;
- ``shapes*``: the generated default; ``folder``, ``coco``, ``cub``, ``celeba``, ``textcaps``: formats;
- ``celebamask``, ``cocoqa``, ``refcoco``: formats with annotations; ``inside_root``: safe path joining.

This package imports nothing at import time, so the registration stays free of torch.
"""
