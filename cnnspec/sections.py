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
from cnnspec.augment import AUGMENTATIONS, Augmentation
from cnnspec.augment.classic import Fill
from cnnspec.augment.mixing import keras_mixing, torch_mixing
from cnnspec.binding import Bound, bind_call, describe, phrase, problem_text, to_python
from cnnspec.codegen import Call, Code, literal, sequence
from cnnspec.diagnostics import Diagnostics, did_you_mean
from cnnspec.expressions import ExpressionError, resolve
from cnnspec.losses import LOSSES, Loss
from cnnspec.metrics import Metrics
from cnnspec.optimizers import OPTIMIZERS, Adam, Optimizer
from cnnspec.registry import no_emitter
from cnnspec.schedules import SCHEDULES, Constant, Schedule
from cnnspec.schema import (
    Before,
    Field,
    Invalid,
    Positive,
    Problem,
    field_validator,
    model_validator,
)
from cnnspec.source import Span


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
        calls = [steps.emit(step, options) for step in self.steps if not step.batch_level]
        return [call for call in calls if call is not None]

    def torch_calls(self) -> list[Call]:
        """The PyTorch script's augmentation, one call per step in the spec's order."""
        from cnnspec.emitters import tables

        steps = tables("pytorch")["augmentations"]
        calls = [steps.emit(step) for step in self.steps if not step.batch_level]
        return [call for call in calls if call is not None]

    def torch_helpers(self) -> list[str]:
        """The augmentation functions the PyTorch script needs, each once, dependencies first."""
        return list(dict.fromkeys(h for step in self.steps for h in step.torch_helpers()))

    def keras_mixing(self) -> Call | None:
        """The Keras pipeline's BatchMixing of training batches (None: nothing mixes)."""
        return keras_mixing(self.steps)

    def torch_mixing(self) -> Call | None:
        """The PyTorch training loop's mix_batch call (None: nothing mixes)."""
        return torch_mixing(self.steps)

    def keras_helpers(self) -> list[str]:
        """The runtime definitions the Keras script's augmentation needs, each once."""
        return list(dict.fromkeys(h for step in self.steps for h in step.keras_helpers()))

    def torch_fill(self) -> dict[str, object]:
        """FILL and FILL_VALUE of the geometric steps' warp, when there are any."""
        if not any(step.geometric for step in self.steps):
            return {}
        fill = self.fill()
        return {"FILL": fill.mode, "FILL_VALUE": fill.value if fill.mode == "constant" else 0.0}


# --------------------------------------------------------------------------------------------
# train


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
