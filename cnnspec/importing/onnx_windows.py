"""A Swin Transformer's windows in an ONNX graph, as torch.onnx.export writes torchvision's
ShiftedWindowAttention and PatchMerging on channels-last maps, read as `window_attention` and
`patch_merge` layers.

The exporter writes a shifted-window attention as some hundred ops: the pad to whole windows
(a Pad whose amounts are shape arithmetic), the cyclic shift (Slices and Concats), the windows
cut out (Reshape, Transpose), the projections, the scores with the relative-position bias and
the shift mask added (both computed from constants, which cnnspec.importing.onnx_fold folds),
and all of it backwards after the output projection. Rather than a pattern of those ops, the
reader finds the region around each Softmax whose scores have a per-head bias (heads, N, N)
added, and checks what it computes:

- forward from the Softmax, the ops that move values, project them or join them, fed by
  the region alone, up to the one value used outside: the output, a map (1, H, W, C);
- backward from the query/key/value projection, the ops that move values, to the map they
  start from: the input, of the output's shape (channels-last, as the reader requires);
- the region's tensors: the two projections (MatMul then Add of a bias: (C, 3C) and (C, C))
  and the bias, from which the relative-position table is read back through torchvision's
  index (every row of the table appears in it);
- the region, run on a random map (onnx's reference evaluator), must give what
  window_attention(heads, size, shift) gives with those tensors, for a window size whose
  N positions the bias has, and a shift (the half-window shift first): within 1e-4 of its
  scale.

A patch merging is a Concat of four Slices (or Slices of Slices) of one map, padded or not,
which, run on the map's positions numbered, puts them where patch_merge does.

A region with a per-head bias that computes no window_attention is refused at its Softmax,
saying so; one without that shape is left to the other readers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cnnspec.runtime.rules import window_index, window_mask, window_shift

# The ops that move values along the way (and the cyclic shift's joins, the pad).
_MOVES = frozenset(
    {
        "Reshape",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Gather",
        "Slice",
        "Flatten",
        "Identity",
        "Dropout",
        "Concat",
        "Pad",
    }
)
# The ops of the output projection, after the values are weighed.
_PROJECTION = frozenset({"MatMul", "Add", "Gemm"})
# The opset the region is run at (torch.onnx's export, cnnspec.importing.torch_module's).
_OPSET = 20

_WHAT_IT_IS = (
    "cnnspec's window_attention is torchvision's ShiftedWindowAttention: the map padded to "
    "whole windows and rolled by the shift, softmax(q k^T / sqrt(head size) + relative "
    "position bias + shift mask) v within each window, projected, rolled back"
)


@dataclass
class Found:
    """One layer read: its kind and arguments, the map it reads, the node giving its output,
    its tensors, the module its weights name, and its nodes."""

    kind: str
    args: dict[str, Any]
    source: str
    last: Any
    tensors: dict[str, Any]
    module: str
    members: set[int] = field(default_factory=set)


@dataclass
class Refused:
    node: Any
    what: str
    why: str
    members: set[int] = field(default_factory=set)


class _NotWindows(Exception):
    """Not a window attention's shape: left to the other readers."""


class _Refusal(Exception):
    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def find(
    nodes: list[Any],
    constants: dict[str, Any],
    shapes: dict[str, list[Any]],
    origins: dict[str, str],
    skip: set[str],
) -> list[Found | Refused]:
    """Every window attention and patch merging in `nodes` (the computed ones: folded nodes
    left out), read or refused; the nodes named in `skip` (cnnspec's own export, read by its
    step names) aside."""
    graph = _Graph(nodes, constants, shapes, origins)
    found: list[Found | Refused] = []
    for node in nodes:
        if node.name in skip:
            continue
        if node.op_type == "Softmax":
            try:
                found.append(graph.attention(node))
            except _NotWindows:
                continue
            except _Refusal as refusal:
                found.append(Refused(node, refusal.what, _WHAT_IT_IS, graph.seen))
        elif node.op_type == "Concat":
            merged = graph.patch_merge(node)
            if merged is not None:
                found.append(merged)
    return found


class _Graph:
    def __init__(
        self,
        nodes: list[Any],
        constants: dict[str, Any],
        shapes: dict[str, list[Any]],
        origins: dict[str, str],
    ) -> None:
        self.nodes = nodes
        self.constants = constants
        self.shapes = shapes
        self.origins = origins
        self.producer = {out: node for node in nodes for out in node.output if out}
        self.consumers: dict[str, list[Any]] = {}
        for node in nodes:
            for value in node.input:
                if value:
                    self.consumers.setdefault(value, []).append(node)
        self.seen: set[int] = set()
        # Values by whether they are computed from constants alone (see `of_constants`).
        self.computed: dict[str, bool] = {}

    def data(self, node: Any) -> list[str]:
        return [i for i in node.input if i and i not in self.constants]

    def map_shape(self, value: str) -> tuple[int, int, int] | None:
        shape = self.shapes.get(value)
        if not shape or len(shape) != 4 or shape[0] != 1 or not all(shape[1:]):
            return None
        return int(shape[1]), int(shape[2]), int(shape[3])

    # ---- window attention

    def attention(self, softmax: Any) -> Found:
        import numpy as np

        bias = self.position_bias(softmax)
        self.seen = {id(softmax)}
        heads, count = int(bias.shape[0]), int(bias.shape[1])
        forward = self.forward(softmax)
        outputs = [
            out
            for node in forward
            for out in node.output
            if any(id(user) not in {id(n) for n in forward} for user in self.consumers.get(out, []))
        ]
        if len(outputs) != 1:
            raise _NotWindows
        output = outputs[0]
        matmuls = [n for n in forward if n.op_type in ("MatMul", "Gemm")]
        if not matmuls:
            raise _NotWindows
        region = self.region(output, softmax)
        self.seen = {id(n) for n in region}
        projections = [self.projection(n) for n in region if n.op_type in ("MatMul", "Gemm")]
        weighed = [p for p in projections if p is not None]
        if len(weighed) != 2:
            raise _Refusal(f"windowed attention with {len(weighed)} projections, not 2")
        qkv, proj = sorted(weighed, key=lambda p: -p[1].shape[1])
        source = self.source(region, qkv[0])
        shape = self.map_shape(source)
        if shape is None or self.map_shape(output) != shape:
            raise _Refusal(
                f"windowed attention from {self.shapes.get(source)} to {self.shapes.get(output)}"
            )
        height, width, dim = shape
        if qkv[1].shape != (dim, 3 * dim) or proj[1].shape != (dim, dim):
            raise _Refusal(
                f"windowed attention's projections {qkv[1].shape} and {proj[1].shape} on "
                f"{dim} channels"
            )
        if qkv[2] is None or proj[2] is None:
            raise _Refusal("windowed attention without a bias on a projection")
        if dim % heads:
            raise _Refusal(f"windowed attention of {heads} heads on {dim} channels")
        rng = np.random.default_rng(0)
        x = rng.standard_normal((1, height, width, dim)).astype(np.float32)
        expected = self.run(region, source, output, x)
        tensors = {
            "qkv.weight": np.ascontiguousarray(qkv[1].T, dtype=np.float32),
            "qkv.bias": np.asarray(qkv[2], dtype=np.float32).reshape(-1),
            "proj.weight": np.ascontiguousarray(proj[1].T, dtype=np.float32),
            "proj.bias": np.asarray(proj[2], dtype=np.float32).reshape(-1),
        }
        scale = max(1.0, float(np.abs(expected).max()))
        for size, shift in _candidates(count, (height, width)):
            table = _table(bias, size)
            if table is None:
                continue
            tensors["relative_position_bias_table"] = table
            actual = window_attention(x, tensors, heads, size, shift)
            if float(np.abs(actual - expected).max()) <= 1e-4 * scale:
                module = _common_module([qkv[3], proj[3]])
                args = {"heads": heads, "size": size, "shift": shift}
                return Found(
                    "window_attention",
                    args,
                    source,
                    self.producer[output],
                    dict(tensors),
                    module,
                    set(self.seen),
                )
        raise _Refusal(
            f"windowed attention of {heads} heads over {count} positions that no window size "
            "and shift compute"
        )

    def position_bias(self, softmax: Any) -> Any:
        """The per-head bias (heads, N, N) added to the scores before `softmax`."""
        import numpy as np

        value = softmax.input[0]
        for _ in range(8):
            node = self.producer.get(value)
            if node is None:
                break
            if node.op_type == "Add":
                for i in node.input:
                    constant = self.constants.get(i)
                    if constant is None:
                        continue
                    array = np.asarray(constant)
                    while array.ndim > 3 and array.shape[0] == 1:
                        array = array[0]
                    if array.ndim == 3 and array.shape[1] == array.shape[2]:
                        return array
            # The shift mask's Add: of a value computed from constants that the folding
            # left (torchvision's masked_fill), which the region computes.
            data = [d for d in self.data(node) if not self.of_constants(d)]
            if node.op_type not in ("Add", "Reshape", "Mul", "Div") or len(data) != 1:
                break
            value = data[0]
        raise _NotWindows

    def of_constants(self, value: str) -> bool:
        """Whether `value` is computed from constants alone (but was not folded): walked
        back without recursion, each value's answer kept for the next question."""
        known = self.computed
        stack = [value]
        while stack:
            current = stack[-1]
            if current in known:
                stack.pop()
                continue
            node = self.producer.get(current)
            if node is None:  # the graph's input
                known[current] = False
                stack.pop()
                continue
            pending = [d for d in self.data(node) if d not in known]
            if pending:
                stack.extend(pending)
                continue
            known[current] = all(known[d] for d in self.data(node))
            stack.pop()
        return known[value]

    def forward(self, softmax: Any) -> list[Any]:
        """From the Softmax on: the ops that weigh the values, move them, project them or join
        them, each fed by the ones before (or, the weighing, by the values)."""
        taken = [softmax]
        produced = set(softmax.output)
        changed = True
        while changed:
            changed = False
            for value in list(produced):
                for user in self.consumers.get(value, []):
                    if user in taken or user.op_type not in _MOVES | _PROJECTION:
                        continue
                    data = self.data(user)
                    inside = [d for d in data if d in produced]
                    # The weighing of the values (MatMul of the weights and v) takes one
                    # value from outside; every other op takes the region's alone.
                    weighing = user.op_type == "MatMul" and len(taken) == 1
                    if len(inside) != len(data) and not weighing:
                        continue
                    if user.op_type == "Add" and len(data) != 1:
                        continue  # a residual join, past the output
                    taken.append(user)
                    produced.update(o for o in user.output if o)
                    changed = True
        return taken

    def region(self, output: str, softmax: Any) -> list[Any]:
        """Every computed node `output` depends on, back to the map the query/key/value
        projection reads (found on the way: the first map (1, H, W, C) of the output's shape
        before a move)."""
        shape = self.map_shape(output)
        members: dict[int, Any] = {}
        stack = [output]
        order = {id(n): index for index, n in enumerate(self.nodes)}
        while stack:
            value = stack.pop()
            node = self.producer.get(value)
            if node is None or id(node) in members:
                continue
            if self.map_shape(value) == shape and value != output and self.outside(node):
                continue
            members[id(node)] = node
            stack.extend(self.data(node))
        if id(softmax) not in members:
            raise _NotWindows
        # The nodes of the mask's arithmetic that feed nothing the reader reads (Slices
        # whose sizes only a folded Shape asked for): the region's too.
        produced = {out for node in members.values() for out in node.output}
        extra: dict[int, Any] = {}
        queue = list(produced)
        while queue:
            for user in self.consumers.get(queue.pop(), []):
                if id(user) in members or id(user) in extra:
                    continue
                data = self.data(user)
                if all(d in produced and self.of_constants(d) for d in data):
                    extra[id(user)] = user
                    produced.update(o for o in user.output if o)
                    queue.extend(o for o in user.output if o)
        pruned = True
        while pruned:
            pruned = False
            for key, node in list(extra.items()):
                users = [u for o in node.output for u in self.consumers.get(o, [])]
                if any(id(u) not in members and id(u) not in extra for u in users):
                    del extra[key]
                    pruned = True
        members.update(extra)
        return sorted(members.values(), key=lambda n: order[id(n)])

    def outside(self, node: Any) -> bool:
        """Whether `node` gives a map from outside a window attention: not a move (a norm, a
        join) or a move of something else than the attention's values."""
        return node.op_type not in _MOVES

    def source(self, region: list[Any], qkv_node: Any) -> str:
        produced = {out for node in region for out in node.output}
        leaves = {d for node in region for d in self.data(node) if d not in produced}
        if len(leaves) != 1:
            raise _Refusal(f"windowed attention of {len(leaves)} inputs")
        return leaves.pop()

    def projection(self, node: Any) -> tuple[Any, Any, Any, str] | None:
        """A MatMul by a constant (inputs, outputs) matrix and the Add of its bias: (the
        MatMul, the matrix, the bias or None, the weight's name)."""
        import numpy as np

        weight = self.constants.get(node.input[1]) if len(node.input) > 1 else None
        if node.op_type != "MatMul" or weight is None or np.asarray(weight).ndim != 2:
            return None
        bias = None
        users = self.consumers.get(node.output[0], [])
        if len(users) == 1 and users[0].op_type == "Add":
            others = [i for i in users[0].input if i != node.output[0]]
            if others and others[0] in self.constants:
                candidate = np.asarray(self.constants[others[0]])
                if candidate.size == np.asarray(weight).shape[1]:
                    bias = candidate
        name = self.origins.get(node.input[1], node.input[1])
        return node, np.asarray(weight), bias, name

    def run(self, region: list[Any], source: str, output: str, x: Any) -> Any:
        """What the region computes from `x` at `source` (onnx's reference evaluator)."""
        import numpy as np
        from onnx import TensorProto, helper, numpy_helper
        from onnx.reference import ReferenceEvaluator

        needed = {i for node in region for i in node.input if i in self.constants}
        initializers = [
            numpy_helper.from_array(np.asarray(self.constants[name]), name) for name in needed
        ]
        graph = helper.make_graph(
            list(region),
            "region",
            [helper.make_tensor_value_info(source, TensorProto.FLOAT, list(x.shape))],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
            initializers,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
        try:
            result = ReferenceEvaluator(model).run(None, {source: x})[0]  # type: ignore[index]
        except (ValueError, TypeError, KeyError, IndexError, RuntimeError) as error:
            # An op the reference evaluator cannot run as written (an older opset's form).
            raise _Refusal(f"windowed attention the reader cannot run: {error}") from None
        return np.asarray(result)

    # ---- patch merging

    def patch_merge(self, concat: Any) -> Found | None:
        """A Concat of four strided Slices of one map (padded to even sizes or not), in
        patch_merge's order; None for any other Concat."""
        import numpy as np

        data = self.data(concat)
        if len(data) != 4 or len(data) != len(concat.input):
            return None
        members: list[Any] = [concat]
        sources = set()
        for value in data:
            node = self.producer.get(value)
            while node is not None and node.op_type == "Slice":
                members.append(node)
                value = node.input[0]
                node = self.producer.get(value)
            sources.add(value)
        if len(sources) != 1:
            return None
        source = sources.pop()
        node = self.producer.get(source)
        if node is not None and node.op_type == "Pad" and len(self.consumers[source]) <= 4:
            members.append(node)
            source = node.input[0]
        shape = self.map_shape(source)
        if shape is None or len(members) < 5:
            return None
        height, width, channels = shape
        if self.map_shape(concat.output[0]) != (-(-height // 2), -(-width // 2), 4 * channels):
            return None
        inner = {out for n in members for out in n.output} - {concat.output[0]}
        if any(
            id(user) not in {id(n) for n in members}
            for value in inner
            for user in self.consumers.get(value, [])
        ):
            return None
        order = {id(n): index for index, n in enumerate(self.nodes)}
        region = sorted({id(n): n for n in members}.values(), key=lambda n: order[id(n)])
        numbers = (np.arange(height * width * channels, dtype=np.float32) + 1).reshape(
            1, height, width, channels
        )
        try:
            result = self.run(region, source, concat.output[0], numbers)
        except _Refusal:
            return None
        if result.shape != (1, -(-height // 2), -(-width // 2), 4 * channels):
            return None
        if not np.array_equal(result, patch_merge(numbers)):
            return None
        return Found("patch_merge", {}, source, concat, {}, "", {id(n) for n in region})


def take(reader: Any, nodes: list[Any], skip: set[str]) -> tuple[dict[int, Found | None], set[str]]:
    """For cnnspec.importing.onnx_file's reader: the layers found in `nodes` by the node
    giving each one's output (their other nodes -> None), a refusal a gap at its Softmax
    whose nodes are read no further; and the names of the Softmaxes they hold, which the
    other attention reader then leaves alone."""
    taken: dict[int, Found | None] = {}
    softmaxes: set[str] = set()
    for item in find(nodes, reader.constants, reader.shapes, reader.origins, skip):
        taken.update(dict.fromkeys(item.members))
        softmaxes.update(n.name for n in nodes if id(n) in item.members and n.op_type == "Softmax")
        if isinstance(item, Refused):
            reader.gap(item.node, item.what, item.why)
            reader.refused.update(o for n in nodes if id(n) in item.members for o in n.output if o)
            continue
        taken[id(item.last)] = item
    return taken, softmaxes


def add(reader: Any, found: Found) -> None:
    """The layer `found` in the reader's network: named after its module (or its output's
    node), its tensors `<layer>.<tensor>`, its output channels-last as its input must be."""
    from cnnspec.importing.network import identifier

    source = reader.value(found.source)
    if found.source not in reader.channels_last:
        reader.gap(
            found.last,
            f"{found.kind} of a channels-first map",
            f"cnnspec's {found.kind} reads a map permuted channels-last, as torchvision's Swin "
            "holds it",
        )
        return
    module = identifier(found.module)
    name = reader.unique(module) if module else reader.name_for(found.last)
    reader.add(found.last, found.kind, found.args, [source], name)
    reader.channels_last.add(found.last.output[0])
    for key, value in found.tensors.items():
        reader.tensors[f"{name}.{key}"] = value


def _candidates(count: int, size: tuple[int, int]) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """The window sizes of `count` positions and their shifts, the likeliest first: square
    windows, no shift and half a window (Swin's), then every other shift (those the map's
    padded size leaves applied)."""
    windows = [(h, count // h) for h in range(1, count + 1) if count % h == 0]
    windows.sort(key=lambda w: abs(w[0] - w[1]))
    found = []
    for window in windows:
        shifts = [(0, 0), (window[0] // 2, window[1] // 2)]
        shifts += [(a, b) for a in range(window[0]) for b in range(window[1])]
        seen = set()
        for shift in shifts:
            applied = window_shift(size, window, shift)
            if applied not in seen:
                seen.add(applied)
                found.append((window, applied))
    return found


def _table(bias: Any, size: tuple[int, int]) -> Any:
    """The relative-position table behind `bias` (heads, N, N) for windows of `size`: each
    row where torchvision's index puts it; None where the bias is no such table's."""
    import numpy as np

    heads, count = bias.shape[0], size[0] * size[1]
    if bias.shape[1] != count:
        return None
    index = np.asarray(window_index(size))
    rows = (2 * size[0] - 1) * (2 * size[1] - 1)
    table = np.zeros((rows, heads), dtype=np.float32)
    table[index] = bias.reshape(heads, count * count).T
    if not np.array_equal(table[index], bias.reshape(heads, count * count).T):
        return None
    return table


def window_attention(
    x: Any, tensors: dict[str, Any], heads: int, size: tuple[int, int], shift: tuple[int, int]
) -> Any:
    """window_attention on a channels-last map `x` (B, H, W, C), in numpy: torchvision's
    shifted_window_attention, `shift` the one applied."""
    import numpy as np

    batch, height, width, dim = x.shape
    (wh, ww), (sh, sw) = size, shift
    ph, pw = -(-height // wh) * wh, -(-width // ww) * ww
    count, head = wh * ww, dim // heads
    x = np.pad(x, ((0, 0), (0, ph - height), (0, pw - width), (0, 0)))
    x = np.roll(x, (-sh, -sw), (1, 2))
    x = x.reshape(batch, ph // wh, wh, pw // ww, ww, dim).transpose(0, 1, 3, 2, 4, 5)
    x = x.reshape(-1, count, dim)
    qkv = x @ tensors["qkv.weight"].T + tensors["qkv.bias"]
    qkv = qkv.reshape(-1, count, 3, heads, head).transpose(2, 0, 3, 1, 4)
    query, key, value = qkv[0] * head**-0.5, qkv[1], qkv[2]
    index = np.asarray(window_index(size))
    bias = tensors["relative_position_bias_table"][index].reshape(count, count, heads)
    scores = query @ key.transpose(0, 1, 3, 2) + bias.transpose(2, 0, 1)
    if sh or sw:
        mask = np.asarray(window_mask((ph, pw), size, (sh, sw)), np.float32)
        mask = mask.reshape(1, -1, 1, count, count)
        scores = scores.reshape(batch, -1, heads, count, count) + mask
        scores = scores.reshape(-1, heads, count, count)
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    weights = scores / scores.sum(-1, keepdims=True)
    y = (weights @ value).transpose(0, 2, 1, 3).reshape(-1, count, dim)
    y = y @ tensors["proj.weight"].T + tensors["proj.bias"]
    y = y.reshape(batch, ph // wh, pw // ww, wh, ww, dim).transpose(0, 1, 3, 2, 4, 5)
    y = np.roll(y.reshape(batch, ph, pw, dim), (sh, sw), (1, 2))
    return y[:, :height, :width]


def patch_merge(x: Any) -> Any:
    """patch_merge on a channels-last map (B, H, W, C), in numpy."""
    import numpy as np

    x = np.pad(x, ((0, 0), (0, x.shape[1] % 2), (0, x.shape[2] % 2), (0, 0)))
    parts = [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]]
    return np.concatenate(parts, -1)


def _common_module(names: list[str]) -> str:
    """The dotted prefix the weights' names share (`features.1.0.attn`)."""
    parts = [name.split(".")[:-1] for name in names]
    common: list[str] = []
    for pieces in zip(*parts, strict=False):
        if len(set(pieces)) != 1:
            break
        common.append(pieces[0])
    return ".".join(common)
