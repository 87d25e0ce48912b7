"""What a network's input pixels are, and what pretrained weights expect them to be.

A spec says how images become the network's input with `rescale`, `normalize(mean, std)` and
`color_order`, or names one of keras.applications' conventions with `preprocess`:

- `caffe`: BGR channels, the ImageNet mean subtracted from 0-255 pixels (VGG, ResNet);
- `tf`: pixels scaled to [-1, 1] (MobileNet, ResNetV2, Xception, Inception, NASNet);
- `torch`: pixels in [0, 1] standardised by ImageNet's mean and std (DenseNet);
- `raw`: 0-255 pixels, for networks that rescale inside (EfficientNet, ConvNeXt, MobileNetV3).

`preprocess imagenet` is the convention of the model's backbone, and a backbone with
`weights=imagenet` implies it when the data section says nothing about pixels. The checker warns
(W308) when a spec feeds ImageNet weights something else: the network still trains, but starts
from features computed on inputs they were never trained on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Mode = Literal["caffe", "tf", "torch", "raw"]


@dataclass(frozen=True, slots=True)
class Pixels:
    """x -> (flip(x) * rescale - mean) / std, per channel, from the source's pixels."""

    rescale: float = 1.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    bgr: bool = False

    def affine(self, channels: int) -> tuple[tuple[float, ...], tuple[float, ...], bool]:
        """Per channel (after the flip) scale and offset: what two pipelines must share."""
        mean = self.mean or (0.0,) * channels
        std = self.std or (1.0,) * channels
        scale = tuple(self.rescale / s for s in std)
        offset = tuple(-m / s for m, s in zip(mean, std, strict=False))
        return scale, offset, self.bgr and channels == 3

    def same_as(self, other: Pixels, channels: int) -> bool:
        a, b = self.affine(channels), other.affine(channels)
        return a[2] == b[2] and all(
            math.isclose(x, y, rel_tol=1e-4, abs_tol=1e-6)
            for first, second in zip(a[:2], b[:2], strict=True)
            for x, y in zip(first, second, strict=True)
        )


MODES: dict[Mode, Pixels] = {
    "caffe": Pixels(1.0, (103.939, 116.779, 123.68), (1.0, 1.0, 1.0), bgr=True),
    "tf": Pixels(1 / 127.5, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0)),
    "torch": Pixels(1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "raw": Pixels(),
}

DESCRIPTIONS: dict[Mode, str] = {
    "caffe": "BGR channels with the ImageNet mean subtracted from 0-255 pixels",
    "tf": "pixels scaled to [-1, 1]",
    "torch": "pixels in [0, 1] standardised by the ImageNet mean and std",
    "raw": "0-255 pixels, which the network rescales itself",
}


def describe(pixels: Pixels, white: float = 255.0) -> str:
    """What a pipeline gives, in a phrase: `pixels x 1/255 (0 to 1)`."""
    for mode, known in MODES.items():
        if pixels.same_as(known, 3):
            return f"{mode} preprocessing ({DESCRIPTIONS[mode]})"
    top = white * pixels.rescale
    said = f"0-{white:g} pixels" if pixels.rescale == 1 else f"pixels x {_number(pixels.rescale)}"
    said += f" (0 to {top:.3g})" if pixels.rescale != 1 else ""
    if pixels.mean is not None:
        said += ", then normalised by the given mean and std"
    if pixels.bgr:
        said += ", BGR"
    return said


def _number(value: float) -> str:
    denominator = round(1 / value) if value < 1 else 0
    return (
        f"1/{denominator}" if denominator and math.isclose(1 / denominator, value) else f"{value:g}"
    )
