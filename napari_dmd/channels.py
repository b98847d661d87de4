"""Several co-registered images of one case (MR sequences, an RGB image's colours) held as one image.

A ``Channels`` keeps each channel as it is given (a file's array, a view of a 4D or colour array, a napari
layer's data): nothing is stacked into a copy of the whole case. Crops are cut from every channel and
stacked, channel first, only at patch or window size.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from .errors import DataError

CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")  # nnU-Net's case_0000, case_0001, ...
SINGLE = ("image",)  # the channel names of a one-channel model


def describe(names: Sequence[str]) -> str:
    """'2 channel(s) (T1, T2)': what a model takes or an image has, in messages."""
    return f"{len(names)} channel(s) ({', '.join(names)})"


def default_names(count: int) -> tuple[str, ...]:
    """'image' for one channel; 'channel 0', 'channel 1', ... for several."""
    return SINGLE if count == 1 else tuple(f"channel {c}" for c in range(count))


class Channels:
    """C images of one shape, ``arrays``, named ``names``; ``shape``, ``ndim`` and ``size`` are one channel's."""

    def __init__(self, arrays: Sequence[np.ndarray], names: Sequence[str] = ()):
        self.arrays = tuple(np.asanyarray(a) for a in arrays)  # memory maps stay memory maps
        if not self.arrays:
            raise DataError("an image needs at least one channel")
        self.names = tuple(names) or default_names(len(self.arrays))
        if len(self.names) != len(self.arrays):
            raise DataError(f"{len(self.names)} channel names for {len(self.arrays)} channels")
        shapes = {a.shape for a in self.arrays}
        if len(shapes) > 1:
            raise DataError(f"the channels of one image differ in shape: {', '.join(map(str, sorted(shapes)))}")

    @classmethod
    def of(cls, image: np.ndarray | Channels) -> Channels:
        """``image`` itself if it is a ``Channels``, else an array as one channel."""
        return image if isinstance(image, Channels) else cls([image])

    @classmethod
    def split(cls, array: np.ndarray, axis: int, names: Sequence[str] = ()) -> Channels:
        """The channels of ``array`` along ``axis`` (-1: colour or vector images; 0: 4D images), as views."""
        return cls(list(np.moveaxis(np.asarray(array), axis, 0)), names)

    @property
    def count(self) -> int:
        """C, the number of channels."""
        return len(self.arrays)

    @property
    def shape(self) -> tuple[int, ...]:
        """One channel's shape (the image's spatial shape)."""
        return self.arrays[0].shape

    @property
    def ndim(self) -> int:
        """2 or 3: the spatial dimensions."""
        return self.arrays[0].ndim

    @property
    def size(self) -> int:
        """Voxels of one channel."""
        return self.arrays[0].size

    @property
    def nbytes(self) -> int:
        """Bytes held by all channels."""
        return sum(a.nbytes for a in self.arrays)

    def crop(self, index: tuple[slice, ...]) -> list[np.ndarray]:
        """The same region (spatial ``index``) of every channel, as views."""
        return [a[index] for a in self.arrays]
