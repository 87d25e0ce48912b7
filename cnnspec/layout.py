"""The canonical weight layout that every backend reads and writes (`weights.safetensors`).

Tensors are named `<layer>.weight`, `<layer>.bias`, `<layer>.running_mean`, `<layer>.running_var`
and have PyTorch's (and ONNX's) shapes: convolution kernels OIHW, depthwise kernels
(C * multiplier, 1, H, W), dense matrices [out, in]. One trap needs the model's shapes: Keras
flattens an (H, W, C) map in HWC order, PyTorch and ONNX in CHW order, so the weights that act
on the features of a flattened map (the next dense layer's rows, a batchnorm's vectors) are
stored in CHW order, and a channels-last backend permutes them on the way in and out.

Between the flatten and those weights, the order passes only through layers whose entries
declare themselves element-wise (`LayerArgs.elementwise`: activations, dropout, batchnorm, add,
...). A layer that keeps the shape without that declaration may move values between positions
(a shuffle): the order after it is unknown, and weights that it reaches are a LayoutError rather
than a guess.
"""

from __future__ import annotations

from cnnspec.ir import Graph, Node
from cnnspec.layers import Dense, Flatten


class LayoutError(Exception):
    """Weights over flattened features reached through a layer whose entry does not declare
    what it does to their order: their Keras layout cannot be decided."""


def flattened_inputs(graph: Graph) -> dict[str, tuple[int, int, int]]:
    """Layers with weights over features that a flatten made from an (H, W, C) map, each mapped
    to that map's shape. LayoutError when such weights lie past a shape-keeping layer that
    is not declared element-wise, and the order matters (the map has more than one position
    and more than one channel)."""
    shapes = {graph.INPUT: graph.input_shape, **{n.name: n.output_shape for n in graph.nodes}}
    origin: dict[str, tuple[int, int, int]] = {}  # value -> the map its features came from
    # value -> the undeclared layer after which its order is unknown
    unknown: dict[str, Node] = {}
    result: dict[str, tuple[int, int, int]] = {}
    for node in graph.nodes:
        if not node.inputs:
            continue
        source = node.inputs[0]
        keeps_shape = node.output_shape == shapes.get(source)
        blocker = next((unknown[i] for i in node.inputs if i in unknown), None)
        if blocker is not None:
            if node.params.total:
                raise LayoutError(_undecided(blocker, node, origin[blocker.inputs[0]]))
            if keeps_shape or isinstance(node.layer, Flatten):
                unknown[node.name] = blocker
            continue
        if isinstance(node.layer, Flatten):
            shape = shapes.get(source)
            if shape is not None and len(shape) == 3:
                origin[node.name] = (shape[0], shape[1], shape[2])
            elif source in origin:  # flattening a vector changes nothing
                origin[node.name] = origin[source]
            continue
        if source not in origin:
            continue
        if isinstance(node.layer, Dense):
            result[node.name] = origin[source]
        elif keeps_shape and all(i in origin for i in node.inputs):
            if node.layer.elementwise:
                origin[node.name] = origin[source]
                if node.params.total:
                    result[node.name] = origin[source]
            elif _reordered(origin[source]):
                unknown[node.name] = node
    return result


def _reordered(shape: tuple[int, int, int]) -> bool:
    """Whether HWC and CHW order the features of a map of `shape` differently."""
    height, width, channels = shape
    return height * width > 1 and channels > 1


def _undecided(blocker: Node, node: Node, shape: tuple[int, int, int]) -> str:
    h, w, c = shape
    return (
        f"layer {blocker.name} ({blocker.kind}) keeps the shape of features flattened from a "
        f"{h}x{w}x{c} map, but its entry does not declare itself element-wise, so the order "
        f"of those features after it (HWC in Keras, CHW in the canonical weights) is unknown "
        f"and the weights of {node.name} ({node.kind}) cannot be laid out: declare "
        f"`elementwise: ClassVar[bool] = True` on the {blocker.kind} entry if it computes "
        "each position from the same position"
    )
