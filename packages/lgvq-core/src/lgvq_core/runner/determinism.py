"""``run.deterministic``: the torch switches that make one machine's runs repeat bit for bit.

What repeats without them: every random draw in lgvq comes from a seeded generator, so on CPU the
same run file, seed, machine, torch build and thread count (``torch.get_num_threads()``) gives the
same numbers, and ``lgvq run --resume`` continues exactly. What never repeats bit for bit: runs on
another CPU model, with another thread count, or on another GPU or torch build — reductions are
summed in another order and the rounding differs; after a few hundred steps the runs drift apart
by as much as seed-to-seed noise, which is why ``lgvq compare`` trains several seeds.

What these switches add: deterministic kernels where torch has them (cuDNN convolutions without
autotuning, cuBLAS with a fixed workspace, deterministic scatter/index kernels), so that GPU runs
on one machine repeat too. An operation without a deterministic kernel warns (it does not stop
the run) and names itself.
"""

from __future__ import annotations

import os

#: cuBLAS is deterministic only with a fixed workspace (CUDA >= 10.2); read when its handle is made.
CUBLAS_WORKSPACE = ":4096:8"


def apply_determinism(enabled: bool) -> None:
    """Turn torch's deterministic mode on (``run.deterministic = true``) or back to torch's default.

    Call before building the model, so the cuBLAS setting is in place before the first GPU matmul.
    """
    import torch

    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        torch.backends.cudnn.benchmark = False  # autotuning may pick a different kernel each run
    torch.backends.cudnn.deterministic = enabled
    torch.use_deterministic_algorithms(enabled, warn_only=True)
