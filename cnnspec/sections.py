"""The non-model sections of a spec (`data`, `augment`, `train` with its `phase`s, `evaluate`):
their settings, the calls they accept, and one generic binder that validates them with located
errors. Cross-section rules (a monitored metric must exist, the loss must fit the output) live in
`cnnspec.check`.
"""

from dataclasses import dataclass, field
from math import ceil
from typing import Annotated, Any, ClassVar, Literal

from cnnspec import codes
from cnnspec import syntax as ast
from cnnspec.binding import Bound, bind_call, describe, phrase, problem_text, to_python
from cnnspec.codegen import Call, Code, literal, sequence
from cnnspec.diagnostics import Diagnostics, did_you_mean
from cnnspec.expressions import ExpressionError, resolve
from cnnspec.registry import no_emitter
from cnnspec.schema import Before, Field, Invalid, Problem, field_validator, model_validator
from cnnspec.source import Span

Fraction01 = Annotated[float, Field(ge=0, lt=1)]
Positive = Annotated[float, Field(gt=0)]


def _monitor(value: object) -> object:
    if isinstance(value, str) and not value.isidentifier():
        raise Problem("must be a metric name such as val_loss or val_accuracy")
    return value


Monitor = Annotated[str, Before(_monitor)]

# --------------------------------------------------------------------------------------------
# data


class DataSource(Bound):
    """A data source, with what each generated script needs of it: its loader (the blocks of
    each backend's LOADERS table it names), its imports and its constants."""

    kind: ClassVar[str]
    doc: ClassVar[str] = ""
    # The value of a white pixel in the source's own images: 255, or 16 for the digits.
    white: ClassVar[float] = 255.0
    # Each backend's loader: names in that backend's LOADERS table, in order.
    loaders: ClassVar[dict[str, tuple[str, ...]]] = {}
    # Standard-library modules and `from ... import ...` lines each backend's script needs.
    stdlib: ClassVar[tuple[str, ...]] = ()
    imports: ClassVar[dict[str, tuple[str, ...]]] = {}
    # Whether the script splits the source's images itself (scikit-learn's train_test_split).
    splits_itself: ClassVar[bool] = False
    # Whether the loader yields a stream of (image, label) batches read from files, rather than
    # arrays in memory: the Keras pipeline takes it as it is, a damaged file shows only when it
    # is decoded, and the classes are the folders' (CLASS_COUNT; CLASS_NAMES once read).
    streams_files: ClassVar[bool] = False
    # The --data-dir default (an expression of the script) and its help.
    data_dir: ClassVar[tuple[str, str]] = ("None", "unused: the source needs no folder")

    def native_shape(self) -> tuple[int, int, int] | None:
        return None

    def class_names(self) -> tuple[str, ...] | None:
        return None

    def training_images(self) -> tuple[int, str] | None:
        """How many images the training split holds before a validation fraction is held out
        of it, and how that count comes about, when the spec alone says (None: only the
        source's files can say)."""
        return None

    def constants(self) -> list[str]:
        """The script constants the loader reads (after the common ones)."""
        return []

    def source_constants(self) -> list[str]:
        """Constants the script needs before the input shape (a download URL)."""
        return []


CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


class Cifar10(DataSource):
    kind: ClassVar[str] = "cifar10"
    doc: ClassVar[str] = "CIFAR-10 from a local `cifar-10-batches-py` folder: 32x32x3, 10 classes."
    loaders: ClassVar[dict[str, tuple[str, ...]]] = {
        "keras": ("CIFAR10_LOADER",),
        "pytorch": ("CIFAR10_LOADER",),
    }
    stdlib: ClassVar[tuple[str, ...]] = ("pickle",)
    data_dir: ClassVar[tuple[str, str]] = (
        "KERAS_DATASETS",
        "folder holding cifar-10-batches-py (default: Keras's cache)",
    )

    def source_constants(self) -> list[str]:
        return [
            'CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"',
            'KERAS_DATASETS = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) '
            '/ "datasets"',
        ]

    def native_shape(self) -> tuple[int, int, int]:
        return (32, 32, 3)

    def class_names(self) -> tuple[str, ...]:
        return CIFAR10_CLASSES

    def training_images(self) -> tuple[int, str]:
        return 50_000, "CIFAR-10's 50,000 training images"


DIGITS = 1_797  # images in scikit-learn's bundled digits


class Digits(DataSource):
    kind: ClassVar[str] = "digits"
    doc: ClassVar[str] = "scikit-learn's bundled 8x8 digits (1,797 images, 10 classes)."
    white: ClassVar[float] = 16.0
    positional: ClassVar[tuple[str, ...]] = ("test_fraction",)
    loaders: ClassVar[dict[str, tuple[str, ...]]] = {
        "keras": ("DIGITS_LOADER",),
        "pytorch": ("DIGITS_LOADER",),
    }
    imports: ClassVar[dict[str, tuple[str, ...]]] = {
        "keras": ("from sklearn.datasets import load_digits",),
        "pytorch": ("from sklearn.datasets import load_digits",),
    }
    splits_itself: ClassVar[bool] = True
    data_dir: ClassVar[tuple[str, str]] = ("None", "unused: the digits come with scikit-learn")
    test_fraction: float = Field(default=0.2, gt=0, lt=1)

    def constants(self) -> list[str]:
        return [f"TEST_FRACTION = {literal(self.test_fraction)}"]

    def native_shape(self) -> tuple[int, int, int]:
        return (8, 8, 1)

    def class_names(self) -> tuple[str, ...]:
        return tuple(str(d) for d in range(10))

    def training_images(self) -> tuple[int, str]:
        # scikit-learn's train_test_split holds out ceil(fraction x count) for the test split.
        held = ceil(DIGITS * self.test_fraction)
        return DIGITS - held, (
            f"{DIGITS:,} digits, less {held:,} for the test split "
            f"(test_fraction {self.test_fraction:g})"
        )


# The files an image folder's images are read from, by suffix (the formats torchvision's
# ImageFolder reads, and GIF): both scripts decode them with Pillow (their IMAGE_SUFFIXES is
# this), the checker counts them, and int8 calibration reads them.
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")


class Directory(DataSource):
    kind: ClassVar[str] = "directory"
    doc: ClassVar[str] = "`train/`, `val/` and `test/` folders of class sub-folders."
    positional: ClassVar[tuple[str, ...]] = ("path",)
    loaders: ClassVar[dict[str, tuple[str, ...]]] = {
        "keras": ("DIRECTORY_FOLDERS", "DIRECTORY_LOADER"),
        "pytorch": ("DIRECTORY_FOLDERS", "DIRECTORY_LOADER"),
    }
    # Both scripts read the images with Pillow (the same pixels), in threads to check them.
    stdlib: ClassVar[tuple[str, ...]] = ("concurrent.futures", "time")
    imports: ClassVar[dict[str, tuple[str, ...]]] = {
        "keras": ("from PIL import Image",),
        "pytorch": ("from PIL import Image",),
    }
    streams_files: ClassVar[bool] = True
    data_dir: ClassVar[tuple[str, str]] = (
        "DATA_PATH",
        "folder with train/, val/ and test/ class folders",
    )
    path: str
    size: tuple[int, int] | None = None
    grayscale_to_rgb: bool = False
    color: Literal["rgb", "grayscale"] = "rgb"
    classes: tuple[str, ...] | None = None

    @field_validator("size")
    @classmethod
    def _positive_size(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and min(value) < 1:
            raise ValueError("must be a size like 224x224")
        return value

    def native_shape(self) -> tuple[int, int, int] | None:
        if self.size is None:
            return None
        channels = 3 if self.color == "rgb" or self.grayscale_to_rgb else 1
        return (*self.size, channels)

    def class_names(self) -> tuple[str, ...] | None:
        return self.classes

    def constants(self) -> list[str]:
        # grayscale_to_rgb: read one channel, then repeat it three times for the model.
        gray = self.color == "grayscale" or self.grayscale_to_rgb
        return [
            f"DATA_PATH = {literal(self.path)}",
            f"COLOR_MODE = {literal('grayscale' if gray else 'rgb')}",
            "# The files a class folder's images are read from, decoded by Pillow.",
            *sequence("IMAGE_SUFFIXES = ", IMAGE_SUFFIXES, indent=0),
        ]


SourceChoice = Cifar10 | Digits | Directory
SOURCES: dict[str, type[Bound]] = {c.kind: c for c in (Cifar10, Digits, Directory)}


class Normalize(Bound):
    """Per-channel standardisation after rescaling: (x - mean) / std."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @model_validator(mode="after")
    def _same_length(self) -> "Normalize":
        if len(self.mean) != len(self.std):
            raise ValueError("mean and std need one value per channel each")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be greater than 0")
        return self


class DataSection(Bound):
    source: SourceChoice | None = None
    # A keras.applications convention (cnnspec.preprocessing), or `imagenet`: the backbone's.
    preprocess: Literal["imagenet", "caffe", "tf", "torch", "raw"] | None = None
    rescale: Positive = 1.0
    normalize: Normalize | None = None
    # bgr: the channels are reversed before normalisation, as Caffe-trained weights expect.
    color_order: Literal["rgb", "bgr"] = "rgb"
    labels: Literal["onehot", "sparse", "binary"] = "onehot"
    validation: Literal["test", "val", "none"] | Annotated[float, Field(gt=0, lt=1)] = "none"
    classes: tuple[str, ...] | None = None

    def class_names(self) -> tuple[str, ...] | None:
        if self.classes is not None:
            return self.classes
        return self.source.class_names() if self.source is not None else None

    @property
    def has_validation(self) -> bool:
        return self.validation != "none"


# --------------------------------------------------------------------------------------------
# augment


# What the PyTorch script's augmentation functions take: the batch and the training generator.
IMAGES, GENERATOR = Code("images"), Code("generator")


class Augmentation(Bound):
    kind: ClassVar[str]
    doc: ClassVar[str] = ""
    # Geometric steps resample the image and take the `fill` step's mode.
    geometric: ClassVar[bool] = False

    @no_emitter
    def keras(self, fill: dict[str, object]) -> Call | None:
        """The Keras preprocessing layer of this step (None: an option of other steps);
        `fill` holds the geometric layers' fill options."""
        raise NotImplementedError(f"augmentation {self.kind!r} has no Keras emitter")

    @no_emitter
    def torch(self) -> Call | None:
        """The PyTorch script's call of this step on `images` (None: an option of other
        steps), one of the script's augmentation functions (see `torch_helpers`)."""
        raise NotImplementedError(f"augmentation {self.kind!r} has no PyTorch emitter")

    def torch_helpers(self) -> tuple[str, ...]:
        """The PyTorch script's augmentation functions this step calls, in dependency order."""
        return ()


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


AUGMENTATIONS: dict[str, type[Bound]] = {
    c.kind: c for c in (Rotation, Shift, Flip, Zoom, Shear, Brightness, Contrast, Fill)
}


class AugmentSection(Bound):
    steps: tuple[Augmentation, ...] = ()

    def get(self, kind: str) -> Augmentation | None:
        return next((s for s in self.steps if s.kind == kind), None)

    def fill(self) -> Fill:
        """The fill step, or the reference tutorial's `nearest` when there is none."""
        fill = self.get("fill")
        return fill if isinstance(fill, Fill) else Fill()

    def keras_layers(self) -> list[Call]:
        from cnnspec.emitters import tables

        options = self.fill().options()
        steps = tables("keras")["augmentations"]
        calls = [steps.emit(step, options) for step in self.steps]
        return [call for call in calls if call is not None]

    def torch_calls(self) -> list[Call]:
        """The PyTorch script's augmentation, one call per step in the spec's order."""
        from cnnspec.emitters import tables

        steps = tables("pytorch")["augmentations"]
        calls = [steps.emit(step) for step in self.steps]
        return [call for call in calls if call is not None]

    def torch_helpers(self) -> list[str]:
        """The augmentation functions the PyTorch script needs, each once, dependencies first."""
        return list(dict.fromkeys(h for step in self.steps for h in step.torch_helpers()))

    def torch_fill(self) -> dict[str, object]:
        """FILL and FILL_VALUE of the geometric steps' warp, when there are any."""
        if not any(step.geometric for step in self.steps):
            return {}
        fill = self.fill()
        return {"FILL": fill.mode, "FILL_VALUE": fill.value if fill.mode == "constant" else 0.0}


# --------------------------------------------------------------------------------------------
# train


class Optimizer(Bound):
    kind: ClassVar[str]
    positional: ClassVar[tuple[str, ...]] = ("lr",)
    aliases: ClassVar[dict[str, str]] = {"learning_rate": "lr"}
    keras_class: ClassVar[str]
    lr: Positive

    def keras(self) -> Call:
        """The Keras optimizer: the spec's learning rate and every setting that differs from
        the default (the defaults here are Keras's)."""
        options = {
            key: value
            for key, value in self.model_dump().items()
            if key != "lr" and value != type(self).model_fields[key].default
        }
        return Call(self.keras_class, learning_rate=self.lr, **options)

    @no_emitter
    def torch(self, parameters: Code) -> Call:
        """The PyTorch optimizer over `parameters`, with Keras's settings spelled out."""
        raise NotImplementedError(f"optimizer {self.kind!r} has no PyTorch emitter")


class Adam(Optimizer):
    kind: ClassVar[str] = "adam"
    keras_class: ClassVar[str] = "keras.optimizers.Adam"
    lr: Positive = 1e-3
    beta_1: Fraction01 = 0.9
    beta_2: Fraction01 = 0.999
    epsilon: Positive = 1e-7

    def torch(self, parameters: Code) -> Call:
        betas = (self.beta_1, self.beta_2)
        return Call("torch.optim.Adam", parameters, lr=self.lr, betas=betas, eps=self.epsilon)


class AdamW(Optimizer):
    kind: ClassVar[str] = "adamw"
    keras_class: ClassVar[str] = "keras.optimizers.AdamW"
    lr: Positive = 1e-3
    weight_decay: Annotated[float, Field(ge=0)] = 0.004
    beta_1: Fraction01 = 0.9
    beta_2: Fraction01 = 0.999
    epsilon: Positive = 1e-7

    def torch(self, parameters: Code) -> Call:
        return Call(
            "torch.optim.AdamW",
            parameters,
            lr=self.lr,
            betas=(self.beta_1, self.beta_2),
            eps=self.epsilon,
            weight_decay=self.weight_decay,
        )


class SGD(Optimizer):
    kind: ClassVar[str] = "sgd"
    keras_class: ClassVar[str] = "keras.optimizers.SGD"
    lr: Positive = 0.01
    momentum: Fraction01 = 0.0
    nesterov: bool = False

    def torch(self, parameters: Code) -> Call:
        options: dict[str, object] = {"momentum": self.momentum} if self.momentum else {}
        if self.nesterov:
            options["nesterov"] = True
        return Call("torch.optim.SGD", parameters, lr=self.lr, **options)


class RMSprop(Optimizer):
    kind: ClassVar[str] = "rmsprop"
    keras_class: ClassVar[str] = "keras.optimizers.RMSprop"
    lr: Positive = 1e-3
    rho: Fraction01 = 0.9
    momentum: Fraction01 = 0.0
    epsilon: Positive = 1e-7

    def torch(self, parameters: Code) -> Call:
        options = {"momentum": self.momentum} if self.momentum else {}
        return Call(
            "torch.optim.RMSprop",
            parameters,
            lr=self.lr,
            alpha=self.rho,
            eps=self.epsilon,
            **options,
        )


OPTIMIZERS: dict[str, type[Bound]] = {c.kind: c for c in (Adam, AdamW, SGD, RMSprop)}


class Schedule(Bound):
    """A learning-rate schedule: `schedule cosine(warmup=1)` in train or a phase. Every
    step's rate is cnnspec.runtime.rules.learning_rate's, from the phase's optimizer's
    rate, its epochs and the training split's batches per epoch (known when the script
    runs); both scripts copy that function. `keras` gives the optimizer's learning_rate,
    `torch` the callback that steps a LambdaLR after every optimizer step."""

    kind: ClassVar[str]

    def options(self, lr: float) -> dict[str, object]:
        """The keyword arguments of learning_rate() for this schedule."""
        return self.model_dump()

    def rate_at(self, step: int, steps_per_epoch: int, epochs: int, lr: float) -> float:
        """The rate of optimizer step `step`, as the scripts compute it."""
        from cnnspec.runtime.rules import learning_rate

        options = self.options(lr)
        rate: float = learning_rate(step, steps_per_epoch, epochs, self.kind, lr, **options)
        return rate

    def keras(self, lr: float, epochs: int) -> object:
        """The Keras optimizer's learning_rate: a PhaseSchedule over the phase's steps."""
        steps = Code('len(datasets["train"])')
        return Call("PhaseSchedule", steps, epochs, self.kind, lr, **self.options(lr))

    def torch(self, lr: float, epochs: int) -> Call | None:
        """The PyTorch phase's PhaseSchedule callback (None: the optimizer's rate stays)."""
        steps = Code('len(loaders["train"])')
        options = self.options(lr)
        return Call("PhaseSchedule", Code("optimizer"), steps, epochs, self.kind, lr, **options)


class Constant(Schedule):
    """The optimizer's rate throughout (reduce_lr may still lower it)."""

    kind: ClassVar[str] = "constant"

    def keras(self, lr: float, epochs: int) -> object:
        return lr

    def torch(self, lr: float, epochs: int) -> Call | None:
        return None


class Cosine(Schedule):
    """A linear warmup to the optimizer's rate over `warmup` epochs, then a cosine decay
    to `min_lr` at the phase's end; stepped per batch."""

    kind: ClassVar[str] = "cosine"
    warmup: Annotated[float, Field(ge=0)] = 0.0
    min_lr: Annotated[float, Field(ge=0)] = 0.0


class Linear(Schedule):
    """A linear warmup over `warmup` epochs, then a straight line from the optimizer's
    rate to `end_lr` at the phase's end; stepped per batch."""

    kind: ClassVar[str] = "linear"
    warmup: Annotated[float, Field(ge=0)] = 0.0
    end_lr: Annotated[float, Field(ge=0)] = 0.0


class OneCycle(Schedule):
    """torch.optim.lr_scheduler.OneCycleLR's: from max_lr / div_factor up to `max_lr` (the
    optimizer's rate when not given) over `pct_start` of the steps, then down to the start
    / final_div_factor, both along a cosine; stepped per batch."""

    kind: ClassVar[str] = "one_cycle"
    positional: ClassVar[tuple[str, ...]] = ("max_lr",)
    max_lr: Positive | None = None
    pct_start: float = Field(default=0.3, gt=0, lt=1)
    div_factor: Positive = 25.0
    final_div_factor: Positive = 1e4

    def options(self, lr: float) -> dict[str, object]:
        return {**self.model_dump(), "max_lr": self.max_lr or lr}


class Step(Schedule):
    """The optimizer's rate times `factor` after every `every` epochs; stepped per epoch."""

    kind: ClassVar[str] = "step"
    positional: ClassVar[tuple[str, ...]] = ("every", "factor")
    every: Annotated[int, Field(gt=0)]
    factor: float = Field(default=0.1, gt=0, lt=1)


class Exponential(Schedule):
    """The optimizer's rate times `rate` after each epoch; stepped per epoch."""

    kind: ClassVar[str] = "exponential"
    positional: ClassVar[tuple[str, ...]] = ("rate",)
    rate: float = Field(gt=0, le=1)


SCHEDULES: dict[str, type[Bound]] = {
    c.kind: c for c in (Constant, Cosine, OneCycle, Step, Exponential, Linear)
}


class Loss(Bound):
    """A loss, with both backends' code: Keras's loss object, and the PyTorch statements that
    turn `logits` and `targets` into per-example `losses` (on logits, as Keras computes them
    from the output activation's input)."""

    kind: ClassVar[str]
    # The label encoding and output activation the loss expects.
    labels: ClassVar[str]
    activation: ClassVar[str]
    keras_class: ClassVar[str]

    def keras(self) -> Call:
        return Call(f"keras.losses.{self.keras_class}", **self.explicit())

    @no_emitter
    def torch(self) -> str:
        raise NotImplementedError(f"{self.kind} has no PyTorch code")


class _SoftmaxCrossentropy(Loss):
    activation: ClassVar[str] = "softmax"

    def torch(self) -> str:
        smoothing = ", label_smoothing=LABEL_SMOOTHING" if self.smoothing() else ""
        return f'losses = F.cross_entropy(logits, targets, reduction="none"{smoothing})'

    def smoothing(self) -> float:
        return float(getattr(self, "label_smoothing", 0.0))


class CategoricalCrossentropy(_SoftmaxCrossentropy):
    kind: ClassVar[str] = "categorical_crossentropy"
    labels: ClassVar[str] = "onehot"
    keras_class: ClassVar[str] = "CategoricalCrossentropy"
    label_smoothing: Fraction01 = 0.0


class SparseCategoricalCrossentropy(_SoftmaxCrossentropy):
    kind: ClassVar[str] = "sparse_categorical_crossentropy"
    labels: ClassVar[str] = "sparse"
    keras_class: ClassVar[str] = "SparseCategoricalCrossentropy"


class BinaryCrossentropy(Loss):
    kind: ClassVar[str] = "binary_crossentropy"
    labels: ClassVar[str] = "binary"
    activation: ClassVar[str] = "sigmoid"
    keras_class: ClassVar[str] = "BinaryCrossentropy"
    label_smoothing: Fraction01 = 0.0

    def torch(self) -> str:
        smoothing = (
            "\n    targets = targets * (1 - LABEL_SMOOTHING) + 0.5 * LABEL_SMOOTHING"
            if self.label_smoothing
            else ""
        )
        return (
            "targets = targets.float().view(-1, 1)"
            + smoothing
            + '\n    losses = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")'
            + "\n    losses = losses.view(-1)"
        )


LOSSES: dict[str, type[Bound]] = {
    c.kind: c for c in (CategoricalCrossentropy, SparseCategoricalCrossentropy, BinaryCrossentropy)
}
LOSS_FOR_LABELS: dict[str, type[Loss]] = {
    "onehot": CategoricalCrossentropy,
    "sparse": SparseCategoricalCrossentropy,
    "binary": BinaryCrossentropy,
}


@dataclass(frozen=True, slots=True)
class Metric:
    """A training metric, with both backends' code: Keras's metric object (or name), and the
    PyTorch script's function of an epoch's `probabilities` ((N, 1) sigmoid or (N, K) softmax),
    `predicted` classes and integer `targets`, which gives what Keras reports."""

    name: str
    keras: Call | str
    torch: str  # the body of `metric_<name>(probabilities, predicted, targets)`
    torch_imports: tuple[str, ...] = ()  # from sklearn.metrics


_MICRO = """if probabilities.shape[1] == 1:  # the positive class
    chosen, actual = predicted == 1, targets == 1
else:  # micro-averaged over one-hot columns, as Keras on one-hot labels
    chosen, actual = probabilities >= 0.5, np.eye(probabilities.shape[1])[targets] == 1
hits = float((chosen & actual).sum())
total = {total}.sum()
return hits / total if total else 0.0"""

METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", "accuracy", "return float((predicted == targets).mean())"),
        Metric(
            "auc",
            Call("keras.metrics.AUC", name="auc"),
            """try:
    if probabilities.shape[1] == 1:
        return float(roc_auc_score(targets, probabilities[:, 0]))
    onehot = np.eye(probabilities.shape[1])[targets]
    return float(roc_auc_score(onehot.ravel(), probabilities.ravel()))
except ValueError:  # a single class in this set: AUC is undefined
    return 0.5""",
            ("roc_auc_score",),
        ),
        Metric(
            "precision",
            Call("keras.metrics.Precision", name="precision"),
            _MICRO.format(total="chosen"),
        ),
        Metric(
            "recall",
            Call("keras.metrics.Recall", name="recall"),
            _MICRO.format(total="actual"),
        ),
    )
}
METRIC_NAMES = tuple(METRICS)


class Metrics(Bound):
    varargs: ClassVar[str | None] = "names"
    names: tuple[Literal["accuracy", "auc", "precision", "recall"], ...] = ("accuracy",)


class Callback(Bound):
    kind: ClassVar[str]
    monitor: Monitor = "val_loss"
    mode: Literal["auto", "min", "max"] = "auto"

    @property
    def resolved_mode(self) -> Literal["min", "max"]:
        if self.mode != "auto":
            return self.mode
        return "min" if self.monitor.removeprefix("val_") == "loss" else "max"

    @no_emitter
    def keras(self) -> Call:
        """The Keras callback (it saves to the script's `output_dir`)."""
        raise NotImplementedError(f"callback {self.kind!r} has no Keras emitter")

    @no_emitter
    def torch(self) -> Call:
        """The PyTorch script's own callback class with Keras's rules (see its CALLBACKS)."""
        raise NotImplementedError(f"callback {self.kind!r} has no PyTorch emitter")

    def _keras_mode(self) -> dict[str, object]:
        return {"mode": self.mode} if self.mode != "auto" else {}


class EarlyStopping(Callback):
    kind: ClassVar[str] = "early_stopping"
    patience: Annotated[int, Field(ge=0)] = 0
    min_delta: Annotated[float, Field(ge=0)] = 0.0
    restore_best: bool = False

    def _options(self) -> dict[str, object]:
        options: dict[str, object] = {"patience": self.patience}
        if self.min_delta:
            options["min_delta"] = self.min_delta
        return options

    def keras(self) -> Call:
        options = self._options()
        if self.restore_best:
            options["restore_best_weights"] = True
        return Call(
            "keras.callbacks.EarlyStopping",
            monitor=self.monitor,
            **options,
            **self._keras_mode(),
            verbose=1,
        )

    def torch(self) -> Call:
        options = self._options()
        if self.restore_best:
            options["restore_best"] = True
        return Call("EarlyStopping", self.monitor, self.resolved_mode, **options)


class ReduceLR(Callback):
    kind: ClassVar[str] = "reduce_lr"
    factor: float = Field(default=0.1, gt=0, lt=1)
    patience: Annotated[int, Field(ge=0)] = 10
    min_lr: Annotated[float, Field(ge=0)] = 0.0
    min_delta: Annotated[float, Field(ge=0)] = 1e-4

    def _options(self) -> dict[str, object]:
        options: dict[str, object] = {"factor": self.factor, "patience": self.patience}
        if self.min_lr:
            options["min_lr"] = self.min_lr
        if self.min_delta != 1e-4:
            options["min_delta"] = self.min_delta
        return options

    def keras(self) -> Call:
        return Call(
            "keras.callbacks.ReduceLROnPlateau",
            monitor=self.monitor,
            **self._options(),
            **self._keras_mode(),
            verbose=1,
        )

    def torch(self) -> Call:
        return Call(
            "ReduceLROnPlateau",
            Code("optimizer"),
            self.monitor,
            self.resolved_mode,
            **self._options(),
        )


class Checkpoint(Callback):
    kind: ClassVar[str] = "checkpoint"
    save_best: bool = True

    def keras(self) -> Call:
        return Call(
            "keras.callbacks.ModelCheckpoint",
            Code('output_dir / "checkpoint.keras"'),
            monitor=self.monitor,
            save_best_only=self.save_best,
            **self._keras_mode(),
            verbose=1,
        )

    def torch(self) -> Call:
        return Call(
            "Checkpoint",
            Code('output_dir / "checkpoint.pt"'),
            self.monitor,
            self.resolved_mode,
            **({} if self.save_best else {"save_best": False}),
        )


CALLBACKS: dict[str, type[Bound]] = {c.kind: c for c in (EarlyStopping, ReduceLR, Checkpoint)}


class FreezeRule(Bound):
    """`freeze X` or `unfreeze X`: X is a block, a dotted block path, a layer, or a glob."""

    action: Literal["freeze", "unfreeze"]
    target: str


class Phase(Bound):
    name: str = "train"
    epochs: Annotated[int, Field(gt=0)] | None = None
    optimizer: Optimizer | None = None
    schedule: Schedule | None = None
    callbacks: tuple[Callback, ...] = ()
    freezing: tuple[FreezeRule, ...] = ()

    def callback(self, kind: str) -> Callback | None:
        return next((c for c in self.callbacks if c.kind == kind), None)


class TrainSection(Bound):
    seed: Annotated[int, Field(ge=0)] = 0
    # The default of the scripts' --deterministic: bitwise-reproducible training.
    deterministic: bool = False
    batch: Annotated[int, Field(gt=0)] = 32
    epochs: Annotated[int, Field(gt=0)] = 10
    optimizer: Optimizer = Adam()
    schedule: Schedule = Constant()
    loss: Loss | None = None
    metrics: Metrics = Metrics()
    callbacks: tuple[Callback, ...] = ()
    class_weight: Literal["balanced"] | tuple[Positive, ...] | None = None
    freezing: tuple[FreezeRule, ...] = ()
    phases: tuple[Phase, ...] = ()

    def effective_phases(self) -> list[Phase]:
        """Phases with the train-level settings filled in; one implicit phase when none is given.
        A phase that declares callbacks replaces the train-level callbacks; one that declares
        none inherits them."""
        inherited = {"epochs", "optimizer", "schedule", "callbacks", "freezing"}
        if not self.phases:
            phase = Phase(
                epochs=self.epochs,
                optimizer=self.optimizer,
                schedule=self.schedule,
                callbacks=self.callbacks,
                freezing=self.freezing,
            )
            located = phase.located(self.span, self._arg_spans)
            return [located.broken_at(self._broken & inherited)]
        result = []
        for index, declared in enumerate(self.phases):
            merged = declared.model_copy(
                update={
                    "epochs": declared.epochs or self.epochs,
                    "optimizer": declared.optimizer or self.optimizer,
                    "schedule": declared.schedule or self.schedule,
                    "callbacks": declared.callbacks or self.callbacks,
                    # Train-level freeze statements set the state the first phase starts from.
                    "freezing": (self.freezing if index == 0 else ()) + declared.freezing,
                }
            )
            # A value the phase takes from train is broken if train's is.
            taken = {f for f in inherited if f != "freezing" and not getattr(declared, f)}
            if index == 0:
                taken.add("freezing")
            broken = declared._broken | (self._broken & taken)
            result.append(merged.located(declared.span, declared._arg_spans).broken_at(broken))
        return result


# --------------------------------------------------------------------------------------------
# evaluate


class EvaluateOutput(Bound):
    kind: ClassVar[str]


class Report(EvaluateOutput):
    kind: ClassVar[str] = "report"
    positional: ClassVar[tuple[str, ...]] = ("type",)
    type: Literal["classification"] = "classification"


class ConfusionMatrix(EvaluateOutput):
    kind: ClassVar[str] = "confusion_matrix"
    normalize: bool = False


class Curves(EvaluateOutput):
    kind: ClassVar[str] = "curves"


class Roc(EvaluateOutput):
    kind: ClassVar[str] = "roc"


EVALUATE_OUTPUTS: dict[str, type[Bound]] = {
    c.kind: c for c in (Report, ConfusionMatrix, Curves, Roc)
}


class EvaluateSection(Bound):
    outputs: tuple[EvaluateOutput, ...] = ()
    threshold: float | None = Field(default=None, gt=0, lt=1)

    def wants(self, kind: str) -> bool:
        return any(o.kind == kind for o in self.outputs)


# --------------------------------------------------------------------------------------------
# track

# The stores MLflow's client opens, by URI scheme; a URI without one is a local folder.
MLFLOW_SCHEMES = (
    "file", "sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks",
)  # fmt: skip


class TensorBoardTracker(Bound):
    """`tensorboard()`: event files under <output-dir>/tensorboard."""

    kind: ClassVar[str] = "tensorboard"


class MLflowTracker(Bound):
    """`mlflow("sqlite:///runs/mlflow.db")`: an MLflow run in that store, in the experiment
    named after the spec's model unless `experiment` names another."""

    kind: ClassVar[str] = "mlflow"
    positional: ClassVar[tuple[str, ...]] = ("uri",)
    uri: str
    experiment: str | None = None

    @field_validator("uri")
    @classmethod
    def _store(cls, value: str) -> str:
        scheme, separator, rest = value.partition("://")
        if not value.strip():
            raise ValueError("must name a store: a folder, sqlite:///file.db or a server's URL")
        if separator and scheme not in MLFLOW_SCHEMES:
            raise ValueError(
                f"has scheme '{scheme}', which MLflow cannot open; it opens "
                + ", ".join(f"{s}://" for s in MLFLOW_SCHEMES)
            )
        if scheme == "sqlite" and separator and not rest.lstrip("/"):
            raise ValueError("needs the database file: sqlite:///runs/mlflow.db")
        return value

    @field_validator("experiment")
    @classmethod
    def _named(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value


class TrackSection(Bound):
    """Where a run is reported besides metrics.json: exactly what the section lists. The
    scripts' --tensorboard, --no-tensorboard, --mlflow URI and --no-mlflow override it."""

    tensorboard: TensorBoardTracker | None = None
    mlflow: MLflowTracker | None = None

    @classmethod
    def unwritten(cls) -> "TrackSection":
        """A spec without the section: TensorBoard, as most training scripts log."""
        return cls(tensorboard=TensorBoardTracker())


TRACKERS: dict[str, type[Bound]] = {c.kind: c for c in (TensorBoardTracker, MLflowTracker)}


# --------------------------------------------------------------------------------------------
# sweep: the search itself, bound here; its `space { PATH DISTRIBUTION ... }` is read by
# cnnspec.search_space, which checks each path against the spec.


# The sweep's sub-section that holds its search space.
SPACE = "space"


class SweepSection(Bound):
    """What `cnnspec sweep` searches for and within which limits."""

    objective: Monitor = "val_loss"
    mode: Literal["auto", "min", "max"] = "auto"
    trials: Annotated[int, Field(gt=0)] = 20
    # Epochs per trial: each phase trains at most this many (the scripts' --epochs).
    epochs: Annotated[int, Field(gt=0)] | None = None
    pruner: Literal["median", "halving", "none"] = "median"
    sampler: Literal["tpe", "random"] = "tpe"
    # Constraints a configuration must meet to be trained: parameters, multiply-accumulates
    # per image and bytes of activations per image, as the checker counts them.
    # (Numbers such as 2e6 are welcome: a budget need not be written to the unit.)
    max_params: Positive | None = None
    max_macs: Positive | None = None
    max_memory: Positive | None = None

    @property
    def resolved_mode(self) -> Literal["min", "max"]:
        if self.mode != "auto":
            return self.mode
        return "min" if self.objective.removeprefix("val_") == "loss" else "max"


# --------------------------------------------------------------------------------------------
# The generic section binder


@dataclass(frozen=True)
class SectionSchema:
    """How the items of one section map onto its model's fields."""

    model: type[Bound]
    # Settings whose value names or calls one of a set of kinds: `optimizer adam(lr=1e-3)`.
    choices: dict[str, dict[str, type[Bound]]] = field(default_factory=dict)
    # Calls allowed as items, and the tuple field each is collected into (at most once each).
    calls: dict[str, tuple[str, type[Bound]]] = field(default_factory=dict)
    # Settings that may repeat and keep their order: `freeze`, `unfreeze` -> `freezing`.
    repeated: dict[str, str] = field(default_factory=dict)
    # Labelled sub-sections: `phase warmup { ... }` -> field `phases`.
    sections: dict[str, tuple[str, "SectionSchema"]] = field(default_factory=dict)

    def settings(self) -> list[str]:
        collected = {f for f, _ in self.calls.values()} | set(self.repeated.values())
        collected |= {f for f, _ in self.sections.values()}
        own = [f for f in self.model.model_fields if f not in collected and f != "name"]
        return own + list(self.repeated)

    def vocabulary(self) -> list[str]:
        return [*self.settings(), *self.calls, *self.sections]


def _bind_choice(
    value: ast.Value, kinds: dict[str, type[Bound]], what: str, diagnostics: Diagnostics
) -> Bound | None:
    if isinstance(value, ast.Name):
        name, call = value.text, None
    elif isinstance(value, ast.Call):
        name, call = value.name.text, value
    else:
        diagnostics.error(
            codes.WRONG_KIND,
            f"{what} must be one of {', '.join(kinds)}, not {describe(to_python(value))}",
            value.span,
        )
        return None
    model = kinds.get(name)
    if model is None:
        hint = did_you_mean(name, kinds) or f"one of: {', '.join(kinds)}"
        span = value.span if call is None else call.name.span
        diagnostics.error(codes.INVALID_VALUE, f"unknown {what} '{name}'", span, hint)
        return None
    if call is None:
        try:
            return model.model_validate({}).located(value.span, {})
        except Invalid as invalid:
            missing = [p.field for p in invalid.problems if p.field]
            diagnostics.error(
                codes.MISSING_ARGUMENT,
                f"{what} {name} needs argument '{missing[0] if missing else '?'}'",
                value.span,
                f"write {name}(...) with its arguments",
            )
            return None
    return bind_call(call, model, name, diagnostics)


def bind_section(
    items: tuple[ast.Item, ...],
    schema: SectionSchema,
    what: str,
    span: Span,
    diagnostics: Diagnostics,
    extra: dict[str, tuple[Any, Span]] | None = None,
) -> Bound | None:
    """Validate a section's items against its schema; report every problem at its own span.
    `extra` supplies values that are not items, such as a phase's name from its label.

    What is valid is bound even when other items are not: a field whose item is wrong keeps
    its default and is recorded as broken (`Bound.broken`), so that the cross-section checks
    still judge everything else and skip only what depends on the broken value."""
    values: dict[str, Any] = {k: v for k, (v, _) in (extra or {}).items()}
    spans: dict[str, Span] = {k: span for k, (_, span) in (extra or {}).items()}
    broken: set[str] = set()
    settings = set(schema.settings())
    for item in items:
        if isinstance(item, ast.Setting):
            key = item.key.text
            if key in schema.repeated:
                target = item.value
                field_name = schema.repeated[key]
                if not isinstance(target, ast.Name | ast.String):
                    diagnostics.error(
                        codes.WRONG_KIND, f"{key} takes a block, layer name or pattern", target.span
                    )
                    broken.add(field_name)
                    continue
                # The word as written: `freeze none` names a layer called none, not None.
                word = target.text if isinstance(target, ast.Name) else target.value
                rule = FreezeRule(action=key, target=word)
                values[field_name] = (*values.get(field_name, ()), rule.located(item.span, {}))
                continue
            if key not in settings:
                _unknown(key, item.key.span, schema, what, diagnostics, called=False)
                continue
            if key in spans:
                diagnostics.error(
                    codes.SETTING_TWICE,
                    f"'{key}' is set twice in {what}",
                    item.key.span,
                    f"first set at line {spans[key].line}",
                )
                continue
            spans[key] = item.value.span
            if key in schema.choices:
                bound = _bind_choice(item.value, schema.choices[key], key, diagnostics)
                if bound is None:
                    broken.add(key)
                    continue
                values[key] = bound
            elif isinstance(item.value, ast.Call):
                broken.add(key)
                diagnostics.error(
                    codes.WRONG_KIND, f"'{key}' takes a value, not a call", item.value.span
                )
            else:
                try:
                    values[key] = to_python(resolve(item.value))
                except ExpressionError as error:
                    broken.add(key)
                    diagnostics.error(error.code, error.message, error.span, error.hint)
        elif isinstance(item, ast.Call):
            name = item.name.text
            if name not in schema.calls:
                _unknown(name, item.name.span, schema, what, diagnostics, called=True)
                continue
            field_name, model = schema.calls[name]
            if name in spans:
                diagnostics.error(
                    codes.SETTING_TWICE,
                    f"{name}(...) appears twice in {what}",
                    item.name.span,
                    f"first at line {spans[name].line}",
                )
                continue
            spans[name] = item.span
            bound = bind_call(item, model, name, diagnostics)
            if bound is None:
                broken.add(field_name)
                continue
            if field_name == name or _is_single(schema.model, field_name):
                values[field_name] = bound
                spans[field_name] = item.span
            else:
                values[field_name] = (*values.get(field_name, ()), bound)
        else:
            key = item.key.text
            if key not in schema.sections:
                _unknown(key, item.key.span, schema, what, diagnostics, called=False)
                continue
            field_name, sub_schema = schema.sections[key]
            if not isinstance(item.label, ast.Name):
                diagnostics.error(
                    codes.WRONG_KIND, f"{key} needs a name: `{key} NAME {{ ... }}`", item.key.span
                )
                broken.add(field_name)
                continue
            existing = [p for p in values.get(field_name, ()) if getattr(p, "name", None)]
            if any(p.name == item.label.text for p in existing):
                diagnostics.error(
                    codes.DUPLICATE_NAME,
                    f"{key} '{item.label.text}' declared twice",
                    item.label.span,
                )
                continue
            bound = bind_section(
                item.items,
                sub_schema,
                f"{key} '{item.label.text}'",
                item.span,
                diagnostics,
                {"name": (item.label.text, item.label.span)},
            )
            if bound is None:
                broken.add(field_name)
                continue
            values[field_name] = (*values.get(field_name, ()), bound)
    # Values that are each well-formed can still be out of range: report them, leave them out.
    while True:
        try:
            model = schema.model.model_validate(values)
            break
        except Invalid as invalid:
            for problem in invalid.problems:
                key = problem.field or ""
                message, hint = problem_text(problem)
                diagnostics.error(
                    codes.INVALID_VALUE,
                    phrase(None, f"'{key}' in {what}", message, values.get(key)),
                    spans.get(key, span),
                    hint,
                )
            fields = {p.field for p in invalid.problems}
            if None in fields or not fields & set(values):
                return None  # a problem of the whole section, or one no value can undo
            broken |= {f for f in fields if f is not None}
            values = {k: v for k, v in values.items() if k not in fields}
    return model.located(span, spans).broken_at(broken)


def _is_single(model: type[Bound], field_name: str) -> bool:
    annotation = model.model_fields[field_name].annotation
    return getattr(annotation, "__origin__", None) is not tuple


def _unknown(
    key: str, span: Span, schema: SectionSchema, what: str, diagnostics: Diagnostics, called: bool
) -> None:
    hint: str | None
    if key in ("learning_rate", "lr") and "optimizer" in schema.settings():
        hint = "the learning rate is the optimizer's: `optimizer adam(lr=1e-3)`"
    elif key in schema.calls and not called:
        hint = f"'{key}' is written as a call: {key}(...)"
    elif key in schema.settings() and called:
        hint = f"'{key}' is a setting: write `{key} VALUE`"
    else:
        hint = did_you_mean(key, schema.vocabulary())
    if hint is None:
        hint = f"{what} accepts: {', '.join(schema.vocabulary())}"
    diagnostics.error(
        codes.UNKNOWN_SETTING,
        f"unknown {'call' if called else 'setting'} '{key}' in {what}",
        span,
        hint,
    )


PHASE_SCHEMA = SectionSchema(
    model=Phase,
    choices={"optimizer": OPTIMIZERS, "schedule": SCHEDULES},
    calls={name: ("callbacks", model) for name, model in CALLBACKS.items()},
    repeated={"freeze": "freezing", "unfreeze": "freezing"},
)

SCHEMAS: dict[str, SectionSchema] = {
    "data": SectionSchema(
        model=DataSection,
        choices={"source": SOURCES},
        calls={"normalize": ("normalize", Normalize)},
    ),
    "augment": SectionSchema(
        model=AugmentSection,
        calls={name: ("steps", model) for name, model in AUGMENTATIONS.items()},
    ),
    "train": SectionSchema(
        model=TrainSection,
        choices={"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "loss": LOSSES},
        calls={
            "metrics": ("metrics", Metrics),
            **{name: ("callbacks", model) for name, model in CALLBACKS.items()},
        },
        repeated={"freeze": "freezing", "unfreeze": "freezing"},
        sections={"phase": ("phases", PHASE_SCHEMA)},
    ),
    "evaluate": SectionSchema(
        model=EvaluateSection,
        calls={name: ("outputs", model) for name, model in EVALUATE_OUTPUTS.items()},
    ),
    "track": SectionSchema(
        model=TrackSection,
        calls={name: (name, model) for name, model in TRACKERS.items()},
    ),
    "sweep": SectionSchema(model=SweepSection),
}
