"""`cnnspec import`: an existing Keras, ONNX or PyTorch model as a spec and its weights.

A reader (keras_file, onnx_file, torch_module) turns the file into a Network: layers in
cnnspec's kinds, with the file's weights. `structure` nests its DAG the way the language does
(residuals, joins); `writer` writes it as a person would (blocks, defined blocks, repeat,
defaults); the text is then compiled, and the import stands only if the compiled model has the
same layers, connections and weights as the file: anything else is an error, never a guess."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnspec.importing.network import Gap, ImportFailure, Network, fold_activations

__all__ = ["Gap", "ImportFailure", "Imported", "import_model"]


@dataclass
class Imported:
    text: str  # the spec, in fmt layout
    tensors: dict[str, Any]  # canonical weights
    network: Network
    spec: Any  # the compiled cnnspec.ir.Spec


def read(source: str, input_size: tuple[int, int, int] | None = None) -> Network:
    """The Network in a model file, or in a PyTorch factory `package.module:function`."""
    path = Path(source)
    if not path.exists() and ":" in source and not source.startswith(("/", ".")):
        from cnnspec.importing import torch_module

        return torch_module.read(source, input_size)
    if not path.exists():
        raise ImportFailure(f"no such file: {source}")
    if path.is_dir():
        raise ImportFailure(f"{source} is a directory, not a model file")
    head = path.open("rb").read(8)
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
        "file, or a PyTorch factory package.module:function"
    )


def import_model(source: str, input_size: tuple[int, int, int] | None = None) -> Imported:
    network = read(source, input_size)
    return import_network(network)


def import_network(network: Network) -> Imported:
    from cnnspec.compiler import compile_text
    from cnnspec.fmt import format_text
    from cnnspec.importing import structure, weights, writer

    fold_activations(network)
    items = structure.nest(network)
    text = writer.write(network, items)
    formatted = format_text(text) or text
    compilation = compile_text(formatted, f"{network.name}.cnn")
    if not compilation.ok or compilation.spec is None:
        problems = [f"{d.span.line}: {d.message}" for d in compilation.diagnostics.errors]
        raise ImportFailure(
            "internal error: the imported spec does not check: " + "; ".join(problems[:3])
        )
    spec = compilation.spec
    _same_graph(network, spec.model)
    tensors = weights.canonical(network, spec.model)
    return Imported(formatted, tensors, network, spec)


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
