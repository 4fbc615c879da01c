"""``tar-shards``: WebDataset-style tar shards, the format large image-caption corpora ship in.

A split is a folder of ``shard-000000.tar``, ``shard-000001.tar``, ... (uncompressed tar). A sample
is the members sharing a key, the member name up to the first dot of its base name:
``000123.png`` (or ``.jpg`` / ``.jpeg``) and ``000123.json`` holding ``{"captions": [...]}`` or
``{"caption": "..."}``. ``lgvq shards`` writes this layout from any dataset.

**Random access, not a stream.** Opening a split reads every shard's tar headers once (no image
data) into an index: sample i -> (shard, byte offset, size) of its image and caption members.
An item is then one seek and one read in its shard, so the split is an ordinary indexable dataset
and the runner's key sampler applies unchanged: each rank draws its own keys of every global batch,
each loader worker its own batches, and a resumed run continues at ``batches_seen`` exactly, mid
epoch included, whatever the number of workers. A sequential stream would need a position of its
own (shard, member, shuffle buffer) per rank and worker, and would tie the data order to the
number of workers; the index avoids both at the cost of seeks, which local disks and page caches
serve well. Shard files are opened lazily, once per process (loader workers included).

Member names are checked like index-file paths (:mod:`lgvq_core.data.inside_root`): an absolute
name or one climbing out with ``..`` refuses the whole shard, naming it and the member, so that
no tool that unpacks the shard can be led to write outside its folder.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image

from lgvq_core.data.base import CaptionedImages, config_options, split_options
from lgvq_core.data.config import TarShardsConfig
from lgvq_core.data.files import SKIP_HINT, require_dir, resolve
from lgvq_core.data.inside_root import escape_problem
from lgvq_core.errors import DataError

#: Image member extensions a sample may use.
IMAGE_EXTENSIONS: tuple[str, ...] = ("png", "jpg", "jpeg")
#: Shard file names: ``shard-`` and six digits.
SHARD_GLOB = "shard-[0-9][0-9][0-9][0-9][0-9][0-9].tar"


def shard_name(number: int) -> str:
    return f"shard-{number:06d}.tar"


@dataclass(frozen=True)
class Member:
    """Where a member's bytes lie in its shard."""

    offset: int
    size: int


@dataclass(frozen=True)
class Sample:
    shard: int
    key: str
    image: Member
    captions: Member


def sample_key(name: str) -> tuple[str, str]:
    """``dir/000123.seg.png`` -> (``dir/000123``, ``seg.png``): WebDataset's key / extension rule."""
    folder, base = posixpath.split(name)
    stem, _, extension = base.partition(".")
    return posixpath.join(folder, stem), extension.lower()


def index_shard(path: Path, number: int) -> list[Sample]:
    """The samples of one shard, in member order; refuses unsafe member names and incomplete samples."""
    members: dict[str, dict[str, Member]] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for info in tar:
                problem = escape_problem(info.name)
                if problem is not None:
                    raise DataError(
                        f"{path}: the tar member {info.name!r} {problem}; a shard's member names must be "
                        "relative paths that stay inside the shard (rewrite the shard, e.g. with `lgvq shards`)"
                    )
                if not info.isfile():
                    continue
                key, extension = sample_key(info.name)
                members.setdefault(key, {})[extension] = Member(info.offset_data, info.size)
    except (tarfile.TarError, OSError) as exc:
        raise DataError(f"cannot read the tar shard {path}: {exc}") from None
    samples = []
    for key, parts in members.items():
        image = next((parts[e] for e in IMAGE_EXTENSIONS if e in parts), None)
        if image is None or "json" not in parts:
            missing = "an image (.png or .jpg)" if image is None else "captions (.json)"
            raise DataError(f"{path}: sample {key!r} has no {missing}; every sample needs KEY.png|jpg and KEY.json")
        samples.append(Sample(number, key, image, parts["json"]))
    return samples


def shard_files(folder: Path, key: str) -> list[Path]:
    """The split's shard files in name order; at least one."""
    require_dir(folder, key)
    shards = sorted(folder.glob(SHARD_GLOB))
    if not shards:
        raise DataError(f"{folder} ({key}) holds no {SHARD_GLOB} files; write some with `lgvq shards RUN_FILE OUT`")
    return shards


def parse_captions(raw: bytes, where: str) -> list[str]:
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{where}: not valid UTF-8 JSON ({exc}); {SKIP_HINT}") from None
    if isinstance(record, dict) and isinstance(record.get("captions"), list):
        if all(isinstance(c, str) for c in record["captions"]):
            return record["captions"]
    if isinstance(record, dict) and isinstance(record.get("caption"), str):
        return [record["caption"]]
    raise DataError(f'{where}: expected {{"captions": ["...", ...]}} or {{"caption": "..."}}; {SKIP_HINT}')


class TarShards(CaptionedImages):
    name = "tar-shards"

    def __init__(self, config: TarShardsConfig, *, split: str, skip_bad_items: bool = False, log=None) -> None:
        root = require_dir(Path(config.root).expanduser(), "root")
        key = "train_dir" if split == "train" else "val_dir"
        self.shards = shard_files(resolve(root, getattr(config, key)), key)
        self.samples: list[Sample] = []
        for number, path in enumerate(self.shards):
            self.samples.extend(index_shard(path, number))
        if not self.samples:
            raise DataError(f"the shards of {key} ({self.shards[0].parent}) hold no samples")
        self._open: dict[int, BinaryIO] = {}
        self._opened_by = os.getpid()
        super().__init__(split=split, skip_bad_items=skip_bad_items, log=log, **config_options(config))

    def __len__(self) -> int:
        return len(self.samples)

    def __getstate__(self) -> dict[str, Any]:  # loader workers open their own files
        state = dict(self.__dict__)
        state["_open"] = {}
        return state

    def _read(self, shard: int, member: Member) -> bytes:
        if self._opened_by != os.getpid():  # a forked worker: never share file positions
            self._open, self._opened_by = {}, os.getpid()
        handle = self._open.get(shard)
        if handle is None:
            handle = self._open[shard] = open(self.shards[shard], "rb")  # noqa: SIM115 (kept open for reuse)
        handle.seek(member.offset)
        data = handle.read(member.size)
        if len(data) != member.size:
            raise DataError(f"{self.shards[shard]}: truncated at byte {member.offset}; {SKIP_HINT}")
        return data

    def _where(self, index: int) -> str:
        sample = self.samples[index]
        return f"{self.shards[sample.shard]}: sample {sample.key!r}"

    def _raw_captions(self, index: int) -> list[str]:
        sample = self.samples[index]
        return parse_captions(self._read(sample.shard, sample.captions), self._where(index))

    def _load_image(self, index: int) -> Image.Image:
        sample = self.samples[index]
        try:
            with Image.open(io.BytesIO(self._read(sample.shard, sample.image))) as image:
                image.load()
                return image.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise DataError(f"{self._where(index)}: cannot decode the image: {exc}; {SKIP_HINT}") from None

    def _caption_source(self, index: int) -> str:
        return self._where(index)


def build_tar_shards(config: TarShardsConfig, context: Any) -> TarShards:
    return TarShards(config, **split_options(context))
