"""`cnnspec import`: an existing Keras, ONNX or PyTorch model as a spec and its weights.

A reader (keras_file, onnx_file, torch_module) turns the file into a Network: layers in
cnnspec's kinds, with the file's weights. `structure` nests its DAG the way the language does
(residuals, joins, `from` for a value read past its join); `writer` writes it as a person would
(blocks, defined blocks, repeat, defaults); the text is then compiled, and the import stands only if the compiled model has the
same layers, connections and weights as the file: anything else is an error, never a guess."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnspec import codes
from cnnspec.importing.network import Gap, ImportFailure, Network, fold_activations

__all__ = ["Gap", "ImportFailure", "Imported", "import_model"]


@dataclass
class Imported:
    text: str  # the spec, in fmt layout
    tensors: dict[str, Any]  # canonical weights
    network: Network
    spec: Any  # the compiled cnnspec.ir.Spec
    # What the spec does differently from the source, a sentence each: one line on the
    # terminal, a comment wrapped to the formatter's width in the spec.
    notes: list[str]


def read(source: str, input_size: tuple[int, int, int] | None = None) -> Network:
    """The Network in a model file, or in a PyTorch factory: `package.module:function`, or
    `path/to/file.py:function` as a user types a file's name."""
    from cnnspec.importing import torch_module

    path = Path(source)
    if not path.exists() and torch_module.is_factory(source):
        return torch_module.read(source, input_size)
    if not path.exists():
        raise ImportFailure(f"no such file: {source}")
    if path.is_dir():
        raise ImportFailure(f"{source} is a directory, not a model file")
    try:
        with path.open("rb") as stream:
            head = stream.read(8)
    except OSError as error:
        raise ImportFailure(f"cannot read {source}: {error.strerror}") from None
    suffix = path.suffix.lower()
    if head.startswith((b"PK\x03\x04", b"\x89HDF")) and suffix not in (".pt", ".pth", ".onnx"):
        from cnnspec.importing import keras_file

        return keras_file.read(path)
    if suffix == ".onnx" or (head[:1] == b"\x08" and suffix not in (".pt", ".pth")):
        from cnnspec.importing import onnx_file

        return onnx_file.read(path)
    if suffix in (".pt", ".pth"):
        raise ImportFailure(
            f"{source} is a PyTorch checkpoint, which holds weights without the network: "
            "import the module that builds it (package.module:factory --input-size HxWxC), "
            "or a torch.onnx.export of it"
        )
    raise ImportFailure(
        f"{source} is not a model file cnnspec reads: a Keras .keras or .h5 file, an ONNX "
        "file, or a PyTorch factory package.module:function or path/to/file.py:function"
    )


def import_model(source: str, input_size: tuple[int, int, int] | None = None) -> Imported:
    network = read(source, input_size)
    return import_network(network)


def import_network(network: Network) -> Imported:
    from cnnspec.compiler import compile_text
    from cnnspec.fmt import format_text
    from cnnspec.importing import structure, weights, writer

    fold_activations(network)
    notes = _probabilities(network)
    items = structure.nest(network)
    text = "".join(_comment(note) for note in notes) + writer.write(network, items)
    formatted = format_text(text)
    if formatted is None:
        raise ImportFailure(_unformatted(text, f"{network.name}.cnn"))
    compilation = compile_text(formatted, f"{network.name}.cnn")
    _classifier_or_fail(compilation)
    if not compilation.ok or compilation.spec is None:
        problems = [f"{d.span.line}: {d.message}" for d in compilation.diagnostics.errors]
        raise ImportFailure(
            "internal error: the imported spec does not check: " + "; ".join(problems[:3])
        )
    spec = compilation.spec
    _same_graph(network, spec.model)
    tensors = weights.canonical(network, spec.model)
    return Imported(formatted, tensors, network, spec, notes)


def _unformatted(text: str, path: str) -> str:
    """Why the writer's text has no fmt layout: it does not parse, or the formatter's guard
    refused its layout. A bug in cnnspec either way, said as one: the import never writes a
    spec out of the canonical layout in silence."""
    from cnnspec.diagnostics import Diagnostics
    from cnnspec.source import Source
    from cnnspec.syntax import parse

    source = Source(path, text)
    diagnostics = Diagnostics(source)
    if parse(source, diagnostics) is None:
        problems = [f"{d.span.line}: {d.message}" for d in diagnostics.errors]
        return "internal error: the imported spec does not parse: " + "; ".join(problems[:3])
    return "internal error: the formatter cannot lay out the imported spec"


def _classifier_or_fail(compilation: Any) -> None:
    """A cnnspec model is a classifier: a model that ends in features (a feature extractor,
    keras.applications without its classifier) cannot be one, and says so in one line."""
    from cnnspec.check import output_activation

    for diagnostic in compilation.diagnostics.errors:
        graph = compilation.spec.model if compilation.spec is not None else None
        output = graph.output_node if graph is not None else None
        # A loss misfit where the output applies no activation at all: features, not scores.
        linear = output is not None and output_activation(output) is None
        if diagnostic.code == codes.OUTPUT_NOT_VECTOR or (
            diagnostic.code == codes.LOSS_MISFIT and linear
        ):
            shape = graph.output_shape if graph is not None else None
            raise ImportFailure(
                f"the model ends in features {tuple(shape) if shape else ''}, not class scores: "
                "a cnnspec model is a classifier; import it with its classifier (such as "
                "include_top=True), or add one (global pooling and a dense layer) before saving"
            )


def _probabilities(network: Network) -> list[str]:
    """A cnnspec classifier outputs probabilities, and its scripts train and evaluate on them:
    a model that ends in logits (as PyTorch classifiers do) gets the softmax (or, for one
    unit, the sigmoid) that turns them into probabilities, on its last layer, and says so; one
    whose scores are a convolution's channels globally pooled (SqueezeNet's), or a
    convolution of a globally pooled map flattened (DPN's), gets a softmax layer after the
    pooling or the flatten."""
    last = network.producer().get(network.output)
    scores = _pooled_scores(network) or _flattened_scores(network)
    if scores is not None:
        return _softmax_after(network, scores)
    if last is None or last.kind not in ("dense", "conv2d") or last.args.get("activation"):
        return []
    units = last.args.get("units", last.args.get("filters"))
    activation = "sigmoid" if units == 1 else "softmax"
    last.args["activation"] = activation
    return [
        f"{last.name} outputs logits in the source; here it applies {activation}, as a cnnspec "
        f"classifier outputs probabilities: this model computes {activation}(source(x))."
    ]


_GLOBAL_POOLS = ("global_avg_pool", "global_max_pool")


def _pooled_scores(network: Network) -> Any:
    """The convolution whose channels are the class scores of a model that ends in its global
    pooling (SqueezeNet's classifier: a 1x1 convolution to one channel a class, ReLU, global
    average pooling, flatten), or None: a global pooling (or a flatten of one) of a
    convolution's output (or of activations of it), read by nothing else."""
    producer = network.producer()
    consumers = network.consumers()
    last = producer.get(network.output)
    if last is not None and last.kind == "flatten" and len(last.inputs) == 1:
        last = producer.get(last.inputs[0])
    if last is None or last.kind not in _GLOBAL_POOLS or len(last.inputs) != 1:
        return None
    from cnnspec.registry import activation_kinds

    elementwise = set(activation_kinds()) - {"softmax"}
    conv = producer.get(last.inputs[0])
    # Through the activations after the convolution (SqueezeNet's ReLU), each read once.
    while (
        conv is not None
        and conv.kind in elementwise
        and len(conv.inputs) == 1
        and len(consumers.get(conv.name, [])) == 1
    ):
        conv = producer.get(conv.inputs[0])
    if conv is None or conv.kind != "conv2d" or len(consumers.get(conv.name, [])) != 1:
        return None
    return conv


def _flattened_scores(network: Network) -> Any:
    """The convolution whose channels are the class scores of a model that ends in its
    flatten (DPN's classifier: global pooling, a 1x1 convolution, flatten), or None: a
    flatten of a convolution without an activation, read by nothing else, on a globally
    pooled map."""
    producer = network.producer()
    consumers = network.consumers()
    last = producer.get(network.output)
    if last is None or last.kind != "flatten" or len(last.inputs) != 1:
        return None
    conv = producer.get(last.inputs[0])
    if (
        conv is None
        or conv.kind != "conv2d"
        or conv.args.get("activation")
        or len(consumers.get(conv.name, [])) != 1
    ):
        return None
    pool = producer.get(conv.inputs[0])
    if pool is None or pool.kind not in _GLOBAL_POOLS:
        return None
    return conv


def _softmax_after(network: Network, conv: Any) -> list[str]:
    from cnnspec.importing.network import Layer

    filters = conv.args.get("filters")
    activation = "sigmoid" if filters == 1 else "softmax"
    taken = {layer.name for layer in network.layers}
    name, number = activation, 1
    while name in taken:
        number += 1
        name = f"{activation}_{number}"
    last = network.output
    network.layers.append(Layer(name, activation, {}, (last,), origin=f"the {activation} added"))
    network.output = name
    return [
        f"{last} outputs the class scores of {conv.name}'s channels in the source; here a "
        f"{activation} follows, as a cnnspec classifier outputs probabilities: this model "
        f"computes {activation}(source(x))."
    ]


def _comment(note: str) -> str:
    """A note as comment lines that fit the formatter's width."""
    import textwrap

    from cnnspec.fmt import WIDTH

    lines = textwrap.wrap(note, WIDTH - 2, break_long_words=False, break_on_hyphens=False)
    return "".join(f"# {line}\n" for line in lines)


def _same_graph(network: Network, graph: Any) -> None:
    """The compiled model is the network: the same layers, kinds and connections."""
    nodes = {node.name: node for node in graph.nodes}
    gaps = []
    for layer in network.layers:
        node = nodes.get(layer.name)
        if node is None:
            gaps.append(Gap(layer.origin or layer.name, "missing from the spec", "internal"))
        elif node.kind != layer.kind or set(node.inputs) != set(layer.inputs):
            gaps.append(
                Gap(
                    layer.origin or layer.name,
                    f"became {node.kind} of {node.inputs}",
                    f"expected {layer.inputs}",
                )
            )
    extra = set(nodes) - {layer.name for layer in network.layers}
    gaps += [Gap(name, "added by the spec", "internal") for name in sorted(extra)]
    if graph.output != network.output:
        gaps.append(Gap(network.output, f"the spec's output is {graph.output}", "internal"))
    if gaps:
        raise ImportFailure("internal error: the imported spec differs from the model", gaps)
