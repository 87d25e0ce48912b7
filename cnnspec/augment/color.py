"""Colour jitter and the automatic policies (RandAugment, TrivialAugmentWide) with torchvision's
semantics, each image drawing its own parameters. They share one op library, in both scripts:
cnnspec/runtime/color_torch.py and color_keras.py, with the policies' tables in
color_common.py; each kind is a draw of the random parameters and their application, so that
the same parameters give the same image in both."""

from typing import ClassVar

from cnnspec.augment.base import GENERATOR, IMAGES, Augmentation
from cnnspec.codegen import Call
from cnnspec.schema import Field

# The op library, dependencies first, as both runtime modules define it.
_PIXELS = ("unit_pixels", "script_pixels", "blend", "grayscale")
_JITTER_OPS = (
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "rgb_to_hsv",
    "pick_sector",
    "hsv_to_rgb",
    "adjust_hue",
)
_POLICY_OPS = (
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "adjust_sharpness",
    "posterize",
    "solarize",
    "autocontrast",
    "equalize",
    "sample_nearest",
    "draw_policy",
    "apply_policy",
)


def _helpers(module: str, names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"{module}:{name}" for name in names)


def _policy_torch(kind: str) -> tuple[str, ...]:
    return (
        "uniform",
        *_helpers("color_common", ("POLICY_OPS", "POLICY_BINS", "policy_tables")),
        *_helpers("color_torch", (*_PIXELS, *_POLICY_OPS)),
        *_helpers("color_torch", (f"draw_{kind}", f"apply_{kind}", f"random_{kind}")),
    )


def _policy_keras(kind: str, layer: str) -> tuple[str, ...]:
    return (
        *_helpers("color_common", ("POLICY_OPS", "POLICY_BINS", "policy_tables")),
        *_helpers("color_keras", (*_PIXELS, *_POLICY_OPS)),
        *_helpers("color_keras", (f"apply_{kind}", f"draw_{kind}", layer)),
    )


class ColorJitter(Augmentation):
    kind: ClassVar[str] = "color_jitter"
    doc: ClassVar[str] = (
        "Brightness, contrast and saturation factors uniform in [max(0, 1 - x), 1 + x] and a "
        "hue shift uniform in [-hue, hue], in a random order per image (torchvision's "
        "ColorJitter); a grayscale image keeps its saturation and hue."
    )
    positional: ClassVar[tuple[str, ...]] = ("brightness", "contrast", "saturation", "hue")
    brightness: float = Field(default=0.0, ge=0)
    contrast: float = Field(default=0.0, ge=0)
    saturation: float = Field(default=0.0, ge=0)
    hue: float = Field(default=0.0, ge=0, le=0.5)

    def amounts(self) -> tuple[float, float, float, float]:
        """Brightness, contrast, saturation and hue: the runtime functions' order."""
        return (self.brightness, self.contrast, self.saturation, self.hue)

    def keras(self, fill: dict[str, object]) -> Call | None:
        names = ("brightness", "contrast", "saturation", "hue")
        return Call(
            "ColorJitter", **{n: a for n, a in zip(names, self.amounts(), strict=True) if a}
        )

    def torch(self) -> Call | None:
        return Call("random_color_jitter", IMAGES, GENERATOR, *self.amounts())

    def torch_helpers(self) -> tuple[str, ...]:
        return (
            "uniform",
            *_helpers("color_torch", (*_PIXELS, *_JITTER_OPS, "JITTERS")),
            *_helpers(
                "color_torch", ("draw_color_jitter", "apply_color_jitter", "random_color_jitter")
            ),
        )

    def keras_helpers(self) -> tuple[str, ...]:
        return _helpers(
            "color_keras",
            (
                *_PIXELS,
                *_JITTER_OPS,
                "JITTERS",
                "apply_color_jitter",
                "draw_color_jitter",
                "ColorJitter",
            ),
        )


class RandAugment(Augmentation):
    kind: ClassVar[str] = "rand_augment"
    doc: ClassVar[str] = (
        "`n` ops per image, each uniform over torchvision's 14 (identity, shears, "
        "translations, rotation, brightness, color, contrast, sharpness, posterize, solarize, "
        "autocontrast, equalize) at magnitude bin `m` of 0..30 with a random sign "
        "(torchvision's RandAugment(num_ops=n, magnitude=m))."
    )
    positional: ClassVar[tuple[str, ...]] = ("n", "m")
    n: int = Field(default=2, ge=1, le=10)
    m: int = Field(default=9, ge=0, le=30)

    def keras(self, fill: dict[str, object]) -> Call | None:
        return Call("RandAugmentPolicy", self.n, self.m)

    def torch(self) -> Call | None:
        return Call("random_rand_augment", IMAGES, GENERATOR, self.n, self.m)

    def torch_helpers(self) -> tuple[str, ...]:
        return _policy_torch("rand_augment")

    def keras_helpers(self) -> tuple[str, ...]:
        return _policy_keras("rand_augment", "RandAugmentPolicy")


class TrivialAugment(Augmentation):
    kind: ClassVar[str] = "trivial_augment"
    doc: ClassVar[str] = (
        "One op per image, uniform over RandAugment's 14, at a uniform magnitude bin of "
        "torchvision's wide ranges with a random sign (torchvision's TrivialAugmentWide())."
    )

    def keras(self, fill: dict[str, object]) -> Call | None:
        return Call("TrivialAugmentPolicy")

    def torch(self) -> Call | None:
        return Call("random_trivial_augment", IMAGES, GENERATOR)

    def torch_helpers(self) -> tuple[str, ...]:
        return _policy_torch("trivial_augment")

    def keras_helpers(self) -> tuple[str, ...]:
        return _policy_keras("trivial_augment", "TrivialAugmentPolicy")


STEPS = (ColorJitter, RandAugment, TrivialAugment)
