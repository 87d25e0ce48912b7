"""The reference tutorial's augmentations (ImageDataGenerator's): the geometric steps, which
resample the image and share the `fill` step's mode, and brightness and contrast. Keras runs its
own preprocessing layers; the PyTorch script, functions of cnnspec/runtime/torch.py with Keras's
rules."""

from typing import ClassVar, Literal

from cnnspec.augment.base import GENERATOR, IMAGES, Augmentation
from cnnspec.codegen import Call, Code, literal
from cnnspec.schema import Field, Fraction01, model_validator


class Rotation(Augmentation):
    kind: ClassVar[str] = "rotation"
    doc: ClassVar[str] = "Random rotation by up to +/- `degrees`."
    positional: ClassVar[tuple[str, ...]] = ("degrees",)
    degrees: float = Field(gt=0, le=180)
    geometric: ClassVar[bool] = True

    def keras(self, fill: dict[str, object]) -> Call | None:
        # Keras takes a fraction of a full turn; the spec says degrees.
        return Call("layers.RandomRotation", Code(f"{literal(self.degrees)} / 360"), **fill)

    def torch(self) -> Call | None:
        return Call("random_rotation", IMAGES, GENERATOR, self.degrees)

    def torch_helpers(self) -> tuple[str, ...]:
        return ("uniform", "warp", "random_rotation")


class Shift(Augmentation):
    kind: ClassVar[str] = "shift"
    doc: ClassVar[str] = "Random translation by up to a fraction of the width and height."
    positional: ClassVar[tuple[str, ...]] = ("width", "height")
    width: Fraction01 = 0.0
    height: Fraction01 | None = None

    @model_validator(mode="after")
    def _height_defaults_to_width(self) -> "Shift":
        if self.height is None:
            object.__setattr__(self, "height", self.width)
        return self

    geometric: ClassVar[bool] = True

    def keras(self, fill: dict[str, object]) -> Call | None:
        return Call("layers.RandomTranslation", self.height, self.width, **fill)

    def torch(self) -> Call | None:
        return Call("random_translation", IMAGES, GENERATOR, self.height, self.width)

    def torch_helpers(self) -> tuple[str, ...]:
        return ("uniform", "warp", "random_translation")


class Flip(Augmentation):
    kind: ClassVar[str] = "flip"
    doc: ClassVar[str] = "Random mirroring."
    positional: ClassVar[tuple[str, ...]] = ("mode",)
    mode: Literal["horizontal", "vertical", "horizontal_and_vertical"] = "horizontal"

    def keras(self, fill: dict[str, object]) -> Call | None:
        return Call("layers.RandomFlip", self.mode)

    def torch(self) -> Call | None:
        return Call("random_flip", IMAGES, GENERATOR, self.mode)

    def torch_helpers(self) -> tuple[str, ...]:
        return ("uniform", "random_flip")


class Zoom(Augmentation):
    kind: ClassVar[str] = "zoom"
    doc: ClassVar[str] = "Random zoom in or out by up to `factor` (0.1 means 90%-110%)."
    positional: ClassVar[tuple[str, ...]] = ("factor",)
    factor: float = Field(gt=0, lt=1)
    geometric: ClassVar[bool] = True

    def keras(self, fill: dict[str, object]) -> Call | None:
        return Call("layers.RandomZoom", self.factor, self.factor, **fill)

    def torch(self) -> Call | None:
        return Call("random_zoom", IMAGES, GENERATOR, self.factor)

    def torch_helpers(self) -> tuple[str, ...]:
        return ("uniform", "warp", "random_zoom")


class Shear(Augmentation):
    kind: ClassVar[str] = "shear"
    doc: ClassVar[str] = "Random shear by up to `factor` of the image size."
    positional: ClassVar[tuple[str, ...]] = ("factor",)
    factor: float = Field(gt=0, lt=1)
    geometric: ClassVar[bool] = True

    def keras(self, fill: dict[str, object]) -> Call | None:
        return Call("layers.RandomShear", x_factor=self.factor, **fill)

    def torch(self) -> Call | None:
        return Call("random_shear", IMAGES, GENERATOR, self.factor)

    def torch_helpers(self) -> tuple[str, ...]:
        return ("uniform", "warp", "random_shear")


class Brightness(Augmentation):
    kind: ClassVar[str] = "brightness"
    doc: ClassVar[str] = "Random brightness shift of up to +/- `factor` of the pixel range."
    positional: ClassVar[tuple[str, ...]] = ("factor",)
    factor: float = Field(gt=0, lt=1)

    def keras(self, fill: dict[str, object]) -> Call | None:
        return Call("layers.RandomBrightness", self.factor, value_range=Code("PIXEL_RANGE"))

    def torch(self) -> Call | None:
        return Call("random_brightness", IMAGES, GENERATOR, self.factor)

    def torch_helpers(self) -> tuple[str, ...]:
        return ("uniform", "random_brightness")


class Contrast(Augmentation):
    kind: ClassVar[str] = "contrast"
    doc: ClassVar[str] = "Random contrast scale in [1 - factor, 1 + factor]."
    positional: ClassVar[tuple[str, ...]] = ("factor",)
    factor: float = Field(gt=0, lt=1)

    def keras(self, fill: dict[str, object]) -> Call | None:
        return Call("layers.RandomContrast", self.factor, value_range=Code("PIXEL_RANGE"))

    def torch(self) -> Call | None:
        return Call("random_contrast", IMAGES, GENERATOR, self.factor)

    def torch_helpers(self) -> tuple[str, ...]:
        return ("uniform", "random_contrast")


class Fill(Augmentation):
    kind: ClassVar[str] = "fill"
    doc: ClassVar[str] = "How pixels uncovered by rotation, shift, zoom and shear are filled."
    positional: ClassVar[tuple[str, ...]] = ("mode",)
    mode: Literal["nearest", "reflect", "wrap", "constant"] = "nearest"
    value: float = 0.0

    def options(self) -> dict[str, object]:
        """Keras's fill options for the geometric layers."""
        return {
            "fill_mode": self.mode,
            **({"fill_value": self.value} if self.mode == "constant" else {}),
        }

    def keras(self, fill: dict[str, object]) -> Call | None:
        return None  # an option of the geometric layers

    def torch(self) -> Call | None:
        return None  # FILL and FILL_VALUE, read by the geometric steps' warp


STEPS = (Rotation, Shift, Flip, Zoom, Shear, Brightness, Contrast, Fill)
