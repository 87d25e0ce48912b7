"""What the backends' scripts share: emission helpers, the straight-line form of a model's DAG,
and the framework-neutral blocks of code (data loaders, plots, reports). Fixed blocks contain no
spec value; they refer to the constants each script defines at its top."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count
from textwrap import dedent, wrap

from cnnspec.codegen import INDENT, LINE_LENGTH, Code, literal, sequence
from cnnspec.ir import Graph, Node, Spec
from cnnspec.sections import Cifar10, Digits, Directory


def block(text: str) -> str:
    return dedent(text).strip("\n") + "\n"


def fill(template: str, **values: str) -> str:
    """A fixed block of code with `<NAME>` slots filled in after dedenting, so inserted lines
    carry the final indentation."""
    text = block(template)
    for key, value in values.items():
        assert f"<{key}>" in text, key
        text = text.replace(f"<{key}>", value)
    return text


def name_text(value: str) -> str:
    """A spec identifier for a comment or docstring; anything else is shown as a literal."""
    return value if value.isidentifier() else literal(value)


def import_lines(module: str, names: list[str]) -> list[str]:
    flat = f"from {module} import {', '.join(names)}"
    if len(flat) <= LINE_LENGTH:
        return [flat]
    return [f"from {module} import (", *(f"{INDENT}{n}," for n in names), ")"]


def shortcut_names() -> Iterator[str]:
    yield "shortcut"
    for index in count(2):
        yield f"shortcut{index}"


def number(value: float) -> Code:
    """`1 / 255` rather than 0.00392156862745098 when the value is exactly that fraction."""
    if 0 < value < 1:
        denominator = round(1 / value)
        if denominator > 1 and 1 / denominator == value:
            return Code(f"1 / {literal(denominator)}")
    return Code(literal(float(value)))


@dataclass(frozen=True, slots=True)
class Step:
    """One node of a model in straight-line code: read `reads`, write `target`, then copy the
    result to `saved` when a residual's shortcut or join needs it later."""

    node: Node
    reads: tuple[str, ...]
    target: str
    saved: str | None


def straight_line(graph: Graph, inputs: str) -> Iterator[Step]:
    """The DAG as assignments: the main chain lives in `x`; a value that a residual's shortcut or
    join still needs is copied to `shortcut` (`shortcut2` when nested) as soon as it is made,
    and shortcut layers write to a variable nobody still needs. `inputs` names the input."""
    side_roles = ("shortcut", "join")
    main_reads = Counter(v for n in graph.nodes if n.role not in side_roles for v in n.inputs)
    side_reads = Counter(v for n in graph.nodes if n.role in side_roles for v in n.inputs)
    main_reads[graph.output or graph.INPUT] += 1  # the return statement
    needs: Counter[str] = Counter()  # variable -> reads of it still to come
    variable = {graph.INPUT: inputs}  # value -> the variable its main chain reads
    copy = {graph.INPUT: inputs}  # value -> the variable its shortcut and join read

    def spare() -> str:
        return next(n for n in shortcut_names() if needs[n] <= 0)

    for node in graph.nodes:
        side = node.role in side_roles
        reads = tuple(copy.get(v, variable[v]) if side else variable[v] for v in node.inputs)
        needs.subtract(reads)
        if node.role == "shortcut":
            target = reads[0] if reads[0] != inputs and needs[reads[0]] <= 0 else spare()
        else:
            target = "x"
            assert needs["x"] <= 0, f"{node.name} would overwrite a value still needed"
        variable[node.name] = target
        needs[target] = main_reads[node.name]
        saved = None
        if side_reads[node.name]:
            saved = spare() if main_reads[node.name] else None
            needs[saved or target] += side_reads[node.name]
            copy[node.name] = saved or target
        yield Step(node, reads, target, saved)


def step_output(graph: Graph, inputs: str) -> str:
    """The variable holding the model's output after `straight_line`."""
    return "x" if graph.output and graph.output != graph.INPUT else inputs


class Script:
    """What every backend's script generator shares: the spec's facts, the file's docstring,
    names and artifacts, and the framework-neutral blocks. Subclasses render the rest."""

    FRAMEWORK: str
    SUFFIX: str
    MODEL_FILE: str

    def __init__(self, spec: Spec, source_name: str) -> None:
        self.spec = spec
        self.source_name = source_name
        self.graph: Graph = spec.model
        self.source = spec.data.source
        self.binary = spec.data.labels == "binary"
        self.classes = spec.data.class_names() or tuple(str(i) for i in range(self._output_units()))

    def _output_units(self) -> int:
        shape = self.graph.output_shape
        return shape[-1] if shape else 1

    def docstring(self) -> str:
        spec = self.spec
        artifacts = self.artifacts()
        listing = ", ".join(artifacts[:-1]) + " and " + artifacts[-1]
        params = spec.model.params
        writes = wrap(
            f"writes {listing} to --output-dir (default {self.default_output_dir()}).",
            LINE_LENGTH,
        )
        lines = [
            f'"""Train {name_text(spec.name)} with {self.FRAMEWORK}, as specified in {self.source_name_text()}.',
            "",
            f"{params.total:,} parameters ({params.trainable:,} trainable). A quick run:",
            "",
            f"    python {self.script_file()} --epochs 1 --subset 512",
            "",
            *writes,
            '"""',
        ]
        return "\n".join(lines) + "\n"

    def source_name_text(self) -> str:
        name = self.source_name
        safe = all(c.isalnum() or c in "._-/" for c in name)
        return name if safe else literal(name)

    def script_file(self) -> str:
        stem = self.source_name.rsplit("/", 1)[-1].removesuffix(".cnn")
        return f"{stem}{self.SUFFIX}" if stem.isidentifier() else f"<spec>{self.SUFFIX}"

    def default_output_dir(self) -> str:
        return f"runs/{self.run_name()}"

    def run_name(self) -> str:
        stem = self.source_name.rsplit("/", 1)[-1].removesuffix(".cnn")
        return stem if stem.isidentifier() else self.spec.name

    def artifacts(self) -> list[str]:
        evaluate = self.spec.evaluate
        names = ["metrics.json", "weights.safetensors", self.MODEL_FILE]
        if evaluate.wants("curves"):
            names.append("curves.png")
        if evaluate.wants("confusion_matrix"):
            names.append("confusion_matrix.png")
        if evaluate.wants("roc") and self.binary:
            names.append("roc.png")
        if evaluate.wants("report"):
            names.append("classification_report.txt")
        return names

    def plots(self) -> bool:
        return any(name.endswith(".png") for name in self.artifacts())

    def constants(self) -> str:
        spec, data = self.spec, self.spec.data
        graph = self.graph
        assert graph.input_shape is not None
        out: list[str] = []
        out.append(f"SPEC_NAME = {literal(spec.name)}")
        out.append(f"INPUT_SHAPE = {literal(graph.input_shape)}")
        out += sequence("CLASS_NAMES = ", list(self.classes), indent=0)
        out.append(f"SEED = {literal(spec.train.seed)}")
        out.append(f"BATCH_SIZE = {literal(spec.train.batch)}")
        out.append(f"RESCALE = {number(data.rescale).text}")
        low, high = 0.0, self._source_max() * data.rescale
        out.append(
            f"PIXEL_RANGE = {literal((low, high))}  # after rescaling, for brightness and contrast"
        )
        if data.normalize is not None:
            out.append(f"MEAN = {literal(data.normalize.mean)}")
            out.append(f"STD = {literal(data.normalize.std)}")
        if isinstance(self.source, Digits):
            out.append(f"TEST_FRACTION = {literal(self.source.test_fraction)}")
        if isinstance(data.validation, float):
            out.append(f"VALIDATION_FRACTION = {literal(data.validation)}  # held out of training")
        if isinstance(self.source, Directory):
            out.append(f"DATA_PATH = {literal(self.source.path)}")
            # grayscale_to_rgb: read one channel, then repeat it three times for the model.
            gray = self.source.color == "grayscale" or self.source.grayscale_to_rgb
            out.append(f"COLOR_MODE = {literal('grayscale' if gray else 'rgb')}")
        if self.binary:
            threshold = spec.evaluate.threshold or 0.5
            out.append(f"THRESHOLD = {literal(threshold)}  # decision threshold on P(class 1)")
        if isinstance(spec.train.class_weight, tuple):
            weights = dict(enumerate(spec.train.class_weight))
            out.append(f"CLASS_WEIGHT = {literal(weights)}")
        backbone = graph.backbone
        if backbone is not None:
            library = backbone.library
            out.append(
                f"BACKBONE = {literal(library.keras_class)}  "
                "# keras.applications' network, layer by layer in build_model"
            )
            out.append(f"BACKBONE_TOP = {literal(backbone.args.include_top)}  # with its classifier")
            out.append(
                f"BACKBONE_WEIGHTS = {literal(backbone.args.weights or 'none')}  "
                "# the default of --weights"
            )
        out += self.extra_constants()
        return "\n".join(out) + "\n"

    def extra_constants(self) -> list[str]:
        return []

    def evaluation_parts(self, template: str, **slots: str) -> list[str]:
        """`evaluate` from the backend's `template` with the shared slots filled in (the
        prediction rule, binary extras and the outputs the spec asks for), then the plot
        functions those outputs need."""
        evaluate = self.spec.evaluate
        if self.binary:
            predict = "(probabilities[:, 0] >= THRESHOLD).astype(int)"
            extra = (
                '\n    test["auc"] = float(roc_auc_score(y_true, probabilities[:, 0]))'
                '\n    test["threshold"] = THRESHOLD'
            )
        else:
            predict = "np.argmax(probabilities, axis=1)"
            extra = ""
        outputs = []
        if evaluate.wants("report"):
            outputs.append(WRITE_REPORT)
        if evaluate.wants("confusion_matrix"):
            normalize = any(getattr(o, "normalize", False) for o in evaluate.outputs)
            outputs.append(
                WRITE_CONFUSION.replace("<NORMALIZE>", '"true"' if normalize else "None")
            )
        if evaluate.wants("roc") and self.binary:
            outputs.append('plot_roc(y_true, probabilities[:, 0], output_dir / "roc.png")')
        parts = [
            fill(
                template,
                PREDICT=predict,
                EXTRA=extra,
                OUTPUTS="".join(f"\n    {o}" for o in outputs),
                **slots,
            )
        ]
        if evaluate.wants("curves"):
            parts.append(block(PLOT_CURVES))
        if evaluate.wants("confusion_matrix"):
            parts.append(block(PLOT_CONFUSION))
        if evaluate.wants("roc") and self.binary:
            parts.append(block(PLOT_ROC))
        return parts

    def parse_args(self, extra_flags: str) -> str:
        """The command line every script shares (the spec's data, output, epochs, batch size,
        subset, seed, image size, a backbone's weights) plus the backend's own flags."""
        data_dir, data_help = self.data_dir_option()
        return fill(
            PARSE_ARGS,
            DESCRIPTION=literal(f"Train {self.spec.name} with {self.FRAMEWORK}."),
            DATA_DIR=data_dir,
            DATA_HELP=literal(data_help),
            OUTPUT_DIR=literal(self.default_output_dir()),
            WEIGHTS=WEIGHTS_FLAG if self.graph.backbone else "",
            EXTRA_FLAGS=dedent(extra_flags).strip().replace("\n", "\n    "),
        )

    def data_dir_option(self) -> tuple[str, str]:
        """The --data-dir default (an expression) and its help text, for the spec's source."""
        if isinstance(self.source, Cifar10):
            return "KERAS_DATASETS", "folder holding cifar-10-batches-py (default: Keras's cache)"
        if isinstance(self.source, Directory):
            return "DATA_PATH", "folder with train/, val/ and test/ class folders"
        return "None", "unused: the digits come with scikit-learn"

    def _source_max(self) -> float:
        return 16.0 if isinstance(self.source, Digits) else 255.0

    def class_weights(self) -> str:
        if self.spec.train.class_weight == "balanced":
            return block(
                '''
                def class_weights(labels):
                    """Balanced class weights, total / (classes * count), from the training
                    labels: rare classes weigh more in the loss."""
                    counts = np.bincount(np.asarray(labels).ravel(), minlength=len(CLASS_NAMES))
                    return {
                        index: len(labels) / (len(CLASS_NAMES) * count)
                        for index, count in enumerate(counts)
                        if count
                    }
                '''
            )
        return block(
            '''
            def class_weights(labels):
                """The spec's class weights."""
                return CLASS_WEIGHT
            '''
        )


CIFAR10_LOADER = '''
    CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    KERAS_DATASETS = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"


    def find_cifar10(data_dir):
        """The cifar-10-batches-py folder in `data_dir`, as Keras's cache keeps it."""
        data_dir = Path(data_dir)
        for folder in (
            data_dir / "cifar-10-batches-py",
            data_dir / "cifar-10-batches-py-target" / "cifar-10-batches-py",
            data_dir,
        ):
            if (folder / "data_batch_1").is_file():
                return folder
        raise DataError(
            f"no CIFAR-10 data at {data_dir / 'cifar-10-batches-py'}: download "
            f"{CIFAR10_URL} and extract it into {data_dir}, or pass --data-dir"
        )


    def load_data(data_dir):
        """CIFAR-10 as uint8 (N, 32, 32, 3) images and int labels, by split."""
        folder = find_cifar10(data_dir)

        def read(name):
            with open(folder / name, "rb") as stream:
                batch = pickle.load(stream, encoding="bytes")
            images = np.asarray(batch[b"data"], dtype="uint8").reshape(-1, 3, 32, 32)
            return images.transpose(0, 2, 3, 1), np.asarray(batch[b"labels"], dtype="int64")

        parts = [read(f"data_batch_{index}") for index in range(1, 6)]
        train = (
            np.concatenate([images for images, _ in parts]),
            np.concatenate([labels for _, labels in parts]),
        )
        return {"train": train, "test": read("test_batch")}
'''


DIGITS_LOADER = '''
    def load_data(data_dir=None):
        """scikit-learn's bundled 8x8 digits (values 0-16) with a stratified held-out test
        split: {split: (images, labels)}. Nothing is downloaded; `data_dir` is unused."""
        digits = load_digits()
        images = digits.images[..., np.newaxis].astype("float32")
        x_train, x_test, y_train, y_test = train_test_split(
            images,
            digits.target,
            test_size=TEST_FRACTION,
            stratify=digits.target,
            random_state=SEED,
        )
        return {"train": (x_train, y_train), "test": (x_test, y_test)}
'''


NO_SOURCE_LOADER = '''
    def load_data(data_dir):
        """The spec names no data source: supply {split: (images, labels)} arrays here."""
        raise DataError("the spec has no data source; add `source ...` to its data section")
'''


SPLIT_VALIDATION = '''
    def split_validation(splits, fraction, seed):
        """Hold a stratified `fraction` of the training examples out for validation."""
        images, labels = splits["train"]
        x_train, x_val, y_train, y_val = train_test_split(
            images, labels, test_size=fraction, stratify=labels, random_state=seed
        )
        return {**splits, "train": (x_train, y_train), "val": (x_val, y_val)}
'''


WRITE_REPORT = """(output_dir / "classification_report.txt").write_text(
        classification_report(
            y_true, y_pred, labels=labels, target_names=CLASS_NAMES, zero_division=0
        )
    )"""


WRITE_CONFUSION = """plot_confusion_matrix(
        confusion_matrix(y_true, y_pred, labels=labels, normalize=<NORMALIZE>),
        output_dir / "confusion_matrix.png",
    )"""


PLOT_CURVES = '''
    def plot_curves(history, path):
        """Loss and accuracy per epoch, training against validation."""
        figure = Figure(figsize=(12, 4.5))
        for axis, metric in zip(figure.subplots(1, 2), ("loss", "accuracy"), strict=True):
            epochs = [row["epoch"] for row in history]
            for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
                if all(key in row for row in history):
                    axis.plot(epochs, [row[key] for row in history], label=label)
            axis.set_title(metric)
            axis.set_xlabel("epoch")
            axis.legend()
        figure.tight_layout()
        figure.savefig(path, dpi=120)
'''


PLOT_CONFUSION = '''
    def plot_confusion_matrix(matrix, path):
        """Rows are true classes, columns predicted ones."""
        size = max(4.0, 0.6 * len(CLASS_NAMES) + 2)
        figure = Figure(figsize=(size, size))
        axis = figure.subplots()
        axis.imshow(matrix, cmap="Blues")
        ticks = range(len(CLASS_NAMES))
        axis.set_xticks(ticks, CLASS_NAMES, rotation=45, ha="right")
        axis.set_yticks(ticks, CLASS_NAMES)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        for row in ticks:
            for column in ticks:
                value = matrix[row, column]
                text = f"{value:.2f}" if matrix.dtype.kind == "f" else str(value)
                color = "white" if value > matrix.max() / 2 else "black"
                axis.text(column, row, text, ha="center", va="center", color=color)
        figure.tight_layout()
        figure.savefig(path, dpi=120)
'''


PLOT_ROC = '''
    def plot_roc(y_true, scores, path):
        """The ROC curve of P(class 1), with the decision threshold marked."""
        false_positive, true_positive, thresholds = roc_curve(y_true, scores)
        figure = Figure(figsize=(5, 5))
        axis = figure.subplots()
        axis.plot(false_positive, true_positive, label="ROC")
        axis.plot([0, 1], [0, 1], linestyle="--", color="grey")
        at = int(np.argmin(np.abs(thresholds - THRESHOLD)))
        axis.scatter(false_positive[at], true_positive[at], label=f"threshold {THRESHOLD}")
        axis.set_xlabel("false positive rate")
        axis.set_ylabel("true positive rate")
        axis.legend()
        figure.tight_layout()
        figure.savefig(path, dpi=120)
'''


WEIGHTS_FLAG = """
    parser.add_argument(
        "--weights",
        default=BACKBONE_WEIGHTS,
        help="the backbone's weights: imagenet, none, or a Keras .h5 weight file",
    )"""

PARSE_ARGS = """
    def parse_args(argv=None):
        parser = argparse.ArgumentParser(description=<DESCRIPTION>)
        parser.add_argument(
            "--data-dir",
            default=<DATA_DIR>,
            help=<DATA_HELP>,
        )
        parser.add_argument("--output-dir", default=<OUTPUT_DIR>)
        parser.add_argument("--epochs", type=int, help="at most this many epochs per phase")
        parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
        parser.add_argument(
            "--subset", type=int, help="use the first N training and N test examples"
        )
        parser.add_argument("--seed", type=int, default=SEED)
        parser.add_argument("--image-size", type=int, help="resize images to N x N")<WEIGHTS>
        <EXTRA_FLAGS>
        return parser.parse_args(argv)
"""
