"""The canonical weight layout that every backend reads and writes (`weights.safetensors`).

Tensors are named `<layer>.weight`, `<layer>.bias`, `<layer>.running_mean`, `<layer>.running_var`
and have PyTorch's (and ONNX's) shapes: convolution kernels OIHW, depthwise kernels
(C * multiplier, 1, H, W), dense matrices [out, in]. One trap needs the model's shapes: Keras
flattens an (H, W, C) map in HWC order, PyTorch and ONNX in CHW order, so the weights that act
on the features of a flattened map (the next dense layer's rows, a batchnorm's vectors) are
stored in CHW order, and a channels-last backend permutes them on the way in and out.
"""

from __future__ import annotations

from cnnspec.ir import Graph
from cnnspec.layers import Dense, Flatten


def flattened_inputs(graph: Graph) -> dict[str, tuple[int, int, int]]:
    """Layers with weights over features that a flatten made from an (H, W, C) map, each mapped
    to that map's shape."""
    shapes = {graph.INPUT: graph.input_shape, **{n.name: n.output_shape for n in graph.nodes}}
    origin: dict[str, tuple[int, int, int]] = {}  # value -> the map its features came from
    result: dict[str, tuple[int, int, int]] = {}
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
        if source not in origin:
            continue
        if isinstance(node.layer, Dense):
            result[node.name] = origin[source]
        elif node.output_shape == shapes.get(source) and all(i in origin for i in node.inputs):
            # Element-wise layers keep the order: dropout, activations, batchnorm, add.
            origin[node.name] = origin[source]
            if node.params.total:
                result[node.name] = origin[source]
    return result
