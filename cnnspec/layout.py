"""The canonical weight layout that every backend reads and writes (`weights.safetensors`), and
the order of flattened features between the backends.

Tensors are named `<layer>.weight`, `<layer>.bias`, `<layer>.running_mean`, `<layer>.running_var`
and have PyTorch's (and ONNX's) shapes: convolution kernels OIHW, depthwise kernels
(C * multiplier, 1, H, W), dense matrices [out, in]. One trap needs the model's shapes: Keras
flattens an (H, W, C) map in HWC order, PyTorch and ONNX in CHW order, so the weights that act
on the features of a flattened map (the next dense layer's rows, a batchnorm's vectors) are
stored in CHW order, and a channels-last backend permutes them on the way in and out.

Between the flatten and those weights, the order passes only through layers whose entries
declare themselves element-wise (`LayerArgs.elementwise`: activations, dropout, batchnorm, add,
...), and through a join only when all its inputs carry the same order. Any other use of such a
vector sees the features' positions, not only their values: a reshape (which orders elements as
Keras does), a concat, a join with a vector in natural order, a kind that moves values between
positions, the model's output. PyTorch and ONNX put the vector in Keras's HWC order before such
a use (`FlattenedLayout.reorders`, `FlattenedLayout.output`), so every backend computes Keras's
function; what follows that use is in natural order and needs no permuted weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cnnspec.ir import Graph
from cnnspec.layers import Dense, Flatten

Map = tuple[int, int, int]


@dataclass(frozen=True)
class FlattenedLayout:
    """Where the features of a flattened (H, W, C) map, in CHW order in PyTorch and ONNX and in
    HWC order in Keras, meet a layer. Each map is given as its (H, W, C) shape."""

    # Layers whose weights act on such features: their canonical weights are in CHW order.
    weights: dict[str, Map] = field(default_factory=dict)
    # node -> {input index: map}: inputs that PyTorch and ONNX put in HWC order (Keras's)
    # before the node uses them. Only maps whose two orders differ are named.
    reorders: dict[str, dict[int, Map]] = field(default_factory=dict)
    # The model's output is such a vector: PyTorch and ONNX return it in HWC order.
    output: Map | None = None


def flattened_layout(graph: Graph) -> FlattenedLayout:
    """The layers with weights over flattened features, and the uses of such features that need
    Keras's order first: any layer other than a dense layer (whose weights are permuted
    instead), a flatten (of a vector: it changes nothing) and an element-wise layer that keeps
    the shape and whose inputs all carry the same order (which carries it on)."""
    shapes = {graph.INPUT: graph.input_shape, **{n.name: n.output_shape for n in graph.nodes}}
    origin: dict[str, Map] = {}  # value -> the map its features came from, in CHW order
    weights: dict[str, Map] = {}
    reorders: dict[str, dict[int, Map]] = {}

    def order(value: str) -> Map | None:
        """The map whose CHW order `value` holds, where it differs from HWC."""
        shape = origin.get(value)
        return shape if shape is not None and _reordered(shape) else None

    for node in graph.nodes:
        if not node.inputs:
            continue
        source = node.inputs[0]
        if isinstance(node.layer, Flatten):
            shape = shapes.get(source)
            if shape is not None and len(shape) == 3:
                origin[node.name] = (shape[0], shape[1], shape[2])
            elif source in origin:  # flattening a vector changes nothing
                origin[node.name] = origin[source]
            continue
        if not any(i in origin for i in node.inputs):
            continue
        if isinstance(node.layer, Dense):
            weights[node.name] = origin[source]
            continue
        orders = [order(i) for i in node.inputs]
        if (
            node.layer.elementwise
            and node.output_shape == shapes.get(source)
            and all(i in origin for i in node.inputs)
            and len(set(orders)) == 1
        ):
            origin[node.name] = origin[source]
            if node.params.total:
                weights[node.name] = origin[source]
            continue
        moved = {index: shape for index, shape in enumerate(orders) if shape is not None}
        if moved:
            reorders[node.name] = moved
    output = order(graph.output) if graph.output else None
    return FlattenedLayout(weights, reorders, output)


def flattened_inputs(graph: Graph) -> dict[str, Map]:
    """Layers with weights over features that a flatten made from an (H, W, C) map, each mapped
    to that map's shape (`FlattenedLayout.weights`)."""
    return flattened_layout(graph).weights


def _reordered(shape: Map) -> bool:
    """Whether HWC and CHW order the features of a map of `shape` differently."""
    height, width, channels = shape
    return height * width > 1 and channels > 1
