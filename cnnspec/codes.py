"""Every diagnostic code cnnspec can report, each declared once as a typed constant (mypy's
errorcodes pattern): `diagnostics.error(codes.WRONG_KIND, ...)`, never a bare "E104".

A code is a `str` ("E104"), so the JSON output, the language server and the tests read it as
the text it always was; what it adds is its summary and its meaning. The README's table of codes
is `cnnspec codes --markdown` (a test holds the two equal), and the diagnostics fixtures must
exercise every code declared here.
"""

from __future__ import annotations

from typing import Final


class ErrorCode(str):
    """A diagnostic code: `E` for errors, `W` for warnings, then three digits (the hundreds are
    the family: 0 syntax, 1 names and values, 2 shapes, 3 data and training, 4 backends, 5
    sweeps)."""

    summary: str
    meaning: str

    def __new__(cls, code: str, summary: str, meaning: str = "") -> ErrorCode:
        assert len(code) == 4 and code[0] in "EW" and code[1:].isdigit(), code
        made = super().__new__(cls, code)
        made.summary = summary
        # What the README's table says: the summary, with what it covers where that helps.
        made.meaning = meaning or summary
        return made

    @property
    def is_error(self) -> bool:
        return self.startswith("E")

    def __reduce__(self) -> tuple[object, tuple[str]]:
        # Pickled (a diagnostic sent to another process) as its code, read back as the one
        # declared constant: str's own pickling would call __new__ without the summary.
        return (declared, (str(self),))


def declared(code: str) -> ErrorCode:
    """The constant declared for `code` ("E104")."""
    return CODES[code]


CODES: dict[str, ErrorCode] = {}


def _code(code: str, summary: str, meaning: str = "") -> ErrorCode:
    assert code not in CODES, f"{code} declared twice"
    CODES[code] = declared = ErrorCode(code, summary, meaning)
    return declared


# syntax
UNEXPECTED_CHARACTER: Final = _code("E001", "unexpected character")
UNEXPECTED_TOKEN: Final = _code("E002", "unexpected token")
UNEXPECTED_EOF: Final = _code(
    "E003", "unexpected end of file", "unexpected end of file (names the bracket left open)"
)

# names and values
UNKNOWN_SETTING: Final = _code("E101", "unknown section or setting")
SETTING_TWICE: Final = _code("E102", "setting given twice")
MISSING_SETTING: Final = _code(
    "E103", "required setting missing", "required setting missing (no model, no input)"
)
WRONG_KIND: Final = _code("E104", "wrong kind of value")
UNKNOWN_LAYER: Final = _code("E110", "unknown layer")
UNKNOWN_ARGUMENT: Final = _code("E111", "unknown argument")
MISSING_ARGUMENT: Final = _code("E112", "missing argument")
INVALID_VALUE: Final = _code(
    "E113", "invalid argument value", "invalid argument value (type or range)"
)
TOO_MANY_POSITIONAL: Final = _code("E114", "too many positional arguments")
ARGUMENT_TWICE: Final = _code("E115", "argument given twice")
DUPLICATE_NAME: Final = _code("E116", "duplicate name", "duplicate block or layer name")
NOT_USABLE_HERE: Final = _code("E117", "not usable here")
UNKNOWN_VALUE: Final = _code(
    "E118",
    "from names no earlier value",
    "`from` names no value computed before it (with a did-you-mean; a value computed later "
    "would make a cycle)",
)
UNUSED_VALUE: Final = _code(
    "E119",
    "output never read",
    "a layer's output that nothing reads: a `from` moved the chain on without it",
)

# shapes
SHRINKS_BELOW_ONE: Final = _code("E201", "spatial size shrinks below 1")
NEEDS_SPATIAL: Final = _code("E202", "layer needs a spatial (H, W, C) input")
CANNOT_JOIN: Final = _code(
    "E203",
    "branches cannot be joined",
    "branches cannot be joined (a residual, `add`, `concat` or `multiply` whose inputs do not fit)",
)
OUTPUT_NOT_VECTOR: Final = _code("E204", "model output is not a vector")
SETTINGS_CONFLICT: Final = _code(
    "E205",
    "layer settings conflict",
    "layer settings conflict (stride and dilation both above 1)",
)
NEEDS_TOKENS: Final = _code("E206", "layer needs tokens (N, D)")
NO_TOKENS: Final = _code(
    "E207",
    "layer does not take tokens",
    "layer does not take tokens (N, D): a map's or a vector's kind after patch_embed",
)

# data, training and evaluation
UNKNOWN_METRIC: Final = _code("E301", "monitored metric does not exist")
LOSS_MISFIT: Final = _code("E302", "loss does not fit the output or the labels")
CLASS_COUNT: Final = _code("E303", "class count does not match the output")
THRESHOLD_OUTPUT: Final = _code("E304", "threshold needs a single sigmoid output")
INPUT_MISMATCH: Final = _code("E305", "input shape does not match the data")
NO_VALIDATION: Final = _code("E306", "validation metric without validation data")
NO_SUCH_SPLIT: Final = _code(
    "E307",
    "validation split the data source does not have",
    "validation split the data source does not have (`validation val` with the digits)",
)
PREPROCESS_NO_BACKBONE: Final = _code(
    "E308",
    "preprocess imagenet without a backbone",
    "`preprocess imagenet` without a backbone to take the convention from",
)
SPLIT_FOLDERS: Final = _code(
    "E309",
    "class folders differ between splits",
    "class folders differ between splits (an image folder's `val/` or `test/` against "
    "`train/`, or any split against the spec's `classes`; checked when the folder is there)",
)
# W310 until issue 23: the same number, now an error.
FREEZE_MATCHES_NOTHING: Final = _code(
    "E310",
    "freeze pattern matches no layer",
    "freeze pattern matches no layer (with a did-you-mean; a typo such as `freeze stemm` would "
    "train the wrong layers for hours)",
)
SCHEDULE_CONFLICT: Final = _code(
    "E311",
    "learning-rate schedule and reduce_lr in one phase",
    "learning-rate schedule and `reduce_lr` in one phase (the schedule sets the rate at every "
    "step, so the plateau's cuts would be undone)",
)
WARMUP_TOO_LONG: Final = _code(
    "E312",
    "schedule's warmup is not shorter than its phase",
)
REFLECT_PADDING: Final = _code(
    "E316",
    "random_crop's reflect padding is not smaller than the image",
    "`random_crop`'s reflect padding is not smaller than the image (a mirror image needs "
    "pixels beyond the edge to reflect)",
)
FILL_OUTSIDE_PIXELS: Final = _code(
    "E317",
    "augmentation fill value outside the pixel range",
    "augmentation fill value outside the pixel range (`value` of `random_crop` or "
    "`random_erasing` is in pixels as rescaled, before normalisation)",
)
NESTEROV_WITHOUT_MOMENTUM: Final = _code(
    "E313",
    "sgd(nesterov=true) without a momentum",
    "`sgd(nesterov=true)` without a momentum (PyTorch's SGD refuses it; Nesterov looks ahead "
    "along the momentum)",
)
TWO_CLIPS: Final = _code(
    "E314",
    "clip_norm and clip_value on one optimizer",
    "`clip_norm` and `clip_value` on one optimizer (Keras clips one way)",
)
COLOR_CHANNELS: Final = _code(
    "E320",
    "colour augmentation on images that are neither grayscale nor RGB",
    "colour augmentation (`color_jitter`, `rand_augment`, `trivial_augment`) on images that "
    "are neither grayscale nor RGB (1 or 3 channels, as torchvision's colour ops)",
)
GRAY_COLOR_JITTER: Final = _code(
    "E321",
    "color_jitter's saturation or hue on grayscale images",
    "`color_jitter`'s saturation or hue on grayscale images (they have neither: the amount "
    "changes nothing)",
)
JITTER_NOTHING: Final = _code(
    "E322",
    "color_jitter changes nothing",
    "`color_jitter` changes nothing (every amount is 0, its default)",
)
MIXES_LABELS: Final = _code(
    "E323",
    "mixup or cutmix on labels that cannot mix",
    "`mixup` or `cutmix` on labels that cannot mix (they make class probabilities: one-hot "
    "labels only)",
)
METRIC_OUTPUT: Final = _code(
    "E326",
    "metric does not fit the output",
    "metric does not fit the output (`top_k_accuracy` on a single sigmoid unit)",
)
TOP_K_CLASSES: Final = _code(
    "E327",
    "top_k_accuracy's k is not smaller than the class count",
    "`top_k_accuracy`'s k is not smaller than the class count (it would always be 1)",
)
METRIC_TWICE: Final = _code(
    "E328",
    "metric listed twice",
    "metric listed twice in `metrics(...)` (the scripts log one value per name)",
)

# backends
BACKEND_UNSUPPORTED: Final = _code(
    "E401",
    "a backend cannot express the layer",
    "a backend cannot express the layer (`build`, `export`, `verify`; at the layer's line)",
)

# sweeps
SWEEP_UNKNOWN_PATH: Final = _code("E501", "sweep path names no value of the spec")
SWEEP_NOT_HERE: Final = _code(
    "E502",
    "value cannot be swept where it is written",
    "value cannot be swept where it is written (one value written once for many layers)",
)
SWEEP_DISTRIBUTION: Final = _code("E503", "invalid search distribution")
SWEEP_EMPTY: Final = _code("E504", "sweep searches nothing")

# warnings
DENSE_ON_MAP: Final = _code("W201", "dense layer applied to a spatial tensor")
SOFTMAX_ONE_UNIT: Final = _code("W202", "softmax over a single unit")
ACTIVATION_TWICE: Final = _code(
    "W203",
    "activation applied twice",
    "activation applied twice (a softmax layer after `activation=softmax` too)",
)
MONITOR_MODE: Final = _code("W301", "monitor mode contradicts the metric")
PATIENCE_NEVER: Final = _code("W302", "callback patience can never trigger")
AUGMENT_CHANGES_MEANING: Final = _code(
    "W303",
    "augmentation changes the meaning of the data",
    "augmentation changes the meaning of the data (flipping digits)",
)
FOLDER_NOT_FOUND: Final = _code(
    "W304",
    "data folder not found",
    "data folder not found (relative to the working directory), or no `val/` for `validation val`",
)
RESCALE_RANGE: Final = _code(
    "W305",
    "rescale leaves the pixels in an unusual range",
    "`rescale` leaves the pixels in an unusual range (`1/255` on the digits, whose white is 16)",
)
TINY_ROTATION: Final = _code(
    "W306",
    "rotation of less than a degree",
    "`rotation` of less than a degree (Keras's `RandomRotation` takes a fraction of a turn)",
)
CALLBACKS_DROPPED: Final = _code(
    "W307",
    "phase drops the train-level callbacks",
    "a phase's own callbacks drop the train-level ones",
)
PREPROCESS_MISMATCH: Final = _code(
    "W308", "input preprocessing differs from what the pretrained weights expect"
)
UNFREEZES_NOTHING: Final = _code("W311", "phase unfreezes nothing")
TRAINS_NOTHING: Final = _code("W312", "phase trains nothing")
BATCH_OVER_SPLIT: Final = _code(
    "W320",
    "batch larger than the training split",
    "batch larger than the training split (the digits, CIFAR-10, or an image folder that is "
    "here, less the test and validation splits)",
)
BATCH_OVER_MEMORY: Final = _code(
    "W321",
    "a batch's activations exceed the memory",
    "a batch's activations exceed the machine's memory (`CNNSPEC_MEMORY_BYTES=N` checks "
    "against N bytes instead)",
)


def markdown_table() -> str:
    """The README's table of codes: errors, then warnings, each in number order."""
    rows = ["| code | meaning |", "|---|---|"]
    ordered = sorted(CODES.values(), key=lambda code: (not code.is_error, str(code)))
    rows += [f"| {code} | {code.meaning} |" for code in ordered]
    return "\n".join(rows) + "\n"
