"""Normal slices for training and evaluation, and the held-out split (numpy only).

Neighbouring slices of one brain are nearly identical, so held-out slices
are whole blocks of consecutive slices with guard slices around them that
neither side uses: the benchmark then measures reconstruction of anatomy
the network has not seen, not of the slice next to a training slice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .preprocess import DEFAULT_MR_SCALING, MrScaling, prepare_series
from .volumes import Volume

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class SliceSet:
    """Slices of one or more volumes, in order.

    Attributes
    ----------
    images
        ``(n, 1, size, size)`` float32 in [0, 1].
    masks
        ``(n, size, size)`` foreground.
    volume
        ``(n,)`` index of the volume each slice came from.
    position
        ``(n,)`` index of the slice within its volume.
    """

    images: FloatArray
    masks: BoolArray
    volume: IntArray
    position: IntArray

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def take(self, indices: npt.ArrayLike) -> SliceSet:
        """The subset at ``indices``."""
        chosen = np.asarray(indices, dtype=np.int64)
        return SliceSet(self.images[chosen], self.masks[chosen], self.volume[chosen], self.position[chosen])


#: A slice is trained on (and analysed, by the service's default) if its foreground is at least this
#: fraction of its series' largest slice foreground: the tiny caps at the ends of a head are mostly
#: partial-volume edge, and a model never shown them flags them.
MIN_FOREGROUND = 0.25


def enough_foreground(masks: npt.ArrayLike, min_foreground: float = MIN_FOREGROUND) -> npt.NDArray[np.bool_]:
    """Which of a series' ``(n, y, x)`` slice masks have at least ``min_foreground`` of its largest foreground."""
    values = np.asarray(masks, dtype=bool)
    area = values.reshape(len(values), -1).sum(axis=1)
    return np.asarray(area >= min_foreground * max(int(area.max(initial=0)), 1))


def slice_set(
    volumes: Iterable[Volume],
    size: int,
    min_foreground: float = MIN_FOREGROUND,
    mr_scaling: MrScaling = DEFAULT_MR_SCALING,
) -> SliceSet:
    """Prepared axial slices of ``volumes``, keeping slices with enough foreground.

    Parameters
    ----------
    volumes
        Normal series.
    size
        The model's in-plane size.
    min_foreground
        Keep a slice if its foreground is at least this fraction of its
        volume's largest slice foreground (drops the tiny caps of the head,
        which are mostly partial-volume edge).
    mr_scaling
        How MR volumes are scaled (the model's).
    """
    images, masks, volume_ids, positions = [], [], [], []
    for index, volume in enumerate(volumes):
        prepared = prepare_series(volume.voxels, volume.modality, size, mr_scaling=mr_scaling)
        keep = np.flatnonzero(enough_foreground(prepared.masks, min_foreground))
        images.append(prepared.slices[keep])
        masks.append(prepared.masks[keep])
        volume_ids.append(np.full(len(keep), index, dtype=np.int64))
        positions.append(keep.astype(np.int64))
    if not images:
        raise ValueError("no volumes to take slices from")
    return SliceSet(
        np.concatenate(images), np.concatenate(masks), np.concatenate(volume_ids), np.concatenate(positions)
    )


def block_split(positions: npt.ArrayLike, block: int = 8, every: int = 4, guard: int = 2) -> tuple[IntArray, IntArray]:
    """Split slices into training and held-out indices by blocks of consecutive positions.

    Parameters
    ----------
    positions
        Slice index within its volume, per slice.
    block
        Consecutive slices per block.
    every
        Every ``every``-th block (the last of each group) is held out.
    guard
        Slices on each side of a held-out block that are in neither set.

    Returns
    -------
    tuple of numpy.ndarray
        ``(train, heldout)`` indices into ``positions``.
    """
    pos = np.asarray(positions, dtype=np.int64)
    heldout = (pos // block) % every == every - 1
    start = (pos // block) * block
    offset = pos - start
    near_previous = ((pos - guard) // block) % every == every - 1
    near_next = ((pos + guard) // block) % every == every - 1
    in_guard = ~heldout & ((near_previous & (offset < guard)) | (near_next & (offset >= block - guard)))
    return np.flatnonzero(~heldout & ~in_guard), np.flatnonzero(heldout)
