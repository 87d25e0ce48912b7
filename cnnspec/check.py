"""Whole-spec checks that need more than one section: the output against the loss, labels and
classes; monitored metrics; the data against the input; training phases and their freeze sets;
and warnings about layers that are legal but probably not what was meant."""

from __future__ import annotations

import os
from fnmatch import fnmatchcase
from math import ceil
from pathlib import Path

from cnnspec import codes
from cnnspec.augment.classic import Rotation
from cnnspec.augment.color import ColorJitter, RandAugment, TrivialAugment
from cnnspec.augment.crops import RandomCrop, RandomErasing
from cnnspec.diagnostics import Diagnostics, did_you_mean
from cnnspec.ir import Graph, Node, PhasePlan
from cnnspec.layers import format_shape
from cnnspec.losses import LOSS_FOR_LABELS, Loss, training_loss
from cnnspec.lower import Lowered
from cnnspec.metrics import METRIC_NAMES
from cnnspec.optimizers import check_optimizer
from cnnspec.preprocessing import DESCRIPTIONS, MODES, Mode, Pixels, describe
from cnnspec.registry import LayerArgs, activation_name
from cnnspec.sections import IMAGE_SUFFIXES, DataSection, Directory, Normalize, Phase, TrainSection
from cnnspec.source import Span
from cnnspec.wording import plural


def output_activation(node: Node) -> LayerArgs | None:
    """The activation that produces the model's output: an activation layer itself, or the
    `activation=` of the dense or convolution that ends the model."""
    if node.layer.is_activation:
        return node.layer
    return node.layer.fused_activation()


def effective_loss(lowered: Lowered) -> Loss | None:
    if lowered.train is None or lowered.data is None:
        return None
    return training_loss(lowered.train.loss, lowered.data.labels)


def check(lowered: Lowered, diagnostics: Diagnostics) -> list[PhasePlan]:
    graph = lowered.graph
    if graph is None:
        return []
    _layer_warnings(graph, diagnostics)
    _output(lowered, graph, diagnostics)
    _data_fits_input(lowered, graph, diagnostics)
    _preprocessing(lowered, graph, diagnostics)
    _data_source(lowered, diagnostics)
    _mixing(lowered, graph, diagnostics)
    _crops(lowered, graph, diagnostics)
    _colors(lowered, graph, diagnostics)
    if lowered.train is None:
        return []
    _monitors(lowered, diagnostics)
    _metrics(lowered, graph, diagnostics)
    _phase_callbacks(lowered.train, graph.span, diagnostics)
    _schedules(lowered.train, graph.span, diagnostics)
    _optimizers(lowered.train, graph.span, diagnostics)
    plans = plan_phases(graph, lowered.train.effective_phases(), diagnostics)
    _batch(lowered, graph, plans, diagnostics)
    return plans


def _phase_callbacks(train: TrainSection, model: Span, diagnostics: Diagnostics) -> None:
    """A phase that declares callbacks replaces train's: say which of train's it drops."""
    if not train.callbacks or train.is_broken("callbacks"):
        return
    for phase in train.phases:
        if not phase.callbacks:
            continue
        own = {c.kind for c in phase.callbacks}
        dropped = [c.kind for c in train.callbacks if c.kind not in own]
        if dropped:
            listed = ", ".join(f"{kind}(...)" for kind in dropped)
            diagnostics.warning(
                codes.CALLBACKS_DROPPED,
                f"phase '{phase.name}' declares its own callbacks, so train's {listed} "
                f"does not run in it",
                phase.span_of("name") or phase.span or train.span or model,
                "repeat it in the phase if it should, or leave the phase's callbacks out",
            )


def _optimizers(train: TrainSection, model: Span, diagnostics: Diagnostics) -> None:
    """Each optimizer's options together (check_optimizer), once where it is written, which
    may be train's for several phases."""
    seen: set[int] = set()
    for phase in train.effective_phases():
        optimizer = phase.optimizer
        if optimizer is None or phase.is_broken("optimizer") or id(optimizer) in seen:
            continue
        seen.add(id(optimizer))
        check_optimizer(optimizer, optimizer.span or phase.span or model, diagnostics)


def _schedules(train: TrainSection, model: Span, diagnostics: Diagnostics) -> None:
    """Each phase's learning-rate schedule against the phase: not with reduce_lr (both would
    set the rate), and a warmup that ends before the phase does. Reported once where the
    schedule is written, which may be train's for several phases."""
    said: set[tuple[str, int]] = set()
    for phase in train.effective_phases():
        schedule = phase.schedule
        if schedule is None or schedule.kind == "constant" or phase.is_broken("schedule"):
            continue
        span = schedule.span or phase.span or model
        reduce_lr = phase.callback("reduce_lr")
        if reduce_lr is not None and (codes.SCHEDULE_CONFLICT, span.start) not in said:
            said.add((codes.SCHEDULE_CONFLICT, span.start))
            where = f" (line {reduce_lr.span.line})" if reduce_lr.span is not None else ""
            diagnostics.error(
                codes.SCHEDULE_CONFLICT,
                f"phase '{phase.name}' has both schedule {schedule.kind} and reduce_lr{where}: "
                "the schedule sets the rate at every step, undoing reduce_lr's cuts",
                span,
                "drop one of them; `schedule constant` (the default) keeps reduce_lr",
            )
        warmup = getattr(schedule, "warmup", 0)
        epochs = phase.epochs
        if (
            warmup
            and epochs is not None
            and warmup >= epochs
            and not phase.is_broken("epochs")
            and (codes.WARMUP_TOO_LONG, span.start) not in said
        ):
            said.add((codes.WARMUP_TOO_LONG, span.start))
            diagnostics.error(
                codes.WARMUP_TOO_LONG,
                f"the warmup of {warmup:g} epoch{'' if warmup == 1 else 's'} is not shorter "
                f"than phase "
                f"'{phase.name}' ({plural(epochs, 'epoch')}), so the {schedule.kind} decay "
                "never starts",
                schedule.span_of("warmup") or span,
                f"use a warmup under {plural(epochs, 'epoch')} (fractions of an epoch are "
                "fine: warmup=0.5), or train the phase for more epochs",
            )


def _layer_warnings(graph: Graph, diagnostics: Diagnostics) -> None:
    producers = {n.name: n for n in graph.nodes}
    for node in graph.nodes:
        source = producers.get(node.inputs[0]) if node.inputs else None
        in_shape = source.output_shape if source else graph.input_shape
        if (
            node.kind == "dense"
            and node.scope[:1] != ("backbone",)  # ConvNeXt's pointwise dense layers, by design
            and node.output_shape is not None  # unknown after an error: nothing to say
            and in_shape is not None
            and len(in_shape) == 3
        ):
            diagnostics.warning(
                codes.DENSE_ON_MAP,
                f"dense is applied to the {format_shape(in_shape)} tensor at every position",
                node.span,
                "add flatten() or global_avg_pool() before it to classify the whole image",
            )
        activation = output_activation(node)
        if (
            activation is not None
            and activation.kind == "softmax"
            and node.output_shape is not None
            and node.output_shape[-1] == 1
        ):
            diagnostics.warning(
                codes.SOFTMAX_ONE_UNIT,
                "softmax over a single unit always outputs 1.0",
                node.span,
                "use sigmoid for a single-unit binary output",
            )
        if node.layer.is_activation and source is not None and node.role == "layer":
            before = source.layer.fused_activation()
            if before is not None and before.kind == node.kind:
                diagnostics.warning(
                    codes.ACTIVATION_TWICE,
                    f"{node.kind} follows a layer that already applies {node.kind}",
                    node.span,
                    "remove one of the two",
                )


def _output(lowered: Lowered, graph: Graph, diagnostics: Diagnostics) -> None:
    node = graph.output_node
    shape = graph.output_shape
    if node is None or graph.ends_unbuilt:
        return
    if shape is not None and len(shape) != 1:
        diagnostics.error(
            codes.OUTPUT_NOT_VECTOR,
            f"the model's output is {format_shape(shape)}, not a vector of class scores",
            node.span,
            "end the model with flatten() or global_avg_pool() and a dense layer",
        )
        return
    # When an earlier layer failed, the output's shape is unknown, but a final dense layer
    # still says how many units it has: the class-count and loss checks can run.
    units = shape[0] if shape is not None else getattr(node.layer, "units", None)
    if units is None:
        return
    activation = output_activation(node)
    act_name = activation_name(activation)
    data, train, evaluate = lowered.data, lowered.train, lowered.evaluate
    # A value written wrong is reported where it is; the checks that need it say nothing more.
    if data is not None and train is not None and not data.is_broken("labels"):
        loss = effective_loss(lowered)
        assert loss is not None
        loss_span = train.span_of("loss") if train.loss is not None else None
        if train.is_broken("loss"):
            pass
        elif train.loss is not None and loss.labels != data.labels:
            right = LOSS_FOR_LABELS[data.labels].kind
            diagnostics.error(
                codes.LOSS_MISFIT,
                f"{loss.kind} expects {loss.labels} labels, but the data has labels {data.labels}",
                loss_span or node.span,
                f"use loss {right}, or labels {loss.labels} in data",
            )
        elif act_name != loss.activation:
            diagnostics.error(
                codes.LOSS_MISFIT,
                f"{loss.kind} needs a {loss.activation} output, "
                f"but the last layer's activation is {act_name}",
                node.span,
                f"give the last layer activation={loss.activation}",
            )
        classes = data_classes(data) if not data.is_broken("source", "classes") else None
        if data.labels == "binary":
            if units != 1:
                diagnostics.error(
                    codes.CLASS_COUNT,
                    f"binary labels need one output unit, but the model ends with {units} units",
                    node.span,
                    "end with dense(1, activation=sigmoid), or use labels onehot",
                )
            elif classes is not None and len(classes) != 2:
                diagnostics.error(
                    codes.CLASS_COUNT,
                    f"binary labels need 2 classes, but the data has {len(classes)}",
                    data.span_of("labels") or node.span,
                    "use labels onehot or sparse for more than two classes",
                )
        elif classes is not None and units != len(classes):
            found = ""
            if data.class_names() is None and isinstance(data.source, Directory):
                found = f" (the class folders of {data.source.path}/train: {', '.join(classes)})"
            diagnostics.error(
                codes.CLASS_COUNT,
                f"the data has {plural(len(classes), 'class', 'classes')}{found}, but the last layer "
                f"has {plural(units, 'unit')}",
                node.span,
                f"the last dense layer needs {plural(len(classes), 'unit')}",
            )
    if (
        data is not None
        and train is not None
        and isinstance(train.class_weight, tuple)
        and not data.is_broken("source", "classes", "labels")
    ):
        names = data.class_names()
        expected = 2 if data.labels == "binary" else (len(names) if names else units)
        given = len(train.class_weight)
        if given != expected:
            diagnostics.error(
                codes.CLASS_COUNT,
                f"class_weight gives {plural(given, 'weight')}, "
                f"but there are {plural(expected, 'class', 'classes')}",
                train.span_of("class_weight") or node.span,
                "give one weight per class, in class order, or write `class_weight balanced`",
            )
    if (
        evaluate is not None
        and evaluate.threshold is not None
        and (units != 1 or act_name != "sigmoid")
    ):
        diagnostics.error(
            codes.THRESHOLD_OUTPUT,
            f"a decision threshold needs a single sigmoid output, "
            f"but the model ends with {units} {act_name} unit{'s' if units != 1 else ''}",
            evaluate.span_of("threshold") or node.span,
            "thresholds apply to binary classifiers; multi-class predictions take the argmax",
        )


def data_classes(data: DataSection) -> tuple[str, ...] | None:
    """The data's class names: the spec's or the source's, or, for an image folder that names
    none, the class folders of its train/ as the scripts will find them (sorted), when that
    folder is here. A relative path is read from the working directory, as the scripts do."""
    declared = data.class_names()
    if declared is not None or not isinstance(data.source, Directory):
        return declared
    return class_folders(Path(data.source.path) / "train") or None


def class_folders(folder: Path) -> tuple[str, ...] | None:
    """The sub-folders of a split, sorted, as the scripts list them (hidden ones included, as
    theirs are); None when the split is not there (yet) or cannot be read."""
    try:
        with os.scandir(folder) as entries:
            return tuple(sorted(e.name for e in entries if e.is_dir()))
    except OSError:
        return None


def _data_source(lowered: Lowered, diagnostics: Diagnostics) -> None:
    """What the data source can give: a folder that is not there, a split it does not have."""
    data = lowered.data
    if data is None or data.source is None:
        return
    source = data.source
    validation = data.span_of("validation")
    native = None if isinstance(source, Directory) else source.class_names()
    if native is not None and data.classes is not None and len(data.classes) != len(native):
        # `classes` renames a built-in source's classes; the labels stay the source's.
        written = data.span_of("classes")
        assert written is not None  # `classes` was written
        diagnostics.error(
            codes.CLASS_COUNT,
            f"{source.kind} has {len(native)} classes, but `classes` names {len(data.classes)}",
            written,
            f"name all {len(native)} in label order ({', '.join(native[:3])}, ...): `classes` "
            "renames them, it does not pick some",
        )
    if data.validation == "val" and not isinstance(source, Directory):
        assert validation is not None  # `val` was written
        diagnostics.error(
            codes.NO_SUCH_SPLIT,
            f"validation val reads a val/ split, which source {source.kind} does not have",
            validation,
            "hold out part of the training data with `validation 0.1`, or use `validation test`",
        )
    if isinstance(source, Directory):
        folder = Path(source.path)
        span = source.span_of("path")
        assert span is not None
        if not folder.is_dir():
            diagnostics.warning(
                codes.FOLDER_NOT_FOUND,
                f"no folder {source.path!r} here (a relative path is read from the working "
                f"directory, {Path.cwd()})",
                span,
                "the scripts read it from their working directory, or from --data-dir",
            )
        elif data.validation == "val" and not (folder / "val").is_dir():
            diagnostics.warning(
                codes.FOLDER_NOT_FOUND,
                f"validation val, but {source.path!r} has no val/ folder",
                validation or span,
                "add val/ with the class folders, or use `validation 0.1`",
            )
        if not data.is_broken("classes"):
            _split_class_folders(data, source, folder, diagnostics)


def _split_class_folders(
    data: DataSection, source: Directory, folder: Path, diagnostics: Diagnostics
) -> None:
    """Every split the scripts read (train/, val/ and test/, where there) must hold a folder
    for each class and no other: the spec's classes, or else train/'s folders. The scripts
    stop at this before training; here it is said before anything runs."""
    declared = data.class_names()
    classes = declared if declared is not None else class_folders(folder / "train")
    if classes is None:
        return  # no train/ here: the scripts' own check says so
    span = source.span or source.span_of("path")
    assert span is not None
    for split in ("train", "val", "test") if declared is not None else ("val", "test"):
        found = class_folders(folder / split)
        if found is None or set(found) == set(classes):
            continue
        missing = sorted(set(classes) - set(found))
        extra = sorted(set(found) - set(classes))
        parts = []
        if declared is None:
            if missing:
                parts.append(f"no {_class_folder_names(missing)}, which train/ has")
            if extra:
                parts.append(f"the {_class_folder_names(extra)}, which train/ has not")
            hint = (
                f"every split needs train/'s class folders ({_listed(classes)}) and no other; "
                "the scripts stop at this before training"
            )
        else:
            if missing:
                some = "class" if len(missing) == 1 else "classes"
                parts.append(f"no folder for the spec's {some} {_quoted(missing)}")
            if extra:
                which = "is not one" if len(extra) == 1 else "are not"
                parts.append(
                    f"the {_class_folder_names(extra)}, which {which} of the spec's classes"
                )
            hint = (
                f"every split needs a folder for each of the spec's classes ({_listed(classes)}) "
                "and no other: rename the folders, or the classes"
            )
        diagnostics.error(
            codes.SPLIT_FOLDERS,
            f"{split}/ of {source.path!r} has " + ", and ".join(parts),
            span,
            hint,
        )


def _quoted(names: list[str], shown: int = 6) -> str:
    text = ", ".join(repr(n) for n in names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _class_folder_names(names: list[str]) -> str:
    return f"class folder{'s' if len(names) > 1 else ''} {_quoted(names)}"


def _listed(names: tuple[str, ...], shown: int = 10) -> str:
    text = ", ".join(names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _batch(
    lowered: Lowered, graph: Graph, plans: list[PhasePlan], diagnostics: Diagnostics
) -> None:
    """A batch the training split cannot fill, or whose activations the memory cannot hold."""
    train, data = lowered.train, lowered.data
    assert train is not None
    if train.is_broken("batch"):
        return
    batch = train.batch
    said = f"batch {batch:,}" if "batch" in train._arg_spans else f"the default batch, {batch:,},"
    span = train.span_of("batch") or graph.span
    split = training_split(data, batch) if data is not None else None
    if split is not None and batch > split[0]:
        images, how = split
        diagnostics.warning(
            codes.BATCH_OVER_SPLIT,
            f"{said} is larger than the training split ({plural(images, 'image')}), so each "
            "epoch is a single step",
            span,
            f"the training split holds {plural(images, 'image')}: {how}; use a batch of at "
            f"most {images:,}",
        )
    _batch_memory(graph, plans, batch, said, span, diagnostics)


MEMORY_VARIABLE = "CNNSPEC_MEMORY_BYTES"


def machine_memory() -> tuple[int, str] | None:
    """The memory training has, in bytes, and whose it is: CNNSPEC_MEMORY_BYTES's when it holds
    a number of bytes (tests, or a check on behalf of another machine), else this machine's
    physical memory; None where the system cannot say."""
    written = os.environ.get(MEMORY_VARIABLE, "").strip()
    if written.isdigit() and int(written) > 0:
        return int(written), MEMORY_VARIABLE
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows), or no such name
        return None
    return (physical, "this machine") if physical > 0 else None


def _batch_memory(
    graph: Graph,
    plans: list[PhasePlan],
    batch: int,
    said: str,
    span: Span,
    diagnostics: Diagnostics,
) -> None:
    """Training keeps every layer's output until the backward pass has used it: a batch of them
    must fit in memory. What is counted is the summary's activation memory (each layer's
    float32 output, the input not included) from the first layer a phase trains on, the most
    of any phase: the frameworks keep nothing for the layers in front of it, which no gradient
    reaches. The gradients do not double it (each layer's is freed once the layer before has
    its own), and the weights, their gradients and the optimizer's state come on top: this is
    a lower bound, so the warning says that training cannot fit, never that it might not."""
    if any(n.output_shape is None for n in graph.nodes):
        return  # a layer after an error has no size: no verdict
    kept, start, phase = 0, 0, None
    for plan in plans:
        first = next(
            (
                i
                for i, n in enumerate(graph.nodes)
                if n.params.trainable and n.name not in plan.frozen
            ),
            None,
        )
        if first is not None:
            size = sum(n.memory_bytes for n in graph.nodes[first:])
            if size > kept:
                kept, start, phase = size, first, plan.phase.name
    memory = machine_memory() if kept else None
    if memory is None or batch * kept <= memory[0]:
        return
    from cnnspec.summary import human_bytes

    available, whose = memory
    room = human_bytes(available)
    of = f"this machine's {room}" if whose == "this machine" else f"the {room}"
    of += " of memory" + ("" if whose == "this machine" else f" {whose} gives")
    counted = "each layer's float32 output, as `cnnspec summary` counts it"
    if start:
        counted = (
            f"each layer's float32 output from {graph.nodes[start].name} on, where phase "
            f"'{phase}' starts training"
        )
    fits = available // kept
    diagnostics.warning(
        codes.BATCH_OVER_MEMORY,
        f"{said} keeps {human_bytes(batch * kept)} of activations for the backward pass, more "
        f"than {of}",
        span,
        f"{human_bytes(kept)} an example ({counted}; the gradients, weights and optimizer "
        f"state come on top): "
        + (
            f"a batch of at most {fits:,} fits in {room}"
            if fits
            else f"not even one example fits in {room}: use smaller images, or fewer channels "
            "before the first downsampling"
        ),
    )


def training_split(data: DataSection, batch: int) -> tuple[int, str] | None:
    """How many images the scripts train on, and how that count comes about: the source's
    training split less the validation fraction held out of it. None when the spec and the
    files here cannot say, or when an image folder holds a batch's worth at least (counting
    stops there, so a folder of a million images costs no more than one of `batch`)."""
    source = data.source
    if source is None or data.is_broken("source", "validation", "classes"):
        return None
    fraction = data.validation if isinstance(data.validation, float) else None
    known = source.training_images()
    if known is None:
        if not isinstance(source, Directory):
            return None
        train = Path(source.path) / "train"
        classes = data.class_names() or class_folders(train)
        if not classes:
            return None
        # Enough images that, less the fraction, the training split fills a batch.
        enough = ceil((batch + 1) / (1 - fraction)) if fraction else batch
        count = _count_images(train, classes, enough)
        if count == 0 or count >= enough:
            return None  # none: the scripts' own check says so; enough: nothing to say
        known = count, f"{plural(count, 'image')} in {train}"
    images, how = known
    if fraction:
        # As the scripts' split_validation holds it out: the fraction of the count, rounded up.
        held = ceil(fraction * images)
        images, how = images - held, f"{how}, less {held:,} for validation {fraction:g}"
    return images, how


def _count_images(train: Path, classes: tuple[str, ...], enough: int) -> int:
    """The images in train/'s class folders as the scripts pick them, files by suffix, up to
    `enough`: none is opened, and os.scandir knows a file from a folder without asking the
    file system again (but for a link)."""
    count = 0
    for name in classes:
        try:
            with os.scandir(train / name) as entries:
                for entry in entries:
                    suffix = os.path.splitext(entry.name)[1].lower()
                    if suffix in IMAGE_SUFFIXES and entry.is_file():
                        count += 1
                        if count >= enough:
                            return count
        except OSError:  # a class folder not there: the scripts' check (and E309) says so
            continue
    return count


def pixels_of(data: DataSection) -> Pixels:
    normalize = data.normalize
    return Pixels(
        data.rescale,
        normalize.mean if normalize else None,
        normalize.std if normalize else None,
        data.color_order == "bgr",
    )


def _pixels_written(data: DataSection) -> list[str]:
    return [
        key
        for key in ("rescale", "normalize", "color_order")
        if key in data._arg_spans or (key == "normalize" and data.normalize is not None)
    ]


def preprocessing_mode(lowered: Lowered, data: DataSection) -> Mode | None:
    """The keras.applications convention the input follows, when the spec names one or a
    backbone with ImageNet weights implies it (the data section saying nothing of pixels)."""
    backbone = lowered.graph.backbone if lowered.graph is not None else None
    if data.preprocess is not None and data.preprocess != "imagenet":
        return data.preprocess
    if backbone is None:
        return None
    if data.preprocess == "imagenet":
        return backbone.library.preprocessing
    if not _pixels_written(data) and backbone.args.weights == "imagenet":
        return backbone.library.preprocessing
    return None


def resolved_data(lowered: Lowered) -> DataSection:
    """The data section with `preprocess` (said or implied) made into rescale, normalize and
    color_order: what the backends build."""
    data = lowered.data or DataSection()
    mode = preprocessing_mode(lowered, data)
    if mode is None:
        return data
    pixels = MODES[mode]
    normalize = (
        Normalize.model_validate({"mean": pixels.mean, "std": pixels.std})
        if pixels.mean is not None
        else None
    )
    return data.model_copy(
        update={
            "rescale": pixels.rescale,
            "normalize": normalize,
            "color_order": "bgr" if pixels.bgr else "rgb",
        }
    )


def _preprocessing(lowered: Lowered, graph: Graph, diagnostics: Diagnostics) -> None:
    data = lowered.data
    if data is None:
        return
    written = _pixels_written(data)
    where = data.span_of("preprocess") or graph.span
    if data.preprocess is not None and written:
        diagnostics.error(
            codes.SETTINGS_CONFLICT,
            f"preprocess sets rescale, normalize and color_order itself, but {written[0]} is "
            "given too",
            (data.span_of(written[0]) or where)
            if written[0] != "normalize"
            else (data.normalize.span if data.normalize and data.normalize.span else where),
            f"leave {written[0]} out, or preprocess",
        )
        return
    backbone = graph.backbone
    if data.preprocess == "imagenet" and backbone is None:
        diagnostics.error(
            codes.PREPROCESS_NO_BACKBONE,
            "preprocess imagenet means what the backbone's weights expect, but there is no "
            "backbone",
            where,
            "name the convention: preprocess caffe, tf, torch or raw",
        )
        return
    if backbone is None or backbone.args.weights != "imagenet":
        return
    if graph.input_shape is not None and graph.input_shape[2] != 3:
        return  # E305 says so already
    expected = backbone.library.preprocessing
    actual = pixels_of(resolved_data(lowered))
    white = data.source.white if data.source is not None else 255.0
    if white == 255.0 and actual.same_as(MODES[expected], 3):
        return
    first = written[0] if written else None
    span = (
        data.span_of("preprocess")
        if data.preprocess is not None
        else (data.normalize.span if first == "normalize" and data.normalize else None)
        or (data.span_of(first) if first else None)
        or backbone.args.span_of("weights")
        or backbone.span
    )
    hint = "write `preprocess imagenet` in the data section"
    if written:
        hint += f" instead of {' and '.join(written)}"
    diagnostics.warning(
        codes.PREPROCESS_MISMATCH,
        f"{backbone.name}'s ImageNet weights expect {expected} preprocessing "
        f"({DESCRIPTIONS[expected]}), but the data gives {describe(actual, white)}",
        span or graph.span,
        hint,
    )


def _data_fits_input(lowered: Lowered, graph: Graph, diagnostics: Diagnostics) -> None:
    data = lowered.data
    if data is None or graph.input_shape is None:
        return
    channels = graph.input_shape[2]
    if data.normalize is not None and len(data.normalize.mean) != channels:
        count = len(data.normalize.mean)
        diagnostics.error(
            codes.INPUT_MISMATCH,
            f"normalize gives {count} value{'s' if count != 1 else ''} per statistic, "
            f"but the input has {channels} channel{'s' if channels != 1 else ''}",
            data.normalize.span or graph.span,
            "give one mean and one std per input channel",
        )
    if data.source is None:
        return
    native = data.source.native_shape()
    declared = graph.declared_input or graph.input_shape
    if native is not None and native != declared:
        h, w, c = native
        diagnostics.error(
            codes.INPUT_MISMATCH,
            f"{data.source.kind} images are {h}x{w}x{c}, but the model's input is "
            f"{'x'.join(map(str, declared))}",
            graph.input_span or graph.span,
            f"declare `input {h}x{w}x{c}`",
        )
    white = data.source.white
    top = white * data.rescale
    written = "rescale" in data._arg_spans  # the default, 1, is no one's mistake
    if (
        written
        and data.preprocess is None
        and not data.is_broken("rescale")
        and data.normalize is None
        and not 0.25 <= top <= 4
    ):
        denominator = round(1 / data.rescale) if data.rescale < 1 else 0
        fraction = f"1/{denominator}" if denominator and 1 / denominator == data.rescale else ""
        diagnostics.warning(
            codes.RESCALE_RANGE,
            f"rescale {fraction or f'{data.rescale:g}'} leaves the {data.source.kind} pixels in "
            f"[0, {top:.3g}] (their white is {white:g})",
            data.span_of("rescale") or data.source.span or graph.span,
            f"`rescale 1/{white:g}` gives [0, 1]",
        )
    augment = lowered.augment
    rotation = augment.get("rotation") if augment is not None else None
    if isinstance(rotation, Rotation) and rotation.degrees < 1:
        degrees = rotation.degrees
        diagnostics.warning(
            codes.TINY_ROTATION,
            f"rotation({degrees:g}) turns images by at most {degrees:g} of a degree",
            rotation.span or graph.span,
            f"rotation takes degrees (Keras's RandomRotation takes a fraction of a turn: "
            f"{degrees:g} of a turn is rotation({degrees * 360:g}))",
        )
    if augment is not None and data.source.kind == "digits":
        flip = augment.get("flip")
        if flip is not None:
            diagnostics.warning(
                codes.AUGMENT_CHANGES_MEANING,
                "flipping digits turns them into other shapes (a mirrored 2 is no 2)",
                flip.span or graph.span,
                "drop flip() for digits and text",
            )


def _colors(lowered: Lowered, graph: Graph, diagnostics: Diagnostics) -> None:
    """The colour ops against the images' channels, as torchvision takes them: gray or RGB,
    and a grayscale image has no saturation or hue to change; a jitter of nothing."""
    augment = lowered.augment
    if augment is None:
        return
    shape = graph.input_shape
    channels = shape[-1] if shape and len(shape) == 3 else None
    for step in augment.steps:
        if not isinstance(step, ColorJitter | RandAugment | TrivialAugment) or step.span is None:
            continue
        if isinstance(step, ColorJitter) and not any(step.amounts()):
            diagnostics.error(
                codes.JITTER_NOTHING,
                "color_jitter() changes nothing: every amount is 0",
                step.span,
                "give brightness, contrast, saturation or hue, e.g. "
                "color_jitter(brightness=0.4, contrast=0.4, saturation=0.4)",
            )
        elif channels is not None and channels not in (1, 3):
            diagnostics.error(
                codes.COLOR_CHANNELS,
                f"{step.kind} works on grayscale or RGB images, not {channels} channels",
                step.span,
                "torchvision's colour ops take 1 or 3 channels; drop it, or give the "
                "model 3 channels",
            )
        elif channels == 1 and isinstance(step, ColorJitter):
            for name in ("saturation", "hue"):
                if getattr(step, name) and not step.is_broken(name):
                    diagnostics.error(
                        codes.GRAY_COLOR_JITTER,
                        f"color_jitter's {name} changes nothing on grayscale images",
                        step.span_of(name) or step.span,
                        f"drop {name}=...: a 1-channel image has no {name}",
                    )


def _crops(lowered: Lowered, graph: Graph, diagnostics: Diagnostics) -> None:
    """The crops' settings against the images they get, at the model's input size and in
    pixels as rescaled: a mirror image needs padding smaller than the image, and a fill value
    outside the pixels' range makes pixels no image has."""
    augment, data = lowered.augment, lowered.data
    if augment is None:
        return
    for step in augment.steps:
        if isinstance(step, RandomCrop) and step.fill == "reflect" and graph.input_shape:
            side = min(graph.input_shape[:2])
            if step.padding >= side and not step.is_broken("padding"):
                height, width = graph.input_shape[:2]
                diagnostics.error(
                    codes.REFLECT_PADDING,
                    f"random_crop pads {step.padding} pixels by reflection, but the images are "
                    f"{height}x{width}: a mirror image has only {side - 1} pixels to reflect",
                    step.span_of("padding") or step.span or graph.span,
                    f"pad by at most {side - 1}, or fill the padding with fill=edge or "
                    "fill=constant",
                )
        filled = isinstance(step, RandomErasing) or (
            isinstance(step, RandomCrop) and step.fill == "constant"
        )
        span = step._arg_spans.get("value")  # the default, 0, is black in any range
        if not filled or span is None or data is None or data.source is None:
            continue
        assert isinstance(step, RandomCrop | RandomErasing)
        high = data.source.white * data.rescale
        if not 0 <= step.value <= high and not data.is_broken("rescale"):
            diagnostics.error(
                codes.FILL_OUTSIDE_PIXELS,
                f"{step.kind} fills with {step.value:g}, outside the pixels' range [0, {high:g}]",
                span,
                f"the value is a pixel as rescaled, before normalisation: 0 is black, "
                f"{high:g} white",
            )


def _mixing(lowered: Lowered, graph: Graph, diagnostics: Diagnostics) -> None:
    """Mixup and cutmix make each label a mix of two classes' probabilities, which only
    one-hot labels (and their softmax losses) can hold."""
    data, augment = lowered.data, lowered.augment
    if data is None or augment is None or data.labels == "onehot":
        return
    for kind in ("mixup", "cutmix"):
        step = augment.get(kind)
        if step is None:
            continue
        what = "integer class" if data.labels == "sparse" else "0/1 binary"
        diagnostics.error(
            codes.MIXES_LABELS,
            f"{kind} mixes the labels of two images, but `labels {data.labels}` gives one "
            f"{what} label per image",
            step.span or graph.span,
            "write `labels onehot` in data (the loss becomes categorical_crossentropy)"
            if data.labels == "sparse"
            else "mixup and cutmix mix classes of a softmax output: `labels onehot` with "
            "two output units",
        )


def _metrics(lowered: Lowered, graph: Graph, diagnostics: Diagnostics) -> None:
    """Each metric listed once, and each one fit for the model's output."""
    train = lowered.train
    assert train is not None
    if train.is_broken("metrics"):
        return
    entries = train.metrics.entries
    seen: set[str] = set()
    for entry in entries:
        span = entry.span or train.span_of("metrics") or graph.span
        if entry.kind in seen:
            diagnostics.error(
                codes.METRIC_TWICE,
                f"{entry.kind} is listed twice in metrics(...)",
                span,
                "keep one of them: the scripts log one value per name",
            )
        seen.add(entry.kind)
    node, shape = graph.output_node, graph.output_shape
    if node is None or graph.ends_unbuilt or shape is None or len(shape) != 1:
        return
    activation = activation_name(output_activation(node))
    for entry in entries:
        misfit = entry.misfit(shape[0], activation)
        if misfit is not None:
            code, message, hint = misfit
            span = entry.span or train.span_of("metrics") or graph.span
            diagnostics.error(code, message, span, hint)


def _monitors(lowered: Lowered, diagnostics: Diagnostics) -> None:
    train, data = lowered.train, lowered.data
    assert train is not None
    metrics = set(train.metrics.names)
    available = ["loss", *sorted(metrics)]
    choices = [*available, *(f"val_{m}" for m in available)]
    for phase in train.effective_phases():
        for callback in phase.callbacks:
            monitor = callback.monitor
            base = monitor.removeprefix("val_")
            span = callback.span_of("monitor") or callback.span or phase.span
            assert span is not None
            if (
                monitor.startswith("val_")
                and data is not None
                and not data.has_validation
                and not data.is_broken("validation")
            ):
                diagnostics.error(
                    codes.NO_VALIDATION,
                    f"{callback.kind} monitors '{monitor}', but there is no validation data",
                    span,
                    "add `validation test`, `validation val` or `validation 0.1` to data",
                )
            if base not in available and not train.is_broken("metrics"):
                if base in METRIC_NAMES:
                    hint = f"add {base} to metrics(...) in train"
                else:
                    hint = did_you_mean(monitor, choices) or f"available: {', '.join(choices)}"
                diagnostics.error(
                    codes.UNKNOWN_METRIC,
                    f"{callback.kind} monitors '{monitor}', which is not computed",
                    span,
                    hint,
                )
                continue
            natural = "min" if base == "loss" else "max"
            if callback.mode not in ("auto", natural):
                diagnostics.warning(
                    codes.MONITOR_MODE,
                    f"mode={callback.mode} on '{monitor}': {base} improves when it "
                    f"{'falls' if natural == 'min' else 'rises'}",
                    callback.span_of("mode") or span,
                    f"use mode={natural} or leave mode out",
                )
            patience = getattr(callback, "patience", None)
            if (
                patience is not None
                and phase.epochs is not None
                and patience >= phase.epochs
                and not phase.is_broken("epochs")
            ):
                diagnostics.warning(
                    codes.PATIENCE_NEVER,
                    f"{callback.kind} patience {patience} is not less than the phase's "
                    f"{plural(phase.epochs, 'epoch')}, so it can never act",
                    callback.span_of("patience") or span,
                    "lower the patience or train for more epochs",
                )


def matches(target: str, node: Node) -> bool:
    """Whether a freeze target names this node: its name, an enclosing block (dotted for nested
    blocks: `backbone.block5`), or a glob over either."""
    dotted = ".".join(node.scope)
    if target in ("*", "all"):
        return True
    if target == node.name:
        return True
    if any(target == ".".join(node.scope[: k + 1]) for k in range(len(node.scope))):
        return True
    if any(ch in target for ch in "*?["):
        return fnmatchcase(node.name, target) or (
            bool(dotted)
            and (fnmatchcase(dotted, target) or fnmatchcase(f"{dotted}.{node.name}", target))
        )
    return False


def plan_phases(graph: Graph, phases: list[Phase], diagnostics: Diagnostics) -> list[PhasePlan]:
    """Resolve each phase's freeze set. A phase starts from the previous phase's freeze set and
    applies its `freeze`/`unfreeze` statements in order."""
    plans: list[PhasePlan] = []
    frozen: set[str] = set()
    total = graph.params
    for phase in phases:
        before = set(frozen)
        unfroze_any = False
        all_matched = True
        for rule in phase.freezing:
            hit = {n.name for n in graph.nodes if matches(rule.target, n)}
            if not hit:
                all_matched = False
                names = ["all", *graph.blocks, *(n.name for n in graph.nodes)]
                # An error, not a warning: a misspelt block (`freeze stemm`) would otherwise
                # train the wrong layers for hours.
                diagnostics.error(
                    codes.FREEZE_MATCHES_NOTHING,
                    f"{rule.action} '{rule.target}' matches no layer",
                    rule.span or phase.span or graph.span,
                    did_you_mean(rule.target, names) or "name a block, a layer, or a glob",
                )
            if rule.action == "freeze":
                frozen |= hit
            else:
                unfroze_any = True
                frozen -= hit
        trainable = sum(n.params.trainable for n in graph.nodes if n.name not in frozen)
        span = phase.span_of("name") or graph.span
        # A freeze statement written wrong leaves the freeze set unknown: no verdict on it.
        unsure = phase.is_broken("freezing")
        if unfroze_any and all_matched and not (before - frozen) and plans and not unsure:
            diagnostics.warning(
                codes.UNFREEZES_NOTHING,
                f"phase '{phase.name}' unfreezes nothing: those layers were already trainable",
                span,
                "freeze them in an earlier phase, or drop the unfreeze",
            )
        # Unknown shapes (after an error) count no parameters: no verdict on them.
        known = all(n.output_shape is not None for n in graph.nodes)
        if trainable == 0 and total.trainable > 0 and known and not unsure:
            diagnostics.warning(
                codes.TRAINS_NOTHING,
                f"phase '{phase.name}' trains nothing: every layer is frozen",
                span,
                "unfreeze a block in this phase, or remove the phase",
            )
        thawed = before - frozen
        plans.append(
            PhasePlan(
                phase=phase,
                frozen=frozenset(frozen),
                unfrozen=tuple(n.name for n in graph.nodes if n.name in thawed and n.params.total),
                trainable_params=trainable,
                non_trainable_params=total.total - trainable,
            )
        )
    return plans
