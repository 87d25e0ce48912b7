"""The crops and erasing of the CIFAR and ImageNet recipes, with torchvision's semantics: each
image draws its own box. Both scripts run their own functions (cnnspec/runtime/crops_torch.py
and crops_keras.py), each split into a draw of the random parameters and their application, so
that the same parameters give the same image in both."""

from typing import Annotated, ClassVar, Literal

from cnnspec.augment.base import GENERATOR, IMAGES, Augmentation
from cnnspec.codegen import Call
from cnnspec.schema import Field, Problem, field_validator

AreaFraction = Annotated[float, Field(gt=0, le=1)]
AspectRatio = Annotated[float, Field(gt=0)]


def _increasing(value: tuple[float, float]) -> tuple[float, float]:
    # torchvision only warns about a reversed range, then draws from an empty one.
    if value[0] > value[1]:
        raise Problem(
            "must be (low, high), the low end first", hint=f"write ({value[1]:g}, {value[0]:g})"
        )
    return value


class RandomCrop(Augmentation):
    kind: ClassVar[str] = "random_crop"
    doc: ClassVar[str] = (
        "Pad each side by `padding`, then crop a random window of the image's size "
        "(torchvision's RandomCrop(size, padding))."
    )
    positional: ClassVar[tuple[str, ...]] = ("padding",)
    padding: int = Field(default=4, ge=1)
    fill: Literal["constant", "reflect", "edge"] = "constant"
    value: float = 0.0

    def keras(self, fill: dict[str, object]) -> Call | None:
        return Call("PaddedRandomCrop", self.padding, self.fill, self.value)

    def torch(self) -> Call | None:
        return Call("random_crop", IMAGES, GENERATOR, self.padding, self.fill, self.value)

    def torch_helpers(self) -> tuple[str, ...]:
        return (
            "uniform",
            "crops_torch:take_pixels",
            "crops_torch:padded_indices",
            "crops_torch:draw_random_crop",
            "crops_torch:apply_random_crop",
            "crops_torch:random_crop",
        )

    def keras_helpers(self) -> tuple[str, ...]:
        return (
            "crops_keras:take_pixels",
            "crops_keras:padded_indices",
            "crops_keras:apply_random_crop",
            "crops_keras:draw_random_crop",
            "crops_keras:PaddedRandomCrop",
        )


class _Box(Augmentation):
    """A step that draws a box by its area fraction (`scale`) and aspect ratio (`ratio`),
    each a (low, high) range that its subclass declares with its own defaults."""

    @field_validator("scale", "ratio")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        return _increasing(value)


class RandomResizedCrop(_Box):
    kind: ClassVar[str] = "random_resized_crop"
    doc: ClassVar[str] = (
        "Crop a random box (area fraction in `scale`, aspect ratio log-uniform in `ratio`) "
        "and resize it to the image's size (torchvision's RandomResizedCrop, bilinear)."
    )
    scale: tuple[AreaFraction, AreaFraction] = (0.08, 1.0)
    ratio: tuple[AspectRatio, AspectRatio] = (3 / 4, 4 / 3)

    def keras(self, fill: dict[str, object]) -> Call | None:
        return Call("ResizedRandomCrop", self.scale, self.ratio)

    def torch(self) -> Call | None:
        return Call("random_resized_crop", IMAGES, GENERATOR, self.scale, self.ratio)

    def torch_helpers(self) -> tuple[str, ...]:
        return (
            "uniform",
            "crops_torch:box_tries",
            "crops_torch:first_try",
            "crops_torch:draw_random_resized_crop",
            "crops_torch:take_pixels",
            "crops_torch:bilinear_rows",
            "crops_torch:apply_random_resized_crop",
            "crops_torch:random_resized_crop",
        )

    def keras_helpers(self) -> tuple[str, ...]:
        return (
            "crops_keras:box_tries",
            "crops_keras:first_try",
            "crops_keras:take_pixels",
            "crops_keras:bilinear_rows",
            "crops_keras:apply_random_resized_crop",
            "crops_keras:draw_random_resized_crop",
            "crops_keras:ResizedRandomCrop",
        )


class RandomErasing(_Box):
    kind: ClassVar[str] = "random_erasing"
    doc: ClassVar[str] = (
        "With probability `p`, fill a random box (area fraction in `scale`, aspect ratio "
        "log-uniform in `ratio`) with `value`, in pixel units (torchvision's RandomErasing)."
    )
    positional: ClassVar[tuple[str, ...]] = ("p",)
    p: float = Field(default=0.5, ge=0, le=1)
    scale: tuple[AreaFraction, AreaFraction] = (0.02, 0.33)
    ratio: tuple[AspectRatio, AspectRatio] = (0.3, 3.3)
    value: float = 0.0

    def keras(self, fill: dict[str, object]) -> Call | None:
        return Call("RandomRectangleErasing", self.p, self.scale, self.ratio, self.value)

    def torch(self) -> Call | None:
        return Call("random_erasing", IMAGES, GENERATOR, self.p, self.scale, self.ratio, self.value)

    def torch_helpers(self) -> tuple[str, ...]:
        return (
            "uniform",
            "crops_torch:box_tries",
            "crops_torch:first_try",
            "crops_torch:draw_random_erasing",
            "crops_torch:apply_random_erasing",
            "crops_torch:random_erasing",
        )

    def keras_helpers(self) -> tuple[str, ...]:
        return (
            "crops_keras:box_tries",
            "crops_keras:first_try",
            "crops_keras:apply_random_erasing",
            "crops_keras:draw_random_erasing",
            "crops_keras:RandomRectangleErasing",
        )


STEPS = (RandomCrop, RandomResizedCrop, RandomErasing)
