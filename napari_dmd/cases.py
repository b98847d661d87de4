"""The user's image layers and how they group into cases: an image layer with the layers that are its
channels (the user's pick, else ``pairing.default_groups``), and what the user chose for each row."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .channels import Channels
from .pairing import LayerInfo, channel_token, default_groups, image_problem, layer_channels


@dataclass
class Choice:
    """What the user chose for one image row."""

    include: bool = True
    labels: str | None = None  # the labels layer picked by hand ('' = none)
    manual: bool = False
    channel_of: str | None = None  # the image whose case this one is a channel of, picked by hand ('' = own case)
    grouped: bool = False  # whether channel_of was picked by hand


@dataclass
class Layer:
    """An image or labels layer as the session knows it (data by reference)."""

    name: str
    data: Any
    rgb: bool = False
    class_names: tuple[str, ...] | None = None
    spacing: tuple[float, ...] | None = None  # of an image layer: its scale

    @property
    def info(self) -> LayerInfo:
        return LayerInfo(self.name, tuple(np.shape(self.data)), self.rgb)

    @property
    def shape(self) -> tuple[int, ...]:
        """The spatial shape (a colour image's without its colour axis)."""
        return self.info.spatial


class CaseGrouping:
    """Image layers by name, the user's choice per row, and the cases they make."""

    def __init__(self) -> None:
        self.images: dict[str, Layer] = {}
        self.choices: dict[str, Choice] = {}

    def add(self, layer: Layer) -> None:
        """An image layer (ticked for training when usable)."""
        self.images[layer.name] = layer
        self.choices.setdefault(layer.name, Choice(include=image_problem(layer.info) is None))

    def choice(self, image: str) -> Choice:
        """The user's choice for ``image`` (a default one made if none)."""
        return self.choices.setdefault(image, Choice())

    def members(self) -> dict[str, str]:
        """Image layers that are channels of another layer's case -> that case (its first layer): the user's
        pick, else the default grouping by name (``pairing.default_groups``). A layer picked as a case by the
        user stays its own case unless picked into another; a pick that no longer fits is ignored."""
        auto = default_groups([lay.info for lay in self.images.values()])
        targets = {c.channel_of for c in self.choices.values() if c.grouped and c.channel_of}
        picked: dict[str, str | None] = {}
        for name in self.images:
            choice = self.choice(name)
            if choice.grouped and choice.channel_of and choice.channel_of not in self.images:
                choice.channel_of, choice.grouped = None, False  # the picked case is gone
            picked[name] = (choice.channel_of or None) if choice.grouped else \
                (None if name in targets else auto.get(name))
        out = {}
        for name, target in picked.items():
            seen = {name}
            while target is not None and target not in seen and picked.get(target) is not None:
                seen.add(target)  # a channel of a channel: of that one's case
                target = picked[target]
            if target is not None and target not in seen and self._fits(name, target):
                out[name] = target
        return out

    def _fits(self, image: str, case: str) -> bool:
        """Whether ``image`` may be a channel of ``case``: two usable single-channel layers of one shape."""
        a, b = self.images[image], self.images[case]
        return image != case and not (a.rgb or b.rgb) and a.shape == b.shape \
            and image_problem(a.info) is None and image_problem(b.info) is None

    def groupable(self, image: str) -> list[str]:
        """The other images ``image`` may be a channel of: usable single-channel layers of its shape."""
        return [n for n in self.images if self._fits(image, n)]

    def group(self, image: str, case: str | None) -> None:
        """The user's pick: ``image`` is a channel of ``case``'s case (None: its own case)."""
        choice = self.choice(image)
        choice.channel_of, choice.grouped = case or "", True

    def cases(self) -> list[str]:
        """The cases (rows that train), each named after its first layer, in the viewer's order."""
        members = self.members()
        return [n for n in self.images if n not in members]

    def case_of(self, image: str | None) -> str | None:
        """The case an image layer belongs to (itself, or the case it is a channel of); None for no image."""
        if image not in self.images:
            return None
        return self.members().get(image, image)

    def channels_of(self, case: str) -> list[str]:
        """The image layers of a case, its own first."""
        return [case, *(n for n, c in self.members().items() if c == case)]

    def case_image(self, case: str) -> np.ndarray | Channels:
        """The image a case trains on: its layer's data, a colour layer's channels, or the ``Channels`` of its
        layers (data by reference) named by their channel tokens (else by the layers' names)."""
        layers = self.channels_of(case)
        if len(layers) == 1:
            return layer_channels(self.images[case].data, self.images[case].rgb)
        tokens = [channel_token(n) for n in layers]
        names = [t[1] for t in tokens] if all(tokens) and len({t[1].lower() for t in tokens}) == len(layers) \
            else layers
        return Channels([self.images[n].data for n in layers], names)

    def rename(self, old: str, new: str) -> None:
        """A layer was renamed: its row and every pick naming it follow."""
        for table in (self.images, self.choices):
            if old in table:
                table[new] = table.pop(old)
        if new in self.images:
            self.images[new].name = new
        for choice in self.choices.values():
            if choice.labels == old:
                choice.labels = new
            if choice.channel_of == old:
                choice.channel_of = new
