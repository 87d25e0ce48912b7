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

Swin V2's attention (torchvision's ShiftedWindowAttentionV2) is read the same way: its bias,
16 * sigmoid of the cpb_mlp on the fixed coordinates table gathered by the index, and its
scale, exp of the clamped logit_scale, are computed from the region's initializers by ops the
folding leaves (MatMul, Relu, Sigmoid, Clip; the key bias zeroed by a ScatterND), which the
reader evaluates (onnx's reference evaluator again). The cpb_mlp's tensors are the
initializers the bias is computed from ((512, 2), (512,), (heads, 512)), the logit_scale
the (heads, 1, 1) one the scale is; qkv.bias is torchvision's whole tensor (its key third
unused) where the zeroed one is computed from it. window_attention(heads, size, shift,
version=2) with those tensors must then compute what the region computes, as above.

A patch merging is a Concat of four Slices (or Slices of Slices) of one map, padded or not,
which, run on the map's positions numbered, puts them where patch_merge does.

A region with a per-head bias that computes no window_attention is refused at its Softmax,
saying so; one without that shape is left to the other readers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cnnspec.importing.onnx_attention import common_module
from cnnspec.runtime.rules import window_coords, window_index, window_mask, window_shift

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
    "position bias + shift mask) v within each window, projected, rolled back; version=2 is "
    "torchvision's ShiftedWindowAttentionV2 (cosine attention, the bias from cpb_mlp)"
)
# Swin V2's bias MLP's hidden width (cnnspec.layers.windows.CPB_HIDDEN, not imported: that
# module is the registry's, and this one the importer's) and its logit_scale's clamp.
_CPB_HIDDEN = 512
_LOGIT_MAX = 4.605170185988092  # log(100)


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
        # Those values, evaluated (see `evaluate`).
        self.evaluated: dict[str, Any] = {}
        # The value `position_bias` found last.
        self.bias_name = ""

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
        # The projections of the map's values, not the bias MLP's of constants (Swin V2's).
        projections = [
            self.projection(n)
            for n in region
            if n.op_type in ("MatMul", "Gemm") and not self.of_constants(n.output[0])
        ]
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
        v2 = self.version_2(region, qkv, heads, tensors["qkv.bias"])
        if v2 is not None:
            tensors.update(v2)
        scale = max(1.0, float(np.abs(expected).max()))
        for size, shift in _candidates(count, (height, width)):
            if v2 is None:
                table = _table(bias, size)
                if table is None:
                    continue
                tensors["relative_position_bias_table"] = table
            elif 1 in size or not _same(cpb_bias(tensors, size), bias):
                continue
            version = 1 if v2 is None else 2
            actual = window_attention(x, tensors, heads, size, shift, version)
            if float(np.abs(actual - expected).max()) <= 1e-4 * scale:
                module = common_module([qkv[3], proj[3]])
                args = {"heads": heads, "size": size, "shift": shift}
                return Found(
                    "window_attention",
                    {**args, "version": 2} if version == 2 else args,
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
                    # A folded bias (V1's table gathered), or one the folding left (V2's MLP).
                    constant = self.constants.get(i)
                    if constant is None and i and self.of_constants(i):
                        constant = self.evaluate(i)
                    if constant is None:
                        continue
                    array = np.asarray(constant)
                    while array.ndim > 3 and array.shape[0] == 1:
                        array = array[0]
                    if array.ndim == 3 and array.shape[1] == array.shape[2]:
                        self.bias_name = i
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
            known = others and (others[0] in self.constants or self.of_constants(others[0]))
            value = self.evaluate(others[0]) if known else None
            if value is not None and np.asarray(value).size == np.asarray(weight).shape[1]:
                bias = np.asarray(value)
        name = self.origins.get(node.input[1], node.input[1])
        return node, np.asarray(weight), bias, name

    def evaluate(self, value: str) -> Any:
        """The value of `value`, a constant or computed from constants alone by ops the
        folding left (onnx's reference evaluator); None where that fails."""
        if value in self.constants:
            return self.constants[value]
        if value not in self.evaluated:
            nodes = self.behind(value)
            try:
                self.evaluated[value] = self.run(nodes, None, value, None)
            except _Refusal:
                self.evaluated[value] = None
        return self.evaluated[value]

    def behind(self, value: str) -> list[Any]:
        """The computed nodes `value` is computed by, in the graph's order."""
        order = {id(n): index for index, n in enumerate(self.nodes)}
        members: dict[int, Any] = {}
        stack = [value]
        while stack:
            node = self.producer.get(stack.pop())
            if node is not None and id(node) not in members:
                members[id(node)] = node
                stack.extend(self.data(node))
        return sorted(members.values(), key=lambda n: order[id(n)])

    def leaves(self, value: str) -> list[Any]:
        """The constants `value` is computed from: each as the file holds it and, where the
        folding computed it from an initializer (a Transpose of a weight), that initializer."""
        import numpy as np

        found = []
        for node in self.behind(value):
            for name in node.input:
                if name in self.constants:
                    found.append(np.asarray(self.constants[name]))
                    origin = self.origins.get(name)
                    if origin is not None and origin != name and origin in self.constants:
                        found.append(np.asarray(self.constants[origin]))
        return found

    def version_2(
        self, region: list[Any], qkv: tuple[Any, ...], heads: int, bias: Any
    ) -> dict[str, Any] | None:
        """Swin V2's tensors, where the region is V2's attention: the logit_scale (from the
        (heads, 1, 1) scale the cosine scores are multiplied by), the cpb_mlp (from the
        initializers the position bias is computed from) and torchvision's whole qkv.bias
        (where the computed one zeroes the key's third of it); None for V1's."""
        import numpy as np

        scale = None
        for node in region:
            # The scores (q k^T) times a per-head scale computed from constants.
            inputs = [self.producer.get(name) for name in node.input]
            if node.op_type != "Mul" or not any(n and n.op_type == "MatMul" for n in inputs):
                continue
            for name in self.data(node):
                value = self.evaluate(name) if self.of_constants(name) else None
                if value is not None and np.asarray(value).size == heads:
                    scale = (name, np.asarray(value, dtype=np.float32).reshape(heads, 1, 1))
        added = self.bias_name
        cosine = any(node.op_type in ("ReduceL2", "LpNormalization") for node in region)
        if cosine and (scale is None or added in self.constants):
            raise _Refusal(
                "windowed cosine attention whose scale or position bias the file holds as a "
                "constant: Swin V2's window_attention computes them from its logit_scale and "
                "cpb_mlp, which the export folded away (export with do_constant_folding=False)"
            )
        if scale is None or added in self.constants:
            return None
        mlp = self.cpb_mlp(added, heads)
        if mlp is None:
            raise _Refusal(
                "windowed cosine attention whose position bias is no cpb_mlp of "
                f"Linear(2, {_CPB_HIDDEN}), ReLU, Linear({_CPB_HIDDEN}, {heads})"
            )
        # The clamped logit_scale's initializer; else the log of the scale, the same numbers.
        logit = np.log(scale[1])
        for leaf in self.leaves(scale[0]):
            candidate = np.asarray(leaf, dtype=np.float32).reshape(-1)
            if candidate.size == heads and _same(
                np.exp(np.minimum(candidate, _LOGIT_MAX)), scale[1].reshape(-1)
            ):
                logit = candidate.reshape(heads, 1, 1)
        tensors = {**mlp, "logit_scale": np.asarray(logit, dtype=np.float32)}
        # torchvision's qkv.bias, its key third kept: what the zeroed one is computed from.
        users = self.consumers.get(qkv[0].output[0], [])
        computed = [i for i in users[0].input if i != qkv[0].output[0]] if users else []
        third = bias.size // 3
        if computed and computed[0] not in self.constants:
            for leaf in self.leaves(computed[0]):
                whole = np.asarray(leaf, dtype=np.float32).reshape(-1)
                if whole.size == bias.size and np.array_equal(
                    np.delete(whole, np.s_[third : 2 * third]),
                    np.delete(bias, np.s_[third : 2 * third]),
                ):
                    tensors["qkv.bias"] = whole
                    break
        return tensors

    def cpb_mlp(self, added: str, heads: int) -> dict[str, Any] | None:
        """The cpb_mlp's tensors in PyTorch's layout, read from the two MatMuls (by constant
        matrices, (2, 512) then (512, heads)) and the Add of a (512,) bias between them that
        compute the bias `added`; None where it is computed otherwise."""
        import numpy as np

        matmuls = [n for n in self.behind(added) if n.op_type == "MatMul"]
        if len(matmuls) != 2:
            return None
        first, second = (self.constants.get(n.input[1]) for n in matmuls)
        if first is None or second is None:
            return None
        first, second = np.asarray(first), np.asarray(second)
        if first.shape != (2, _CPB_HIDDEN) or second.shape != (_CPB_HIDDEN, heads):
            return None
        users = self.consumers.get(matmuls[0].output[0], [])
        if len(users) != 1 or users[0].op_type != "Add":
            return None
        bias = [self.constants.get(i) for i in users[0].input if i != matmuls[0].output[0]]
        if len(bias) != 1 or bias[0] is None or np.asarray(bias[0]).size != _CPB_HIDDEN:
            return None
        found = {
            "cpb_mlp.0.weight": first.T,
            "cpb_mlp.0.bias": np.asarray(bias[0]).reshape(-1),
            "cpb_mlp.2.weight": second.T,
        }
        return {key: np.ascontiguousarray(value, dtype=np.float32) for key, value in found.items()}

    def run(self, region: list[Any], source: str | None, output: str, x: Any) -> Any:
        """What the region computes from `x` at `source` (onnx's reference evaluator)."""
        import numpy as np
        from onnx import TensorProto, helper, numpy_helper
        from onnx.reference import ReferenceEvaluator

        needed = {i for node in region for i in node.input if i in self.constants}
        initializers = [
            numpy_helper.from_array(np.asarray(self.constants[name]), name) for name in needed
        ]
        inputs = [] if source is None else [source]
        graph = helper.make_graph(
            list(region),
            "region",
            [helper.make_tensor_value_info(i, TensorProto.FLOAT, list(x.shape)) for i in inputs],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
            initializers,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
        feeds = {} if source is None else {source: x}
        try:
            result = ReferenceEvaluator(model).run(None, feeds)[0]  # type: ignore[index]
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
    x: Any,
    tensors: dict[str, Any],
    heads: int,
    size: tuple[int, int],
    shift: tuple[int, int],
    version: int = 1,
) -> Any:
    """window_attention on a channels-last map `x` (B, H, W, C), in numpy: torchvision's
    shifted_window_attention, `shift` the one applied (V2's with version 2)."""
    import numpy as np

    batch, height, width, dim = x.shape
    (wh, ww), (sh, sw) = size, shift
    ph, pw = -(-height // wh) * wh, -(-width // ww) * ww
    count, head = wh * ww, dim // heads
    x = np.pad(x, ((0, 0), (0, ph - height), (0, pw - width), (0, 0)))
    x = np.roll(x, (-sh, -sw), (1, 2))
    x = x.reshape(batch, ph // wh, wh, pw // ww, ww, dim).transpose(0, 1, 3, 2, 4, 5)
    x = x.reshape(-1, count, dim)
    qkv_bias = np.array(tensors["qkv.bias"], dtype=np.float32)
    if version == 2:
        qkv_bias[dim : 2 * dim] = 0  # V2 has no key bias
    qkv = x @ tensors["qkv.weight"].T + qkv_bias
    qkv = qkv.reshape(-1, count, 3, heads, head).transpose(2, 0, 3, 1, 4)
    query, key, value = qkv[0], qkv[1], qkv[2]
    if version == 2:
        query = query / np.maximum(np.linalg.norm(query, axis=-1, keepdims=True), 1e-12)
        key = key / np.maximum(np.linalg.norm(key, axis=-1, keepdims=True), 1e-12)
        logit = np.exp(np.minimum(tensors["logit_scale"], _LOGIT_MAX))
        scores = (query @ key.transpose(0, 1, 3, 2)) * logit + cpb_bias(tensors, size)
    else:
        index = np.asarray(window_index(size))
        bias = tensors["relative_position_bias_table"][index].reshape(count, count, heads)
        scores = (query * head**-0.5) @ key.transpose(0, 1, 3, 2) + bias.transpose(2, 0, 1)
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


def cpb_bias(tensors: dict[str, Any], size: tuple[int, int]) -> Any:
    """Swin V2's position bias (heads, N, N) for windows of `size`: 16 * sigmoid of the
    cpb_mlp on window_coords, gathered by window_index."""
    import numpy as np

    rows = (2 * size[0] - 1) * (2 * size[1] - 1)
    coords = np.asarray(window_coords(size), dtype=np.float32).reshape(rows, 2)
    hidden = np.maximum(coords @ tensors["cpb_mlp.0.weight"].T + tensors["cpb_mlp.0.bias"], 0)
    table = hidden @ tensors["cpb_mlp.2.weight"].T
    count = size[0] * size[1]
    bias = table[np.asarray(window_index(size))].reshape(count, count, -1).transpose(2, 0, 1)
    return 16 / (1 + np.exp(-bias))


def _same(a: Any, b: Any) -> bool:
    """Whether two arrays of one shape hold the same numbers, within float32's rounding."""
    import numpy as np

    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    if a.size != b.size:
        return False
    a, b = a.reshape(-1), b.reshape(-1)
    return bool(np.abs(a - b).max() <= 1e-4 * max(1.0, float(np.abs(b).max())))


def patch_merge(x: Any) -> Any:
    """patch_merge on a channels-last map (B, H, W, C), in numpy."""
    import numpy as np

    x = np.pad(x, ((0, 0), (0, x.shape[1] % 2), (0, x.shape[2] % 2), (0, 0)))
    parts = [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]]
    return np.concatenate(parts, -1)
