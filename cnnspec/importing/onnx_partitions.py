"""MaxViT's partitioned attention in an ONNX graph, as torch.onnx.export writes torchvision's
PartitionAttentionLayer, read as the layers a spec writes for it: layer_norm,
partition_attention, add, layer_norm, dense (with its GELU), dense, add.

torchvision keeps the whole layer in the partitioned layout [B, groups, P*P, C] between its
WindowPartition and WindowDepartition (a grid's SwapAxes inside them): both LayerNorms, the
attention, the MLP and both residual adds. All but the attention act per position, so they
compute the same on the map; the reader takes the region from the partition's first Reshape
(of an NCHW map, rank 6) to the departition's last (back to the map's shape) around a Softmax
whose scores have a per-head bias (heads, N, N) added, reads its tensors (the two LayerNorms,
the four projections by their order in the graph: to_qkv (C, 3C), merge (C, C), the MLP's
(C, M) and (M, C), the bias table read back through window_index) and checks what it computes:
the region, run on a random map (onnx's reference evaluator), must give what those layers give
(numpy, below) for a partition of N positions, windows or a grid, within 1e-4 of its scale.

A region of that shape that computes none of them is refused at its Softmax, saying so; a
Softmax without it is left to the other readers (Swin's windows, ViT's attention)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from cnnspec.importing.onnx_attention import common_module
from cnnspec.importing.onnx_windows import _Graph, _NotWindows, _table
from cnnspec.runtime.rules import window_index

_WHAT_IT_IS = (
    "cnnspec reads torchvision's PartitionAttentionLayer (MaxViT) as layer_norm, "
    "partition_attention(heads, size, grid), add, layer_norm, dense(activation=gelu), dense, "
    "add: softmax(q (k / sqrt(C))^T + relative position bias) v within windows or a grid of "
    "the map, no padding"
)


@dataclass
class Found:
    """One PartitionAttentionLayer read: the map it reads, the node giving its output, its
    layers' nodes and arguments, its tensors, and its nodes."""

    source: str
    last: Any
    norms: list[tuple[Any, float, Any, Any]]
    projections: list[tuple[Any, Any, Any, str]]
    gelu: Any
    adds: list[Any]
    args: dict[str, Any]
    table: Any
    weights: list[str]
    gelu_approximate: bool = False
    members: set[int] = field(default_factory=set)


@dataclass
class Refused:
    node: Any
    what: str
    members: set[int] = field(default_factory=set)


class _Refusal(Exception):
    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def take(reader: Any, nodes: list[Any], skip: set[str]) -> tuple[dict[int, Any], set[str]]:
    """For cnnspec.importing.onnx_file's reader: the layers found in `nodes` by the node
    giving each region's output (their other nodes -> None), a refusal a gap at its Softmax;
    and the names of the Softmaxes they hold, which the other attention readers leave alone."""
    graph = _Graph(nodes, reader.constants, reader.shapes, reader.origins)
    taken: dict[int, Any] = {}
    softmaxes: set[str] = set()
    for node in nodes:
        if node.op_type != "Softmax" or node.name in skip:
            continue
        try:
            item: Found | Refused = _read(graph, node)
        except _NotWindows:
            continue
        except _Refusal as refusal:
            item = Refused(node, refusal.what, set(graph.seen))
        taken.update(dict.fromkeys(item.members))
        softmaxes.add(node.name)
        if isinstance(item, Refused):
            reader.gap(item.node, item.what, _WHAT_IT_IS)
            reader.refused.update(o for n in nodes if id(n) in item.members for o in n.output if o)
            continue
        taken[id(item.last)] = item
    return taken, softmaxes


def _rank(graph: _Graph, value: str) -> int:
    return len(graph.shapes.get(value) or [])


def _read(graph: _Graph, softmax: Any) -> Found:
    import numpy as np

    bias = graph.position_bias(softmax)
    heads, count = int(bias.shape[0]), int(bias.shape[1])
    # Forward from the Softmax to the departition's last Reshape: rank 6 back to the map.
    forward: dict[int, Any] = {id(softmax): softmax}
    queue, output = list(softmax.output), None
    while queue and len(forward) < 200:
        for user in graph.consumers.get(queue.pop(0), []):
            if id(user) in forward:
                continue
            if user.op_type == "Softmax":
                raise _NotWindows
            forward[id(user)] = user
            unpartitioned = _rank(graph, user.input[0]) == 6 and _rank(graph, user.output[0]) == 4
            if user.op_type == "Reshape" and unpartitioned:
                output = user.output[0]
                continue
            queue.extend(o for o in user.output if o)
    if output is None:
        raise _NotWindows
    # Backward from the output to the partition's first Reshape (of a map, to rank 6) that
    # is no part of the forward walk.
    members: dict[int, Any] = {}
    stack, sources = [output], set()
    while stack:
        value = stack.pop()
        node = graph.producer.get(value)
        if node is None:
            sources.add(value)
            continue
        if id(node) in members:
            continue
        members[id(node)] = node
        data = graph.data(node)
        partition = (
            node.op_type == "Reshape"
            and id(node) not in forward
            and _rank(graph, node.output[0]) == 6
            and data
            and _rank(graph, data[0]) == 4
        )
        if partition:
            sources.add(data[0])
            continue
        stack.extend(data)
        if len(members) > 400:
            raise _NotWindows
    if id(softmax) not in members or len(sources) != 1:
        raise _NotWindows
    source = sources.pop()
    shape = graph.map_shape(source)
    if shape is None or graph.map_shape(output) != shape:
        raise _NotWindows
    order = {id(n): index for index, n in enumerate(graph.nodes)}
    region = sorted(members.values(), key=lambda n: order[id(n)])
    graph.seen = set(members)
    channels, height, width = shape
    inner = {o for n in region for o in n.output if o} - {output}
    if any(id(u) not in members for v in inner for u in graph.consumers.get(v, [])):
        raise _NotWindows  # not one layer's region: left to the other readers
    norms = [n for n in region if n.op_type == "LayerNormalization"]
    projections = [graph.projection(n) for n in region if n.op_type == "MatMul"]
    weighed = [p for p in projections if p is not None]
    gelus = [n for n in region if n.op_type == "Gelu"]
    adds = [
        n
        for n in region
        if n.op_type == "Add" and len([d for d in graph.data(n) if not graph.of_constants(d)]) == 2
    ]
    if len(norms) != 2 or len(weighed) != 4 or len(gelus) != 1 or len(adds) != 2:
        # Not PartitionAttentionLayer's shape (Swin's windows): left to the other readers.
        raise _NotWindows
    qkv, merge, first, second = weighed
    hidden = first[1].shape[1]
    expected_shapes = [(channels, 3 * channels), (channels, channels), (channels, hidden)]
    if [p[1].shape for p in (qkv, merge, first)] + [second[1].shape] != [
        *expected_shapes,
        (hidden, channels),
    ] or any(p[2] is None for p in weighed):
        raise _Refusal("partitioned attention whose projections are not MaxViT's")
    if channels % heads:
        raise _Refusal(f"partitioned attention of {heads} heads on {channels} channels")
    read_norms = []
    for norm in norms:
        weight, offset = (graph.constants.get(i) for i in norm.input[1:3])
        if weight is None or offset is None:
            raise _Refusal("partitioned attention whose LayerNormalization has no constants")
        epsilon = 1e-5
        for attribute in norm.attribute:
            if attribute.name == "epsilon":
                epsilon = float(attribute.f)
        read_norms.append((norm, epsilon, np.asarray(weight), np.asarray(offset)))
    approximate = any(
        a.name == "approximate" and a.s.decode() == "tanh" for a in gelus[0].attribute
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, channels, height, width)).astype(np.float32)
    expected = graph.run(region, source, output, x)
    scale = max(1.0, float(np.abs(expected).max()))
    for size in [(h, count // h) for h in range(1, count + 1) if count % h == 0]:
        if height % size[0] or width % size[1]:
            continue
        table = _table(bias, size)
        if table is None:
            continue
        for grid in (False, True):
            actual = partition_layer(x, read_norms, weighed, table, heads, size, grid, approximate)
            if float(np.abs(actual - expected).max()) <= 1e-4 * scale:
                return Found(
                    source,
                    graph.producer[output],
                    read_norms,
                    weighed,
                    gelus[0],
                    adds,
                    {"heads": heads, "size": size, **({"grid": True} if grid else {})},
                    table,
                    [_weight_name(graph, p) for p in weighed],
                    approximate,
                    set(members),
                )
    raise _Refusal(
        f"partitioned attention of {heads} heads over {count} positions that no windows or "
        "grid compute"
    )


def add(reader: Any, found: Found) -> None:
    """The region's layers in the reader's network, named after their tensors' modules."""
    from cnnspec.importing.network import identifier

    source = reader.value(found.source)
    (norm1, eps1, w1, b1), (norm2, eps2, w2, b2) = found.norms
    qkv, merge, first, second = found.projections
    weights = found.weights

    def named(node: Any, weight: str) -> str:
        return reader.name_for(node, reader.origin(weight))

    name = named(norm1, norm1.input[1])
    reader.add(norm1, "layer_norm", {"epsilon": eps1}, [source], name)
    reader.tensors.update({f"{name}.weight": _float32(w1), f"{name}.bias": _float32(b1)})
    module = common_module(weights[:2])
    attention = reader.unique(identifier(module)) if module else reader.name_for(merge[0])
    reader.add(merge[0], "partition_attention", found.args, [name], attention)
    tensors = {
        "to_qkv.weight": qkv[1].T,
        "to_qkv.bias": qkv[2].reshape(-1),
        "merge.weight": merge[1].T,
        "merge.bias": merge[2].reshape(-1),
        "relative_position_bias_table": found.table,
    }
    for key, value in tensors.items():
        reader.tensors[f"{attention}.{key}"] = _float32(value)
    joined = reader.add(found.adds[0], "add", {}, [source, attention]).name
    name = named(norm2, norm2.input[1])
    reader.add(norm2, "layer_norm", {"epsilon": eps2}, [joined], name)
    reader.tensors.update({f"{name}.weight": _float32(w2), f"{name}.bias": _float32(b2)})
    before = name
    for projection, weight in ((first, weights[2]), (second, weights[3])):
        args: dict[str, Any] = {"units": int(projection[1].shape[1])}
        if projection is first and not found.gelu_approximate:
            args["activation"] = "gelu"
        layer = named(projection[0], weight)
        reader.add(projection[0], "dense", args, [before], layer)
        reader.tensors[f"{layer}.weight"] = _float32(projection[1].T)
        reader.tensors[f"{layer}.bias"] = _float32(projection[2].reshape(-1))
        before = layer
        if projection is first and found.gelu_approximate:
            before = reader.add(found.gelu, "gelu", {"approximate": True}, [before]).name
    last = reader.add(found.adds[1], "add", {}, [joined, before]).name
    reader.aliases[found.last.output[0]] = last


def _weight_name(graph: _Graph, projection: tuple[Any, Any, Any, str]) -> str:
    """The name of the projection's weight: the exporter's own name for the matrix
    (onnx::MatMul_838) where it lost it, else its bias's (`....to_qkv.bias`) as `.weight`."""
    if not projection[3].startswith("onnx::"):
        return projection[3]
    for user in graph.consumers.get(projection[0].output[0], []):
        for name in user.input:
            if name.endswith(".bias"):
                return name[: -len(".bias")] + ".weight"
    return projection[3]


def _float32(value: Any) -> Any:
    import numpy as np

    return np.ascontiguousarray(value, dtype=np.float32)


def partition_layer(
    x: Any,
    norms: list[tuple[Any, float, Any, Any]],
    projections: list[tuple[Any, Any, Any, str]],
    table: Any,
    heads: int,
    size: tuple[int, int],
    grid: bool,
    approximate: bool,
) -> Any:
    """torchvision's PartitionAttentionLayer on an NCHW map `x`, in numpy, as the layers a
    spec writes for it: on the map, channels-last, then back."""
    import numpy as np

    def norm(value: Any, which: int) -> Any:
        _, epsilon, weight, offset = norms[which]
        mean = value.mean(-1, keepdims=True)
        variance = ((value - mean) ** 2).mean(-1, keepdims=True)
        return (value - mean) / np.sqrt(variance + epsilon) * weight.reshape(-1) + offset.reshape(
            -1
        )

    def dense(value: Any, which: int) -> Any:
        _, weight, bias, _ = projections[which]
        return value @ weight + bias.reshape(-1)

    y = x.transpose(0, 2, 3, 1)
    attended = y + partition_attention(norm(y, 0), projections, table, heads, size, grid)
    hidden = dense(norm(attended, 1), 2)
    if approximate:
        hidden = (
            0.5 * hidden * (1 + np.tanh(math.sqrt(2 / math.pi) * (hidden + 0.044715 * hidden**3)))
        )
    else:
        erf = np.vectorize(math.erf, otypes=[np.float64])
        hidden = 0.5 * hidden * (1 + erf(hidden / math.sqrt(2)))
    out = attended + dense(hidden, 3)
    return out.transpose(0, 3, 1, 2)


def partition_attention(
    x: Any,
    projections: list[tuple[Any, Any, Any, str]],
    table: Any,
    heads: int,
    size: tuple[int, int],
    grid: bool,
) -> Any:
    """partition_attention on a channels-last map `x` (B, H, W, C), in numpy, its
    projections' matrices as the graph holds them ((inputs, outputs))."""
    import numpy as np

    batch, height, width, dim = x.shape
    (ph, pw), count, head = size, size[0] * size[1], dim // heads
    gh, gw = height // ph, width // pw
    if grid:
        split, perm, back = (ph, gh, pw, gw), (0, 2, 4, 1, 3, 5), (0, 3, 1, 4, 2, 5)
    else:
        split, perm, back = (gh, ph, gw, pw), (0, 1, 3, 2, 4, 5), (0, 1, 3, 2, 4, 5)
    tokens = x.reshape(batch, *split, dim).transpose(perm).reshape(-1, count, dim)
    qkv_weight, qkv_bias = projections[0][1], projections[0][2].reshape(-1)
    qkv = (tokens @ qkv_weight + qkv_bias).reshape(-1, count, 3, heads, head)
    query, key, value = qkv.transpose(2, 0, 3, 1, 4)
    bias = table[np.asarray(window_index(size))].reshape(count, count, heads)
    scores = query @ (key * dim**-0.5).transpose(0, 1, 3, 2) + bias.transpose(2, 0, 1)
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    weights = scores / scores.sum(-1, keepdims=True)
    y = (weights @ value).transpose(0, 2, 1, 3).reshape(-1, count, dim)
    y = y @ projections[1][1] + projections[1][2].reshape(-1)
    y = y.reshape(batch, gh, gw, ph, pw, dim).transpose(back)
    return y.reshape(batch, height, width, dim)
