"""The PyTorch backend: a standalone PyTorch training script for a checked spec, meaning the same
network as the Keras backend's (the same weights give the same outputs).

The parity traps of the design notes are handled here and in the layers' `torch()` emitters:
TensorFlow's `same` padding (the odd pixel at the bottom and right, computed in forward when it
depends on the input size), BatchNorm's epsilon and inverse momentum, L2 added to the loss as
Keras adds it (not optimizer weight decay), flatten in NCHW order with the canonical weight
layout, and softmax/sigmoid kept out of `logits()` so the loss works on logits as Keras's does.
Keras's callbacks are small classes with Keras's own rules (patience counts, min_delta, modes).

The script's fixed code (helper layers, loaders, callbacks, the training loop, evaluation, main)
is real Python in cnnspec/runtime/torch.py, copied by name; this module writes what the spec
decides: the constants, the network, the augmentation, the loss, the metrics and the phases.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from keyword import iskeyword
from textwrap import wrap

from cnnspec.artifact import stamp
from cnnspec.backends.common import (
    COMMON_LOADERS,
    SPLIT_VALIDATION,
    TORCHVISION_TENSORS,
    Script,
    block,
    generated_by,
    import_lines,
    load_backbone_call,
    name_text,
    names_text,
    scheduled,
    step_output,
    straight_line,
    torchvision_loader,
)
from cnnspec.backends.keras import keras_class, weight_table
from cnnspec.backends.runtime import code, definitions, runtime_definitions
from cnnspec.codegen import INDENT, LINE_LENGTH, Call, Code, literal, mapping, sequence, statement
from cnnspec.emitters import tables
from cnnspec.ir import Graph, Node, Spec
from cnnspec.layout import Map, flattened_inputs, flattened_layout
from cnnspec.losses import training_loss
from cnnspec.registry import HOLE, LayerArgs, emitting

NAME = "pytorch"
SUFFIX = "_pytorch.py"

# The registries' PyTorch emitters (cnnspec.emitters): an entry without one is Unsupported.
_TABLES = tables(NAME)
LAYERS, LOSSES, METRICS = _TABLES["layers"], _TABLES["losses"], _TABLES["metrics"]
OPTIMIZERS, CALLBACKS = _TABLES["optimizers"], _TABLES["callbacks"]
SCHEDULES = _TABLES["schedules"]


def emit(spec: Spec, source_name: str) -> str:
    """The whole script for `spec`, read from a file called `source_name`."""
    return stamp(
        generated_by(source_name),
        _Script(spec, source_name).render(),
    )


OUTPUT_ACTIVATIONS = ("softmax", "sigmoid")

# Names that `self.NAME` would resolve to the generated Net's methods or nn.Module's (class
# attributes win over the submodules nn.Module registers): a layer with such a name, such as
# MobileNetV3's classifier convolution `logits`, is read as self._modules["NAME"] instead.
SHADOWED = frozenset(
    [
        "logits",
        "forward",
        "add_module",
        "apply",
        "bfloat16",
        "buffers",
        "children",
        "compile",
        "cpu",
        "cuda",
        "double",
        "eval",
        "extra_repr",
        "float",
        "get_buffer",
        "get_extra_state",
        "get_parameter",
        "get_submodule",
        "half",
        "ipu",
        "load_state_dict",
        "modules",
        "mtia",
        "named_buffers",
        "named_children",
        "named_modules",
        "named_parameters",
        "parameters",
        "register_backward_hook",
        "register_buffer",
        "register_forward_hook",
        "register_forward_pre_hook",
        "register_full_backward_hook",
        "register_full_backward_pre_hook",
        "register_module",
        "register_parameter",
        "requires_grad_",
        "set_extra_state",
        "set_submodule",
        "share_memory",
        "state_dict",
        "to",
        "to_empty",
        "train",
        "type",
        "xpu",
        "zero_grad",
    ]
)


def _keras_order(prefix: str, variable: str, value: str, shape: Map) -> list[str]:
    """`prefix` and `variable`, which holds `value`, a vector flattened from a map of `shape`
    (H, W, C) in PyTorch's CHW order, put in Keras's HWC order: the lines of `logits`, a
    comment first, formatted as ruff formats them."""
    h, w, c = shape
    pad = INDENT * 2
    note = f"Keras's order (H, W, C) for {value}, features of a flattened {h}x{w}x{c} map"
    lines = wrap(note, LINE_LENGTH, initial_indent=f"{pad}# ", subsequent_indent=f"{pad}# ")
    calls = [f"{variable}.unflatten(1, ({c}, {h}, {w}))", ".permute(0, 2, 3, 1)", ".flatten(1)"]
    expression = "".join(calls)
    if len(f"{pad}{prefix}{expression}") <= LINE_LENGTH:
        return [*lines, f"{pad}{prefix}{expression}"]
    if len(f"{pad}{INDENT}{expression}") <= LINE_LENGTH:
        return [*lines, f"{pad}{prefix}(", f"{pad}{INDENT}{expression}", f"{pad})"]
    return [*lines, f"{pad}{prefix}(", *(f"{pad}{INDENT}{call}" for call in calls), f"{pad})"]


class _Script(Script):
    FRAMEWORK = "PyTorch"
    NAME = "pytorch"
    SUFFIX = SUFFIX
    MODEL_FILE = "model.pt"
    RESUME = "resume.pt"

    def render(self) -> str:
        parts = [
            self.preamble(FLAGS),
            *self.helpers(),
            self.model_class(),
            code("torch", "build_model", "Logits"),
            *self.augmentation(),
            *self.data_loader(),
            self.make_loaders(),
            code("torch", "EarlyStopping", "ReduceLROnPlateau", "Checkpoint"),
            *self.training(),
            *self.evaluation(),
            code("torch", "export_weights", "load_weights", "init_weights"),
            self.backbone_weights(),
            code("torch", "Tracking"),
            *self.mlflow_parts(),
            *self.run_parts(),
            self.main(),
        ]
        return "\n\n".join(p.rstrip("\n") + "\n" for p in parts if p).replace("\n\n\n\n", "\n\n\n")

    # ---------------------------------------------------------------------------------------

    def model_file_note(self) -> str:
        return (
            f"{self.MODEL_FILE} is the network's state dict (build_model() then "
            "load_state_dict): it takes NCHW float32 "
            f"{self.preprocessing_text()}, as metrics.json records."
        )

    def stdlib_imports(self) -> list[str]:
        stdlib = ["argparse", "contextlib", "copy", "itertools", "json", "os", "shutil", "sys"]
        stdlib += ["tempfile", "time", "types", "warnings"]
        if scheduled(self.spec):
            stdlib.append("functools")
        stdlib += self.source.stdlib if self.source else ()
        if self.keras_backbone:
            stdlib.append("urllib.request")
        elif self.graph.backbone is not None:
            stdlib += ["pickle", "re"]
        return stdlib

    def library_imports(self) -> list[str]:
        lines = ["import numpy as np", "import torch", "import torch.nn.functional as F"]
        if self.plots():
            lines.append("from matplotlib.figure import Figure")
            if self.spec.evaluate.wants("curves"):
                lines.append("from matplotlib.ticker import MaxNLocator")
        imports = self.source_imports()
        lines += [line for line in imports if line < "from safetensors"]
        lines.append("from safetensors import safe_open")
        lines.append("from safetensors.torch import load_file, save_file")
        lines += [line for line in imports if line > "from safetensors"]
        sklearn = ["accuracy_score", "classification_report"]
        if self.spec.evaluate.wants("confusion_matrix"):
            sklearn.append("confusion_matrix")
        if self.binary:
            sklearn.append("roc_auc_score")  # the test set's AUC
        for entry in self.spec.train.metrics.entries:
            sklearn += [i for i in entry.torch_imports if i not in sklearn]
        if "roc.png" in self.artifacts():
            sklearn.append("roc_curve")
        lines += import_lines("sklearn.metrics", sklearn)
        splits = self.source is not None and self.source.splits_itself
        if splits:
            lines.append("from sklearn.model_selection import train_test_split")
        lines.append("from torch import nn")
        data = ["DataLoader", "DistributedSampler", "TensorDataset", "default_collate"]
        if self.source is not None and self.source.streams_files:
            data.insert(1, "Dataset")  # ImageFiles
        lines += import_lines("torch.utils.data", data)
        lines.append("from tqdm import tqdm")
        return lines

    def augmentation(self) -> list[str]:
        """The augment section as code: its steps' functions, and `augment`, which calls them
        in the spec's order, as Keras's augmentation model does."""
        augment = self.spec.augment
        parts = [
            runtime_definitions(name, "torch", AUGMENTATIONS) for name in augment.torch_helpers()
        ]
        lines = ["def augment(images, generator):"]
        calls = augment.torch_calls()
        if not calls:
            lines.append('    """The spec augments nothing: training batches go in as they are."""')
        else:
            lines.append('    """The spec\'s augmentation of a training batch, in its order."""')
            for call in calls:
                lines += statement("images = ", call, "", 1)
        lines.append("    return images")
        return [*parts, "\n".join(lines) + "\n"]

    def extra_constants(self) -> list[str]:
        out = []
        loss = training_loss(self.spec.train.loss, self.spec.data.labels)
        smoothing = getattr(loss, "label_smoothing", 0.0)
        if smoothing:
            out.append(f"LABEL_SMOOTHING = {literal(smoothing)}")
        fill = self.spec.augment.torch_fill()
        if fill:
            out.append("# How the geometric augmentations fill the pixels they uncover.")
            out += [f"{name} = {literal(value)}" for name, value in fill.items()]
        out.append("# L2 factors by layer: Keras adds factor * sum(kernel ** 2) to the loss.")
        out += mapping("L2 = ", self.graph.l2_factors())
        out.append(f"METRICS = {literal(list(self.spec.train.metrics.names))}")
        backbone = self.graph.backbone
        if backbone is not None and self.keras_backbone:
            size = self.graph.input_shape[0] if self.graph.input_shape else 224
            library, top = backbone.library, backbone.args.include_top
            out.append(
                "# keras.applications' ImageNet weights: Keras's file, converted by layer name."
            )
            out.append(f"KERAS_WEIGHTS_FILE = {literal(library.weights_file(top, size))}")
            out.append(f"KERAS_WEIGHTS_URL = {literal(library.weights_url(top, size))}")
            out += self.backbone_tables()
        return out

    def backbone_nodes(self) -> list[Node]:
        backbone = self.graph.backbone
        names = set(backbone.nodes) if backbone is not None else set()
        return [n for n in self.graph.nodes if n.name in names]

    def backbone_tables(self) -> list[str]:
        """Where keras.applications' weights go, from the registry entries of the backbone's
        layers: the Keras class of each layer, and each class's weights as (state-dict suffix,
        layout), the table the Keras script reads its own weights with."""
        nodes = self.backbone_nodes()
        table = weight_table(self.graph, nodes)
        classes: dict[str, list[str]] = {}
        for node in nodes:
            if node.params.total:
                classes.setdefault(keras_class(node), []).append(node.name)
        out = ["# The backbone's Keras layer classes, and where their weights go (suffix, layout)."]
        out.append("WEIGHT_LAYOUT = {")
        for name, weights in table:
            out.append(f"    {literal(name)}: {{")
            out += [
                f"        {literal(w.variable)}: {literal((w.suffix, w.layout))}," for w in weights
            ]
            out.append("    },")
        out.append("}")
        # The names of each class as one string (split when read): one line per name would
        # make a ResNet152 script a thousand lines longer.
        out.append("BACKBONE_CLASSES = {")
        for name, layers in sorted(classes.items()):
            out += _names_text(f"    {literal(name)}: ", layers, ",")
        out.append("}")
        flattened = {
            name: shape
            for name, shape in flattened_inputs(self.graph).items()
            if name in {n.name for n in nodes}
        }
        # Every backbone script has the table: from_keras reads it (empty, without a flatten).
        out.append("# Keras flattens (H, W, C): rows of these matrices are reordered.")
        out += mapping("FLATTENED_FROM = ", dict(flattened))
        return out

    def backbone_weights(self) -> str:
        """Loading keras.applications' weights into the backbone: the .h5 reader and the
        layout conversion are the importer's (cnnspec/runtime/rules.py)."""
        if self.graph.backbone is None:
            return ""
        if torchvision_loader(self.graph):
            parts = [
                code("common", *TORCHVISION_TENSORS),
                code("torch", "torchvision_state", "load_torchvision_weights"),
            ]
            return "\n\n".join(p.rstrip("\n") + "\n" for p in parts)
        parts = [
            code("torch", "keras_weights_file"),
            code("rules", "keras_h5_arrays"),
            code("torch", "keras_arrays"),
            code("rules", "from_keras"),
            code("torch", "load_backbone_weights"),
        ]
        return "\n\n".join(p.rstrip("\n") + "\n" for p in parts)

    def helpers(self) -> list[str]:
        names: set[str] = set()
        shapes = self.graph.value_shapes()
        for node in self.graph.nodes:
            with emitting("pytorch", node.span):
                names.update(LAYERS.emit(node.layer, [shapes[i] for i in node.inputs]).helpers)
        if not names:
            return []
        parts = [code("rules", "same_pads"), code("torch", *SAME_PADDING)]
        for name in sorted(names):
            parts += [code("rules", *HELPER_RULES[name])] if name in HELPER_RULES else []
            if HELPERS[name]:
                parts.append(code("torch", *HELPERS[name]))
        return parts

    # ---------------------------------------------------------------------------------------
    # the model

    def output_activation(self) -> LayerArgs | None:
        graph = self.graph
        node = graph.output_node
        if node is None:
            return None
        shapes = self.graph.value_shapes()
        with emitting("pytorch", node.span):
            activation = LAYERS.emit(node.layer, [shapes[i] for i in node.inputs]).activation
        if activation is not None and activation.kind in OUTPUT_ACTIVATIONS:
            return activation
        return None

    def model_class(self) -> str:
        graph: Graph = self.graph
        shapes = self.graph.value_shapes()
        params = graph.params
        h, w, c = graph.input_shape or (0, 0, 0)
        summary = (
            f'"""The {name_text(graph.name)} network on (N, {c}, {h}, {w}) inputs: '
            f"{params.trainable:,} parameters."
        )
        init = [
            "class Net(nn.Module):",
            *wrap(summary, LINE_LENGTH, initial_indent=INDENT, subsequent_indent=INDENT),
            "",
            "    `logits` stops before the output activation, where the loss starts;",
            "    `forward` returns probabilities, as the Keras model does.",
            '    """',
            "",
            "    def __init__(self):",
            "        super().__init__()",
        ]
        body = ["    def logits(self, inputs):"]
        final = self.output_activation()
        scope: tuple[str, ...] = ()
        # Vectors flattened from a map are in CHW order here and HWC in Keras: put in Keras's
        # order where a layer uses their positions (see cnnspec.layout).
        layout = flattened_layout(graph)
        steps = list(straight_line(graph, "inputs"))
        taken = {"inputs", *(s.target for s in steps), *(s.save[0] for s in steps if s.save)}
        for step in steps:
            node = step.node
            with emitting("pytorch", node.span):
                layer = LAYERS.emit(node.layer, [shapes[i] for i in node.inputs])
            if step.save:
                body.append(f"        {step.save[0]} = {step.save[1]}")
            if node.scope != scope and node.role != "shortcut":
                comment = ".".join(name_text(s) for s in node.scope) or "model"
                body.append(f"        # {comment}")
                if layer.module is not None:
                    init.append(f"        # {comment}")
                scope = node.scope
            # Lowering guarantees identifiers that are not keywords (see _explicit_name).
            assert node.name.isidentifier() and not iskeyword(node.name), node.name
            if layer.module is not None:
                init += statement(f"self.{node.name} = ", layer.module, "", 2)
            reads = list(step.reads)
            moved: dict[str, str] = {}  # variable -> the same vector in HWC order
            for index, shape in layout.reorders.get(node.name, {}).items():
                read = step.reads[index]
                if read not in moved:
                    # hwc, hwc2, ...: short, so that the layer's line keeps about its length
                    names = ("hwc", *(f"hwc{n}" for n in range(2, len(taken) + len(moved) + 3)))
                    used = taken | set(moved.values())
                    moved[read] = next(name for name in names if name not in used)
                    body += _keras_order(f"{moved[read]} = ", read, node.inputs[index], shape)
                reads[index] = moved[read]
            expression = layer.apply.format(
                module=(
                    f'self._modules["{node.name}"]'
                    if node.name in SHADOWED
                    else f"self.{node.name}"
                ),
                x=reads[0],
                total=" + ".join(reads),
                inputs=reads,
            )
            activation = layer.activation
            if node.name == graph.output and activation is final:
                activation = None
            if activation is not None:
                expression = literal(activation.torch_function()).replace(HOLE.text, expression)
            if expression != step.target:
                body += _assignment(step.target, expression)
        output = step_output(graph, "inputs")
        if layout.output is not None and graph.output is not None:
            body += _keras_order("return ", output, graph.output, layout.output)
        else:
            body.append(f"        return {output}")
        if final is not None:
            applied = literal(final.torch_function()).replace(HOLE.text, "self.logits(inputs)")
        else:
            applied = "self.logits(inputs)"
        forward = ["    def forward(self, inputs):", f"        return {applied}"]
        return "\n".join([*init, "", *body, "", *forward]) + "\n"

    # ---------------------------------------------------------------------------------------
    # data

    def make_loaders(self) -> str:
        data = self.spec.data
        normalize = []
        if data.color_order == "bgr":
            normalize.append("images = images.flip(1)  # RGB to BGR, as the weights expect")
        if data.normalize:
            normalize.append(
                "images = (images - MEAN_TENSOR.to(images.device)) / STD_TENSOR.to(images.device)"
            )
        validation = (
            'if "test" in splits:\n    splits = {**splits, "val": splits["test"]}'
            if data.validation == "test"
            else ""
        )
        loaders = code("torch", "resizing", "make_loaders", VALIDATION=validation)
        if self.source is not None and self.source.streams_files:
            loaders = _replaced(loaders, ARRAY_DATASET, FILES_DATASET)
        parts = [code("torch", "prepare", NORMALIZE="\n".join(normalize)), loaders]
        if data.normalize is not None:
            # The two tensors are one block, not two definitions apart.
            tensors = definitions("torch")
            parts.insert(0, tensors["MEAN_TENSOR"].text + tensors["STD_TENSOR"].text)
        return "\n\n".join(p.rstrip("\n") + "\n" for p in parts)

    # ---------------------------------------------------------------------------------------
    # training

    def training(self) -> list[str]:
        losses = code("torch", "data_loss", "class_labels", "l2_penalty")
        loss = self.loss_code().split("\n")
        parts = [_replaced(losses, [DEFAULT_LOSS], loss), self.scores()]
        if any(plan.frozen for plan in self.spec.phases):
            parts.append(code("torch", "set_trainable"))
        optimizers = [plan.phase.optimizer for plan in self.spec.phases if plan.phase.optimizer]
        helpers = dict.fromkeys(name for o in optimizers for name in o.torch_helpers())
        if helpers:
            parts.append(code("torch", *helpers))
        parts.append(code("torch", "run_epoch", MIX=self.mixing()))
        if scheduled(self.spec):
            parts.append(code("rules", "learning_rate"))
            parts.append(code("torch", "PhaseSchedule"))
        parts.append(self.train())
        parts.append(code("torch", "ResumePoint"))
        parts.append(code("torch", "fit_phase"))
        if self.spec.train.class_weight is not None:
            parts.append(self.class_weights())
        if isinstance(self.spec.data.validation, float):
            parts.append(block(SPLIT_VALIDATION))
        return parts

    def mixing(self) -> str:
        """run_epoch's <MIX>: a training batch's mixup or cutmix, when the spec has them."""
        mixing = self.spec.augment.torch_mixing()
        if mixing is None:
            return ""
        # Written at the statement's depth in run_epoch (three levels), to fit the line.
        lines = statement("inputs, targets = ", mixing, "", 3)
        return "\n".join(["if training:", *(line.removeprefix(INDENT * 2) for line in lines)])

    def scores(self) -> str:
        """`scores`, and one function per metric of the spec, from the metric entries."""
        entries = self.spec.train.metrics.entries
        names = [entry.kind for entry in entries]
        lines = []
        for name, entry in zip(names, entries, strict=True):
            body = METRICS.emit(entry).replace("\n", "\n    ")
            lines += [
                f"def metric_{name}(probabilities, predicted, targets, mixed=None):",
                f'    """{name}, as Keras computes it over the epoch."""',
                f"    {body}",
                "",
                "",
            ]
        arguments = [Code(a) for a in ("probabilities", "predicted", "targets", "mixed")]
        calls = [
            line.removeprefix(INDENT)
            for name in names
            for line in statement(f'result["{name}"] = ', Call(f"metric_{name}", *arguments))
        ]
        lines.append(_replaced(code("torch", "scores"), [DEFAULT_CALLS], calls))
        return "\n".join(lines)

    def loss_code(self) -> str:
        loss = training_loss(self.spec.train.loss, self.spec.data.labels)
        # Loss.torch() writes the statements at a function's indentation, after the first.
        return "\n".join(line.removeprefix(INDENT) for line in LOSSES.emit(loss).split("\n"))

    def train(self) -> str:
        """The runtime module's train, with the spec's phases: each one's frozen layers, its
        optimizer and callbacks, and its fit_phase."""
        spec = self.spec
        lines = []
        freezes = any(plan.frozen for plan in spec.phases)
        for plan in spec.phases:
            phase = plan.phase
            lines.append(
                f"# phase {name_text(phase.name)}: {plan.trainable_params:,} trainable parameters"
            )
            if freezes:
                frozen = [
                    n.name for n in self.graph.nodes if n.name in plan.frozen and n.params.total
                ]
                lines += sequence("frozen = ", frozen, indent=1)
                lines.append("    set_trainable(model, frozen)")
            assert phase.optimizer is not None
            lines += statement(
                "optimizer = ",
                OPTIMIZERS.emit(
                    phase.optimizer, Code("[p for p in model.parameters() if p.requires_grad]")
                ),
            )
            options = phase.optimizer.torch_options(Code("optimizer"))
            if options is not None:
                lines += statement("", options)
            epochs = phase.epochs or spec.train.epochs
            callbacks = [CALLBACKS.emit(c) for c in phase.callbacks]
            # A schedule is a callback here, so that the resume point keeps its position.
            assert phase.schedule is not None
            schedule = SCHEDULES.emit(phase.schedule, phase.optimizer.lr, epochs)
            if schedule is not None:
                callbacks.insert(0, schedule)
            # First, as Keras's fit puts the averages in before any callback's on_train_end.
            average = phase.optimizer.torch_average(Code("optimizer"))
            if average is not None:
                callbacks.insert(0, average)
            if callbacks:
                lines.append("    callbacks = [")
                for call in callbacks:
                    lines += statement("", call, ",", 2)
                lines.append("    ]")
            else:
                lines.append("    callbacks = []")
            fit = Call(
                "fit_phase",
                *map(Code, ("(model, logits_of)", "loaders", "optimizer", "callbacks")),
                phase=phase.name,
                epochs=epochs,
                cap=Code("epochs"),
                device=Code("device"),
                class_weight=Code("class_weight"),
                done=Code("len(history)"),
                resume=Code("resume"),
                tracking=Code("tracking"),
                seed=Code("seed"),
            )
            lines += statement("history += ", fit)
        # Written at the function's indentation (to fit the line), filled in at the slot's.
        phases = [line.removeprefix(INDENT) for line in lines]
        return code("torch", "train", PHASES="\n".join(phases))

    # ---------------------------------------------------------------------------------------
    # evaluation and main

    def evaluation(self) -> list[str]:
        return self.evaluation_parts(_evaluate_template())

    def main(self) -> str:
        split = ""
        if isinstance(self.spec.data.validation, float):
            split = "splits = split_validation(splits, VALIDATION_FRACTION, SEED)"
        elif self.spec.data.validation == "val":
            split = (
                'if "val" not in splits:'
                '\n    raise DataError(f"validation val, but {args.data_dir} has no val/ folder")'
            )
        curves = (
            "title = f\"{SPEC_NAME}, pytorch: test accuracy {test['accuracy']:.4f}\""
            '\nplot_curves(history, output_dir / "curves.png", title)'
            if self.spec.evaluate.wants("curves")
            else ""
        )
        if self.spec.train.class_weight is not None:
            weighting = 'class_weights(splits["train"][1])'
        else:
            weighting = "None"
        files = self.source is not None and self.source.streams_files
        run = code(
            "torch",
            *("is_main", "output_probabilities", "autocast", "make_deterministic", "main", "run"),
            SPLIT=split,
            CHECK_IMAGES="check_images(splits)" if files else "",
            BACKBONE=load_backbone_call("network", 0, self.backbone_loader)
            if self.graph.backbone
            else "",
            CURVES=curves,
            PREPROCESSING=f'metrics["preprocessing"] = {self.preprocessing_code()}',
            CLASS_WEIGHT=f"class_weight={weighting},",
        )
        return f"{run}\n\n{block(MAIN_GUARD)}"


def _names_text(head: str, names: list[str], tail: str) -> list[str]:
    """A dict entry `head "a b c"tail` (see names_text), inside the dict's braces."""
    return names_text(head, names, tail, INDENT)


# -------------------------------------------------------------------------------------------
# Fixed code: the definitions of cnnspec/runtime/torch.py, copied by name (runtime.code). None
# of it contains a spec value: those are in the constants at the top, in the `# <NAME>` slots
# and in the few statements the emitter replaces (_replaced).

# The runtime definitions each helper name of the layers' emitters (TorchLayer.helpers) stands
# for; pad_same is in SAME_PADDING, which comes with every helper, after the rule it pads by
# (same_pads, cnnspec/runtime/rules.py: the checker's).
SAME_PADDING = ("pad_same", "pair")
HELPERS: dict[str, tuple[str, ...]] = {
    "pad_same": (),
    "Conv2dSame": ("Conv2dSame",),
    "MaxPool2dSame": ("MaxPool2dSame",),
    "SeparableConv2d": ("SeparableConv2d",),
    "partial_batchnorm": ("partial_batchnorm",),
    "Normalization": ("Normalization",),
    "rescale_channels": ("rescale_channels",),
    "DropPath": ("DropPath",),
    "LayerScale": ("LayerScale",),
    "ClassToken": ("ClassToken",),
    "PositionEmbedding": ("PositionEmbedding",),
    "AvgPool2dSame": ("AvgPool2dSame",),
    "WindowAttention": ("WindowAttention",),
    "patch_merge": ("patch_merge",),
    "PartitionAttention": ("PartitionAttention",),
}

# The rules of cnnspec/runtime/rules.py that a helper calls, copied before it.
HELPER_RULES = {
    "WindowAttention": ("window_shift", "window_index", "window_mask", "window_coords"),
    "PartitionAttention": ("window_index",),
}

# The augmentation functions, by the names the steps ask for (AugmentSection.torch_helpers):
# each transforms a batch (N, C, H, W) on its device, drawing from the training generator.
AUGMENTATIONS: dict[str, tuple[str, ...]] = {
    "uniform": ("uniform",),
    "warp": ("warp", "identity_maps"),
    "random_rotation": ("random_rotation",),
    "random_translation": ("random_translation",),
    "random_zoom": ("random_zoom",),
    "random_shear": ("random_shear",),
    "random_flip": ("random_flip",),
    "random_brightness": ("random_brightness",),
    "random_contrast": ("random_contrast",),
}

# Statements of the runtime module that are the common case of what a spec decides, which the
# emitter replaces whole (_replaced): real code there, so that the module runs as it is.
DEFAULT_LOSS = 'losses = F.cross_entropy(logits, targets, reduction="none")'
DEFAULT_CALLS = 'result["accuracy"] = metric_accuracy(probabilities, predicted, targets, mixed)'
DEFAULT_PREDICT = "y_pred = np.argmax(probabilities, axis=1)"
ARRAY_DATASET = (
    "pixels = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())",
    "dataset = TensorDataset(pixels, torch.from_numpy(np.asarray(labels)))",
    "collate = resizing(size) if image_size else None",
)
# A folder's splits are image files, read as the batches need them (ImageFiles).
FILES_DATASET = (
    "collate = None",
    "if is_files(images):",
    f"{INDENT}dataset = ImageFiles(images, labels, size)",
    "else:",
    *(INDENT + line for line in ARRAY_DATASET),
)


def _replaced(text: str, old: Sequence[str], new: Sequence[str]) -> str:
    """`text` with its one run of lines `old` (without their common indentation) replaced by
    the lines `new`, indented alike."""
    pattern = r"^(?P<indent> *)" + r"(?P=indent)".join(re.escape(f"{line}\n") for line in old)
    found = list(re.finditer(pattern, text, re.MULTILINE))
    assert len(found) == 1, old
    indent = found[0]["indent"]
    rows = "".join(f"{indent}{row}\n" if row.strip() else "\n" for row in new)
    return text[: found[0].start()] + rows + text[found[0].end() :]


def _inline(text: str, slot: str) -> str:
    """A line that is only `<SLOT>` as the `<SLOT>` at the end of the line before it, the
    form Script.evaluation_parts fills (its values start with a new line)."""
    line = re.compile(rf"\n *<{slot}>\n")
    assert len(line.findall(text)) == 1, slot
    return line.sub(f"<{slot}>\n", text)


def _evaluate_template() -> str:
    """evaluate, as Script.evaluation_parts fills it: <PREDICT>, <EXTRA> and <OUTPUTS>."""
    text = code("torch", "evaluate", EXTRA="<EXTRA>", OUTPUTS="<OUTPUTS>")
    text = _replaced(text, [DEFAULT_PREDICT], ["y_pred = <PREDICT>"])
    return _inline(_inline(text, "EXTRA"), "OUTPUTS")


FLAGS = """
        parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
        parser.add_argument("--compile", action="store_true", help="use torch.compile")
"""


MAIN_GUARD = """
    if __name__ == "__main__":
        main()
"""


_Script.LOADERS = {**COMMON_LOADERS, "DIRECTORY_LOADER": code("torch", "ImageFiles")}


def _assignment(target: str, expression: str) -> list[str]:
    """`target = expression` in forward, split as ruff format splits a line too long (a join
    of many named values): a call's arguments on a line of their own, else a list argument one
    item per line, else a sum in parentheses."""
    pad = INDENT * 2
    line = f"{pad}{target} = {expression}"
    if len(line) <= LINE_LENGTH:
        return [line]
    call = re.fullmatch(r"([\w.]+)\((\[[^\[\]]*\])(, [^()\[\]]*)?\)", expression)
    if call is not None:
        func, items, rest = call.group(1), call.group(2), call.group(3) or ""
        inner = f"{pad}{INDENT}{items}{rest}"
        if len(inner) <= LINE_LENGTH:
            return [f"{pad}{target} = {func}(", inner, f"{pad})"]
        listed = [f"{pad}{INDENT * 2}{item}," for item in items[1:-1].split(", ")]
        extra = [f"{pad}{INDENT}{part}," for part in rest[2:].split(", ")] if rest else []
        return [
            f"{pad}{target} = {func}(",
            f"{pad}{INDENT}[",
            *listed,
            f"{pad}{INDENT}],",
            *extra,
            f"{pad})",
        ]
    return [f"{pad}{target} = (", f"{pad}{INDENT}{expression}", f"{pad})"]
