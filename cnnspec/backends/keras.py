"""The Keras backend: a standalone Keras 3 / TensorFlow training script for a checked spec.

The script reads like the reference tutorial's code without its deprecated parts: the functional
API, `tf.data` with Keras preprocessing layers for augmentation (no ImageDataGenerator), callbacks
writing to an output folder, and evaluation with `model(x, training=False)`.

Only the parts that depend on the spec are generated: the constants at the top, `build_model`
(from each layer's registry entry), the augmentation, the data loader of the spec's source, and
the training phases. Everything else is copied from cnnspec/runtime/keras.py and common.py, where
it is ordinary Python (cnnspec.backends.runtime), with the statements a spec decides filled into
their slots. Every spec value reaches the script through `cnnspec.codegen.literal` (repr) or a
`Call`, so no spec text is spliced into code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping

from cnnspec.artifact import stamp
from cnnspec.backends.common import (
    COMMON_LOADERS,
    SPLIT_VALIDATION,
    TORCHVISION_TENSORS,
    Script,
    generated_by,
    import_lines,
    load_backbone_call,
    name_text,
    scheduled,
    step_output,
    straight_line,
    torchvision_loader,
)
from cnnspec.backends.runtime import code, definitions, runtime_definitions
from cnnspec.codegen import INDENT, Call, Code, literal, mapping, sequence, statement
from cnnspec.emitters import tables
from cnnspec.ir import Graph, Node, Spec
from cnnspec.layout import flattened_inputs
from cnnspec.losses import training_loss
from cnnspec.registry import KERAS_INPUT, KerasWeight, emitting

NAME = "keras"
SUFFIX = "_keras.py"

# Helper functions and classes that layer emitters may refer to by name
# (LayerArgs.keras_helpers), from cnnspec/runtime/keras.py.
# The registries' Keras emitters (cnnspec.emitters): an entry without one is Unsupported.
_TABLES = tables(NAME)
LAYERS, LOSSES, METRICS = _TABLES["layers"], _TABLES["losses"], _TABLES["metrics"]
OPTIMIZERS, CALLBACKS = _TABLES["optimizers"], _TABLES["callbacks"]
SCHEDULES = _TABLES["schedules"]


class _Helpers(Mapping[str, str]):
    """The helpers an entry's Keras emitter may name (`LayerArgs.keras_helpers`): any
    definition of cnnspec/runtime/keras.py, by its name, so that a kind's helper layer is
    written once, there, and needs no table here."""

    def __getitem__(self, name: str) -> str:
        return code("keras", name)

    def __iter__(self) -> Iterator[str]:
        return iter(definitions("keras"))

    def __len__(self) -> int:
        return len(definitions("keras"))


HELPERS = _Helpers()

# The rules of cnnspec/runtime/rules.py that a helper calls, copied before it.
HELPER_RULES = {
    "same_padding": ("same_pads",),
    "WindowAttention": ("window_shift", "window_index", "window_mask", "window_coords"),
    "PartitionAttention": ("window_index",),
}


def emit(spec: Spec, source_name: str) -> str:
    """The whole script for `spec`, read from a file called `source_name`."""
    return stamp(
        generated_by(source_name),
        _Script(spec, source_name).render(),
    )


class _Script(Script):
    FRAMEWORK = "Keras"
    NAME = "keras"
    SUFFIX = SUFFIX
    MODEL_FILE = "model.keras"
    RESUME = "resume"

    # ---------------------------------------------------------------------------------------

    def render(self) -> str:
        parts = [
            self.preamble(FLAGS),
            *self.helpers(),
            self.build_model(),
            *(runtime_definitions(name) for name in self.spec.augment.keras_helpers()),
            self.build_augmentation(),
            *self.data_loader(),
            self.make_datasets(),
            *self.training(),
            *self.evaluation(),
            *self.weights(),
            self.inference(),
            self.backbone_weights(),
            code("keras", "Tracking", "PhaseTensorBoard"),
            *self.mlflow_parts(),
            *self.run_parts(),
            self.main(),
        ]
        return "\n\n".join(p.rstrip("\n") + "\n" for p in parts if p).replace("\n\n\n\n", "\n\n\n")

    def model_file_note(self) -> str:
        return (
            f"{self.MODEL_FILE} predicts from images as the data source gives them: its first "
            "layers rescale (and normalise) them. The network alone, build_model(), takes "
            f"{self.preprocessing_text()}; metrics.json records both."
        )

    def stdlib_imports(self) -> list[str]:
        stdlib = ["argparse", "contextlib", "itertools", "json", "os", "shutil", "sys"]
        stdlib.append("tempfile")
        stdlib += self.source.stdlib if self.source else ()
        if torchvision_loader(self.graph):
            stdlib += ["collections", "pickle", "re", "zipfile"]
        return stdlib

    def library_imports(self) -> list[str]:
        lines = ["import keras", "import numpy as np", "import tensorflow as tf"]
        lines.append(f"from keras import {', '.join(self.keras_modules())}")
        if self.plots():
            lines.append("from matplotlib.figure import Figure")
            if self.spec.evaluate.wants("curves"):
                lines.append("from matplotlib.ticker import MaxNLocator")
        imports = self.source_imports()
        lines += [line for line in imports if line < "from safetensors"]
        lines.append("from safetensors import safe_open")
        lines.append("from safetensors.numpy import load_file, save_file")
        lines += [line for line in imports if line > "from safetensors"]
        sklearn = ["accuracy_score", "classification_report"]
        if self.spec.evaluate.wants("confusion_matrix"):
            sklearn.append("confusion_matrix")
        if self.binary:
            sklearn.append("roc_auc_score")
        if "roc.png" in self.artifacts():
            sklearn.append("roc_curve")
        lines += import_lines("sklearn.metrics", sklearn)
        splits = self.source is not None and self.source.splits_itself
        if splits:
            lines.append("from sklearn.model_selection import train_test_split")
        return lines

    def environment(self) -> list[str]:
        return [
            "# TensorFlow's later log lines: errors where a GPU is, none on a machine without one.",
            'GPU_DEVICE = os.path.exists("/dev/nvidiactl")',
            'os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if GPU_DEVICE else "3")',
        ]

    def keras_modules(self) -> list[str]:
        return ["layers", "regularizers"] if self.graph.l2_factors() else ["layers"]

    # ---------------------------------------------------------------------------------------
    # constants

    def extra_constants(self) -> list[str]:
        lines = [
            "# Where each weight of a Keras layer goes in cnnspec's layout (the PyTorch names",
            "# and shapes that weights.safetensors holds): tensor suffix and layout, by layer",
            "# class and weight name.",
            "WEIGHT_LAYOUT = {",
        ]
        for keras_class, weights in self.weight_table():
            lines.append(f"    {literal(keras_class)}: {{")
            for weight in weights:
                place = literal((weight.suffix, weight.layout))
                lines.append(f"        {literal(weight.variable)}: {place},")
            lines.append("    },")
        lines[-1:] = [*lines[-1:], "}"] if len(lines) > 4 else ["WEIGHT_LAYOUT = {}"]
        # Every script has the table: from_keras and to_keras read it (empty, without a flatten).
        lines += [
            "# Layers fed by a flattened (H, W, C) map: their weights over those features",
            "# are stored in (C, H, W) order, as PyTorch and ONNX flatten.",
            *mapping("FLATTENED_FROM = ", dict(flattened_inputs(self.graph))),
        ]
        return lines

    def helpers(self) -> list[str]:
        names = sorted({h for node in self.graph.nodes for h in node.layer.keras_helpers()})
        parts = []
        for name in names:
            parts += [code("rules", *HELPER_RULES[name])] if name in HELPER_RULES else []
            parts.append(HELPERS[name])
        return parts

    # ---------------------------------------------------------------------------------------
    # the model

    def build_model(self) -> str:
        graph = self.graph
        params = graph.params
        lines = [
            "def build_model(input_shape=INPUT_SHAPE):",
            f'    """The {name_text(graph.name)} network, uncompiled.',
            "",
            f"    {params.total:,} parameters, {params.trainable:,} trainable.",
            '    """',
            '    inputs = keras.Input(shape=input_shape, name="image")',
        ]
        scope: tuple[str, ...] = ()
        for step in straight_line(graph, "inputs"):
            node = step.node
            if step.save:
                lines.append(f"    {step.save[0]} = {step.save[1]}")
            if node.scope != scope and node.role != "shortcut":
                lines.append(f"    # {'.'.join(name_text(s) for s in node.scope) or 'model'}")
                scope = node.scope
            argument = f"[{', '.join(step.reads)}]" if len(step.reads) > 1 else step.reads[0]
            with emitting("keras", node.span):
                emitted = LAYERS.emit(node.layer)
            for keras_layer in emitted:
                call = _applied_to(keras_layer.call, Code(argument))
                name = node.name + keras_layer.suffix
                layer = Call(call.func, *call.args, **call.kwargs, name=name)
                lines += statement(f"{step.target} = ", layer, f"({argument})")
                argument = step.target
        output = step_output(graph, "inputs")
        lines.append(f"    return keras.Model(inputs, {output}, name={literal(graph.name)})")
        return "\n".join(lines) + "\n"

    # ---------------------------------------------------------------------------------------
    # augmentation

    def build_augmentation(self) -> str:
        calls = self.spec.augment.keras_layers()
        lines = [
            "def build_augmentation(seed=SEED):",
            '    """Random transforms for training batches only, as Keras preprocessing layers."""',
        ]
        if not calls:
            # An empty keras.Sequential cannot be called ("it has no layers").
            lines[1] = '    """The spec augments nothing: training batches go in as they are."""'
            lines.append("    return None")
            return "\n".join(lines) + "\n"
        lines.append("    return keras.Sequential(")
        lines.append("        [")
        for index, call in enumerate(calls):
            seeded = Call(
                call.func,
                *call.args,
                **call.kwargs,
                seed=Code("seed" if index == 0 else f"seed + {index}"),
            )
            lines += statement("", seeded, ",", 3)
        lines.append("        ],")
        lines.append('        name="augmentation",')
        lines.append("    )")
        return "\n".join(lines) + "\n"

    # ---------------------------------------------------------------------------------------
    # data

    def make_datasets(self) -> str:
        data = self.spec.data
        streams = self.source is not None and self.source.streams_files
        normalize = ["images = (images - MEAN) / STD"] if data.normalize else []
        if data.color_order == "bgr":
            normalize.insert(0, "images = images[..., ::-1]  # RGB to BGR, as the weights expect")
        validation = ""
        if data.validation == "test":
            validation = 'if "test" in splits:\n    datasets["val"] = datasets["test"]'
        mixing, mix = self.mixing()
        return code(
            "keras",
            "make_datasets",
            NORMALIZE="\n".join(normalize),
            ENCODE=ENCODE[data.labels],
            MIXING=mixing,
            MIX=mix,
            READ=READ_FILES if streams else "",
            VALIDATION=validation,
        )

    def mixing(self) -> tuple[str, str]:
        """make_datasets's <MIXING> and <MIX>: the training batches' mixup or cutmix."""
        mixing = self.spec.augment.keras_mixing()
        if mixing is None:
            return "", ""
        lines = statement("mixing = ", mixing, "", 1)
        return (
            "\n".join(line.removeprefix(INDENT) for line in lines),
            "if training:\n    images, labels = mixing(images, labels)",
        )

    # ---------------------------------------------------------------------------------------
    # training

    def training(self) -> list[str]:
        parts: list[str] = self.metric_helpers()
        freezes = any(plan.frozen for plan in self.spec.phases)
        if freezes:
            parts.append(code("keras", "set_trainable"))
        if scheduled(self.spec):
            parts.append(code("rules", "learning_rate"))
            parts.append(code("keras", "PhaseSchedule"))
        parts.append(self.train())
        parts.append(code("keras", "ResumePoint"))
        parts.append(code("keras", "fit_phase"))
        if self.spec.train.class_weight is not None:
            parts.append(self.class_weights())
        return parts

    def train(self) -> str:
        spec = self.spec
        loss = training_loss(spec.train.loss, spec.data.labels)
        metrics = self.metrics()
        # Made at the body's indentation, so that calls wrap as they will stand there.
        lines: list[str] = []
        freezes = any(plan.frozen for plan in spec.phases)
        for plan in spec.phases:
            phase = plan.phase
            lines.append(
                f"    # phase {name_text(phase.name)}: {plan.trainable_params:,} trainable parameters"
            )
            if freezes:
                frozen = [
                    n.name for n in self.graph.nodes if n.name in plan.frozen and n.params.total
                ]
                lines += sequence("frozen = ", frozen, indent=1)
                lines.append("    set_trainable(model, frozen)")
            assert phase.optimizer is not None and phase.schedule is not None
            epochs = phase.epochs or spec.train.epochs
            optimizer = OPTIMIZERS.emit(phase.optimizer)
            # The schedule's learning rate: the optimizer's own for a constant one.
            rate = SCHEDULES.emit(phase.schedule, phase.optimizer.lr, epochs)
            if isinstance(rate, Call):
                lines += statement("schedule = ", rate)
                optimizer.kwargs["learning_rate"] = Code("schedule")
            lines.append("    model.compile(")
            lines += statement("optimizer=", optimizer, ",", 2)
            lines += statement("loss=", LOSSES.emit(loss), ",", 2)
            lines += sequence("metrics=", metrics, ",", 2)
            lines.append("    )")
            callbacks = [CALLBACKS.emit(c) for c in phase.callbacks]
            if callbacks:
                lines.append("    callbacks = [")
                for call in callbacks:
                    lines += statement("", call, ",", 2)
                lines.append("    ]")
            else:
                lines.append("    callbacks = []")
            fit = Call(
                "fit_phase",
                Code("model"),
                phase.name,
                epochs,
                *map(Code, ("epochs", "datasets", "callbacks", "class_weight", "len(history)")),
                Code("resume"),
                Code("tracking"),
            )
            lines += statement("history += ", fit)
        phases = "\n".join(line.removeprefix(INDENT) for line in lines)
        return code("keras", "train", PHASES=phases)

    def metrics(self) -> list[object]:
        labels = self.spec.data.labels
        return [METRICS.emit(entry, labels) for entry in self.spec.train.metrics.entries]

    def metric_helpers(self) -> list[str]:
        """The definitions the loss and metric objects need (sparse labels one-hot)."""
        labels = self.spec.data.labels
        refs = list(training_loss(self.spec.train.loss, labels).keras_helpers())
        for entry in self.spec.train.metrics.entries:
            refs += [ref for ref in entry.keras_helpers(labels) if ref not in refs]
        return [runtime_definitions(ref) for ref in refs]

    # ---------------------------------------------------------------------------------------
    # evaluation, weights, main

    def evaluation(self) -> list[str]:
        if self.spec.data.labels == "onehot":
            truth = "np.argmax(np.concatenate(truth), axis=1)"
        else:
            truth = "np.concatenate(truth).ravel().astype(int)"
        evaluate = code(
            "keras",
            "evaluate",
            TRUTH=f"y_true = {truth}",
            PREDICT="y_pred = <PREDICT>",
            EXTRA="<EXTRA>",
            OUTPUTS="<OUTPUTS>",
        )
        # evaluation_parts fills <PREDICT>, <EXTRA> and <OUTPUTS> as text: the last two with
        # lines of their own, at the end of the line before them.
        template = re.sub(r"\n *(<EXTRA>|<OUTPUTS>)\n", r"\1\n", evaluate)
        return self.evaluation_parts(template)

    def weights(self) -> list[str]:
        """Reading and writing weights in cnnspec's layout, through the weight table of this
        model's Keras layer classes (WEIGHT_LAYOUT, from their registry entries) and the
        conversions between Keras's layouts and the canonical one, which the importer reads
        Keras files with (cnnspec/runtime/rules.py)."""
        return [
            code("keras", "weight_place"),
            code("rules", "from_keras", "to_keras"),
            code("keras", "export_weights", "load_weights", "init_weights"),
        ]

    def weight_table(self) -> list[tuple[str, tuple[KerasWeight, ...]]]:
        """Each Keras layer class that carries weights here, with its weights, merged over the
        nodes that use it."""
        return weight_table(self.graph, self.graph.nodes)

    def inference(self) -> str:
        normalize = []
        if self.spec.data.color_order == "bgr":
            normalize.append("x = keras.ops.flip(x, axis=-1)  # RGB to BGR")
        if self.spec.data.normalize is not None:
            normalize.append(
                "x = layers.Normalization(mean=MEAN, variance=[s * s for s in STD])(x)"
            )
        return code("keras", "inference_model", NORMALIZE="\n".join(normalize))

    def backbone_weights(self) -> str:
        if self.graph.backbone is None:
            return ""
        if torchvision_loader(self.graph):
            parts = [
                code("common", *TORCHVISION_TENSORS),
                code("keras", "read_torch_checkpoint", "torchvision_state"),
                code("keras", "load_torchvision_weights"),
            ]
            return "\n\n".join(p.rstrip("\n") + "\n" for p in parts)
        return code("keras", "load_backbone_weights")

    def main(self) -> str:
        split = ""
        if isinstance(self.spec.data.validation, float):
            split = "splits = split_validation(splits, VALIDATION_FRACTION, SEED)"
        elif self.spec.data.validation == "val":
            split = (
                'if "val" not in splits:\n'
                '    raise DataError(f"validation val, but {args.data_dir} has no val/ folder")'
            )
        curves = ""
        if self.spec.evaluate.wants("curves"):
            curves = (
                "title = f\"{SPEC_NAME}, keras: test accuracy {test['accuracy']:.4f}\"\n"
                'plot_curves(history, output_dir / "curves.png", title)'
            )
        weights = "None"
        if self.spec.train.class_weight is not None:
            weights = 'class_weights(splits["train"][1])'
        streams = self.source is not None and self.source.streams_files
        parts = [
            code("keras", "make_strategy"),
            code(
                "keras",
                "PRIVATE_API_TESTED",
                "UntestedVersion",
                "check_private_api",
                *(["reset_layer_names"] if self.keras_backbone else []),
                "across_workers",
            ),
            code(
                "keras",
                "is_chief",
                "main",
                "run",
                READ_ERROR=READ_ERROR if streams else "",
                CHECK_IMAGES="check_images(splits)" if streams else "",
                SPLIT=split,
                BACKBONE=load_backbone_call("model", 0, self.backbone_loader)
                if self.graph.backbone
                else "",
                CLASS_WEIGHTS=f"weights = {weights}",
                CURVES=curves,
                PREPROCESSING=f'metrics["preprocessing"] = {self.preprocessing_code()}',
            ),
            RUN_MAIN,
        ]
        if isinstance(self.spec.data.validation, float):
            parts.insert(0, SPLIT_VALIDATION)
        return "\n\n".join(p.rstrip("\n") + "\n" for p in parts)


# -------------------------------------------------------------------------------------------
# Section emitters: the spec's optimizer, loss and callbacks as Keras constructors.


def _applied_to(call: Call, tensor: Code) -> Call:
    """`call` with KERAS_INPUT, wherever it stands in its arguments, replaced by `tensor`."""

    def replace(value: object) -> object:
        if value == KERAS_INPUT:
            return tensor
        if isinstance(value, Call):
            return _applied_to(value, tensor)
        return value

    return Call(
        call.func,
        *map(replace, call.args),
        **{key: replace(value) for key, value in call.kwargs.items()},
    )


# -------------------------------------------------------------------------------------------
# Weights in cnnspec's layout: the functions are in cnnspec/runtime/keras.py and, the
# conversions between the layouts, in cnnspec/runtime/rules.py; the scripts' tables
# (WEIGHT_LAYOUT, FLATTENED_FROM) come from the registry entries.


def keras_class(node: Node) -> str:
    """The Keras layer class a node becomes (`Conv2D`, `BatchNormalization`)."""
    with emitting("keras", node.span):
        named = next(k for k in LAYERS.emit(node.layer) if k.suffix == "")
    return named.call.func.rsplit(".", 1)[-1]


def output_layer(node: Node) -> str:
    """The name of the Keras layer that gives a node's output: the last of the layers it
    becomes (`<node>_act` after a convolution's activation, `<node>_tokens` after
    patch_embed's convolution)."""
    with emitting("keras", node.span):
        last = LAYERS.emit(node.layer)[-1]
    return node.name + last.suffix


def weight_table(graph: Graph, nodes: Iterable[Node]) -> list[tuple[str, tuple[KerasWeight, ...]]]:
    """Each Keras layer class that carries weights among `nodes`, with its weights (in Keras's
    order), merged over the nodes that use it."""
    table: dict[str, dict[str, KerasWeight]] = {}
    shapes = graph.value_shapes() if graph.input_shape else {}
    for node in nodes:
        weights = node.layer.keras_weights()
        if not weights and not node.layer.weight_shapes([shapes[i] for i in node.inputs]):
            continue
        table.setdefault(keras_class(node), {}).update({w.variable: w for w in weights})
    return [(name, tuple(weights.values())) for name, weights in sorted(table.items())]


# -------------------------------------------------------------------------------------------
# The statements a spec decides in the fixed code's slots, and what is no definition.


# make_datasets's <ENCODE>: the labels as the loss takes them (sparse ones as they are).
ENCODE = {
    "onehot": "labels = tf.one_hot(labels, len(CLASS_NAMES))",
    "binary": 'labels = tf.reshape(tf.cast(labels, "float32"), (-1, 1))',
    "sparse": "",
}

# make_datasets's <READ>: a folder's image files are read a batch at a time.
READ_FILES = """if is_files(images):
    dataset = dataset.map(reading(size), num_parallel_calls=tf.data.AUTOTUNE)"""

# main()'s <READ_ERROR>: read_image's DataError, raised inside tf.data (check_images makes it
# rare).
READ_ERROR = """except tf.errors.OpError as error:
    if "DataError: " not in error.message:
        raise
    sys.exit(f"error: {read_failure(error)}")"""

FLAGS = """
        parser.add_argument(
            "--strategy",
            choices=("default", "mirrored", "multiworker"),
            default="default",
            help="mirrored: data-parallel over every GPU, or every CPU device without one; "
            "multiworker: over the machines TF_CONFIG lists",
        )
"""

RUN_MAIN = 'if __name__ == "__main__":\n    main()\n'


_Script.LOADERS = {**COMMON_LOADERS, "DIRECTORY_LOADER": code("keras", "reading", "read_failure")}
