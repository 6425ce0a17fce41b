"""What a merge (or a reshard) of shard directories will write, decided before a byte is copied.

Pure functions over the inputs' manifests: whether their pixels can share one dataset (the same
image shape, dtype and pixel options: a model trained on the merge must see one kind of
image), the union of their class names with each input's label table into it, and where each
input shard's rows land in the output splits (each split is the inputs' rows concatenated, in
the order the inputs are given, cut into shards of the output's size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import RECORDED_BIT_DEPTH
from .errors import ImgshardError
from .manifest import Manifest, ShardInfo
from .wording import option_text

#: The options that make the pixels what they are: inputs must agree on every one.
PIXEL_OPTIONS = ("size", "color", "resize", "interpolation", "dtype", "rescale", "offset",
                 "bit_depth", "decoder")
#: What a recorded config without the option means (every build before the option existed).
RECORDED_DEFAULTS = {"bit_depth": RECORDED_BIT_DEPTH, "decoder": "pillow"}


class MergeError(ImgshardError):
    """The inputs cannot be merged (or the output cannot take them)."""


def check_compatible(names: list[str], manifests: list[Manifest]) -> None:
    """Refuse inputs whose pixels or labelling differ, naming the first difference.

    Raises:
        MergeError: naming the option and the two inputs that disagree.
    """
    for name, manifest in zip(names, manifests):
        if manifest.richer_labels is not None:
            instead = "build the folders together" if len(manifests) > 1 \
                else "build the folder again with --shard-size"
            raise MergeError(f"{name} holds {manifest.richer_labels}, which merge and reshard do not copy yet: "
                             f"{instead} instead")
    first, first_name = manifests[0], names[0]
    for name, manifest in zip(names[1:], manifests[1:]):
        for option in PIXEL_OPTIONS:
            mine, theirs = _recorded(first.config, option), _recorded(manifest.config, option)
            if mine != theirs:
                raise MergeError(f"{name} was built with {option} {option_text(option, theirs)}, "
                                 f"{first_name} with {option_text(option, mine)}: only datasets "
                                 "of the same pixel options merge")
        if tuple(manifest.image_shape) != tuple(first.image_shape) \
                or manifest.dtype != first.dtype:
            raise MergeError(f"{name} holds {manifest.dtype} images of shape "
                             f"{list(manifest.image_shape)}, {first_name} {first.dtype} of "
                             f"{list(first.image_shape)}")
        if (manifest.class_names is None) != (first.class_names is None):
            labelled, unlabelled = (name, first_name) if first.class_names is None \
                else (first_name, name)
            raise MergeError(f"{labelled} has labels and {unlabelled} has none: build both with "
                             "labels, or both with --no-labels")


def _recorded(config: dict, option: str):
    """A pixel option as a build reads its record: ``bit_depth`` absent is 8 (every build before
    the option existed, and every 8-bit build, writes none), ``decoder`` absent is pillow."""
    return config.get(option, RECORDED_DEFAULTS.get(option))


def class_union(manifests: list[Manifest]) -> list[str] | None:
    """The sorted union of the inputs' class names (None when they have no labels)."""
    if manifests[0].class_names is None:
        return None
    return sorted({name for manifest in manifests for name in manifest.class_names or ()})


def label_table(class_names: list[str] | None, union: list[str] | None) -> np.ndarray | None:
    """``table[old label]`` is the label in the union of the class ``old label`` names."""
    if class_names is None or union is None:
        return None
    position = {name: index for index, name in enumerate(union)}
    return np.array([position[name] for name in class_names], dtype=np.int32)


def split_names(manifests: list[Manifest]) -> list[str]:
    """Every split any input has, in the order they first appear."""
    return list(dict.fromkeys(split for manifest in manifests for split in manifest.splits))


@dataclass(frozen=True)
class SplitLayout:
    """Where one split's rows go: ``starts[input][shard name]`` is the output row of that
    input shard's first row; ``total`` rows cut into shards of ``shard_size``."""

    split: str
    total: int
    shard_size: int
    starts: tuple[dict[str, int], ...]

    @property
    def num_shards(self) -> int:
        return -(-self.total // self.shard_size)

    def shard_rows(self, index: int) -> int:
        """Rows of output shard ``index``: full, but the last."""
        return min(self.shard_size, self.total - index * self.shard_size)

    def place(self, source: int, shard: str, row: int) -> tuple[int, int] | None:
        """The output (shard index, row) of row ``row`` of ``source``'s shard file ``shard``;
        None when that input's split lists no such file."""
        start = self.starts[source].get(shard)
        if start is None:
            return None
        return divmod(start + row, self.shard_size)


@dataclass(frozen=True)
class Piece:
    """Rows ``start`` to ``stop`` of input ``source``'s shard ``shard``: the part of it that
    one output shard holds."""

    source: int
    shard: ShardInfo
    start: int
    stop: int


def shard_pieces(layout: SplitLayout, manifests: list[Manifest]) -> list[list[Piece]]:
    """For each output shard of ``layout``, in order, the input rows it holds: what lets any
    thread write any output shard, the bytes depending only on the plan."""
    pieces: list[list[Piece]] = [[] for _ in range(layout.num_shards)]
    for source, manifest in enumerate(manifests):
        for shard in manifest.splits[layout.split].shards if layout.split in manifest.splits \
                else ():
            row = 0
            while row < shard.num_samples:
                index, offset = layout.place(source, shard.images, row)
                stop = min(shard.num_samples, row + layout.shard_size - offset)
                pieces[index].append(Piece(source, shard, row, stop))
                row = stop
    return pieces


def split_layout(split: str, manifests: list[Manifest], shard_size: int) -> SplitLayout:
    """The layout of ``split`` over the inputs, in the order given."""
    starts, total = [], 0
    for manifest in manifests:
        mine = {}
        for shard in manifest.splits[split].shards if split in manifest.splits else ():
            mine[shard.images] = total
            total += shard.num_samples
        starts.append(mine)
    return SplitLayout(split, total, shard_size, tuple(starts))
