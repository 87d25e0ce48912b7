"""Reading an ONNX model (NCHW, as PyTorch and cnnspec export it) with the onnx package alone.

Each node, or short chain of nodes, maps to a cnnspec kind. Layers are named after their
weights (`layer1.0.conv1.weight` is layer1_0_conv1) or the node's module path; in a model
cnnspec exported, after the layers they were.

First, every value computed from constants alone is computed (cnnspec.importing.onnx_fold):
the shape arithmetic torch.onnx writes (Shape, Gather, Concat, Expand, Where...) folds to
constants for the file's input size, and what it feeds (a Reshape's target, an attention's
scale, the class token expanded to the batch) is read with them.

Most kinds are read by their registry entries (see cnnspec.registry), the other side of each
entry's `onnx` emitter: a chain of ops in the entry's `onnx_patterns` by its `from_onnx` (Relu,
Clip(0, 6) as relu6, GlobalAveragePool or ReduceMean over H and W, Resize, ...), and the nodes
cnnspec's own export writes for one layer, named as the entry's `onnx_steps` declares, by its
`from_onnx_steps` (layer_norm, gelu, normalization, dense and reshape on a map).

The reader's own ops (READER_OPS) need what an entry's reader does not see, the graph around
the node and the layers read so far:
- Conv: its weights name the layer and say conv2d, grouped or depthwise; its pads are `same`
  by the input's shape, an amount, or a zero_pad layer of their own; a depthwise then a 1x1
  convolution named as cnnspec names a separable convolution's halves is that convolution.
- BatchNormalization: its tensors, and whether it has a shift and a scale, by their names.
- LayerNormalization (torch's nn.LayerNorm, opset 17 on): layer_norm, its arguments read by
  the entry's `from_onnx` (one normalized axis, the last), its Scale and B the layer's weight
  and bias, named as a convolution's are; the last axis must be the channels: a vector's, or
  a map's transposed channels-last (below); without a learnt scale and shift it is refused.
- MaxPool, AveragePool: pads as `same` by the input's shape, or a zero_pad before it for an
  average that counts the padding in (count_include_pad) and for a maximum over values that are
  not negative (after a ReLU, by the producer); ceil_mode where it gives floor's sizes, or,
  for such a maximum, as a zero_pad of the last window's overhang.
- Gemm, MatMul: dense, with its weights (a MatMul on a vector or on a channels-last map,
  as nn.Linear on a permuted map exports; the Add of its bias after it is the dense's bias).
- Add, Sum, Mul, Concat: a join of layers (a chain of Mul as one multiply), a scale or an
  offset by a constant (rescaling; layer_scale by a weight: an initializer named `.weight`,
  or one of the module's parameters, such as ConvNeXt's gamma), or the Mul of swish's and
  hard_swish's gate with the input (the Sigmoid or HardSigmoid, read before it, used nowhere
  else).
- Transpose: a map to channels-last (perm 0, 2, 3, 1) and back (0, 3, 1, 2), as ConvNeXt's
  `x.permute(0, 2, 3, 1)`, reads as nothing: a spec's maps are channels-last throughout. The
  reader follows which values are channels-last and reads only ops of the last axis on them
  (CHANNELS_LAST_OPS: layer_norm, dense, activations, per-channel scales, joins of two such
  values); any other op on one, or a transpose of any other kind, is refused.
- Pad, Slice: zero_pad, and crop by the input's shape.
- Flatten, Reshape, Squeeze: flatten or reshape by the shapes around them; after a global
  pooling that feeds nothing else, that pooling without its kept dimensions.
- Unsqueeze, Identity, Dropout: nothing a spec writes (a vector joined with maps, inference);
  Constant: a value.

Tokens (a Vision Transformer's): an ONNX value of rank 3 is tokens (batch, N, D), which every
framework holds alike. A map's positions become tokens as x.flatten(2).transpose(1, 2) writes
it (a Reshape to (batch, C, H * W), then Transpose (0, 2, 1)): after a convolution with kernel
and stride equal, that convolution is a patch_embed; otherwise a reshape((-1, C)). On tokens:
- Concat on axis 1 of a constant (1, 1, D) before them (torch.cat([token.expand(B, -1, -1),
  x], dim=1), the Expand folded for the export's batch): class_token, the token its weight;
- Add of a constant (1, N, D): position_embedding; of a (D,) after a MatMul: the dense's bias;
- LayerNormalization, MatMul (dense), activations, residual adds: as on a vector;
- multi-head self-attention, from its qkv projection to its output projection, whatever moves
  the exporter writes between: attention, read by cnnspec.importing.onnx_attention;
- Gather of index 0 on axis 1 (x[:, 0]): token_pool(class); ReduceMean over axis 1 (x.mean(1)):
  token_pool(mean);
- any other kind (a softmax, a scale, a Slice, another Concat) is refused, naming the kinds
  that take tokens.

What reads the output of a refused node is not read: the refusal is its cause (but for shape
plumbing, such as a Transpose before an LSTM, where the telling cause comes after).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cnnspec.importing import onnx_attention, onnx_partitions, onnx_windows
from cnnspec.importing.network import INPUT, Gap, ImportFailure, Layer, Network, identifier
from cnnspec.importing.onnx_fold import fold
from cnnspec.layers.base import same_pads
from cnnspec.registry import (
    PADDING_SUFFIX,
    REGISTRY,
    ImportGap,
    LayerArgs,
    OnnxNode,
    float32,
    onnx_readers,
    onnx_step_readers,
    token_kinds,
)
from cnnspec.wording import plural

# The graph names torch.onnx writes whatever the model (torch 2's, then older releases').
_DEFAULT_GRAPH_NAMES = frozenset({"", "main_graph", "torch_jit", "torch-jit-export"})

_JOINS = {"Add": "add", "Sum": "add", "Mul": "multiply", "Concat": "concat"}

# The ops `_Reader.node` reads itself, not an entry: see the module's docstring for why.
READER_OPS = frozenset(
    {
        "Conv",
        "BatchNormalization",
        "LayerNormalization",
        "MaxPool",
        "AveragePool",
        "Gemm",
        "MatMul",
        *_JOINS,
        "Pad",
        "Slice",
        "Flatten",
        "Reshape",
        "Squeeze",
        "Unsqueeze",
        "Identity",
        "Dropout",
        "Constant",
        "Transpose",
        "Gather",
        "ReduceMean",
    }
)

# The ops read on a channels-last map (between a Transpose to NHWC and the one back): those of
# the last axis, the channels, as cnnspec's kinds compute them on an (H, W, C) map.
CHANNELS_LAST_OPS = frozenset(
    {
        "LayerNormalization",
        "MatMul",
        "Add",
        "Sum",
        "Mul",
        "Transpose",
        "Identity",
        "Dropout",
        # element-wise activations, read by their entries
        "Relu",
        "Clip",
        "LeakyRelu",
        "Elu",
        "Sigmoid",
        "Tanh",
        "Gelu",
        "HardSigmoid",
        "HardSwish",
    }
)
_CHANNELS_LAST = (
    "cnnspec reads a map transposed to channels-last only through layers of its last axis, "
    "the channels (layer_norm, dense, activations, a per-channel scale, a join of two such "
    "maps), up to the transpose back"
)
_TO_NHWC, _TO_NCHW = [0, 2, 3, 1], [0, 3, 1, 2]
_TOKENS = (
    "cnnspec makes a map's positions tokens (N, D) as x.flatten(2).transpose(1, 2) does "
    "(patch_embed after a patch convolution, otherwise reshape((-1, C))), and keeps them "
    "(batch, N, D) throughout"
)


def _tokens_kinds() -> str:
    """What takes tokens, for a refusal of a kind that does not."""
    kinds = ", ".join(token_kinds())
    return f"cnnspec's tokens (N, D) go into {kinds} and the activations but softmax"


def read(path: Path) -> Network:
    try:
        import onnx
    except ImportError:
        raise ImportFailure("importing ONNX needs onnx: pip install 'cnnspec[import]'") from None
    from google.protobuf.message import Error as ProtobufError  # type: ignore[import-untyped]

    try:
        model = onnx.load(str(path))
    except (ProtobufError, onnx.checker.ValidationError, OSError, ValueError) as error:
        # Not a protobuf, or a truncated one (DecodeError); external data that is missing
        # (OSError) or points outside the model's folder (ValidationError, ValueError).
        raise ImportFailure(f"{path} is not a readable ONNX file: {error}") from None
    return network_from_model(model, str(path))


def network_from_model(
    model: Any, source: str, parameters: frozenset[str] = frozenset()
) -> Network:
    """The Network in ONNX `model`. `parameters` names the initializers that are learnt
    (a PyTorch module's parameters, where the module is at hand): a per-channel multiply by
    one is a layer_scale, an add of one after a MatMul the dense's bias."""
    from onnx import numpy_helper

    graph = model.graph
    constants: dict[str, Any] = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in constants]
    if len(inputs) != 1:
        raise ImportFailure(f"{source} has {len(inputs)} inputs; a cnnspec model has one image")
    initializers = set(constants)
    # Shapes help recognise patterns (a model they cannot be inferred for is read without);
    # the shape arithmetic around them folds to constants for the file's input size.
    shapes, constants, origins = fold(model, constants)
    for v in [*graph.input, *graph.value_info, *graph.output]:
        if v.name not in shapes and v.type.tensor_type.HasField("shape"):
            dims = v.type.tensor_type.shape.dim
            shapes[v.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    for node in graph.node:
        # torch.onnx shares one initializer among parameters of equal values (a fresh
        # module's ones and zeros), naming each parameter by an Identity of it: a weight.
        if node.op_type == "Identity" and origins.get(node.output[0]) in initializers:
            origins[node.output[0]] = node.output[0]
            initializers.add(node.output[0])
    reader = _Reader(constants, shapes, source)
    reader.origins = origins
    reader.initializers = frozenset(initializers)
    reader.parameters = parameters
    reader.read(inputs[0].name, list(graph.node))
    if len(graph.output) != 1:
        reader.gaps.append(
            Gap("the graph", f"{len(graph.output)} outputs", "a cnnspec model has one output")
        )
    elif graph.output[0].name in reader.channels_last:
        reader.gaps.append(
            Gap("the graph", "a channels-last output", "transpose it back: " + _CHANNELS_LAST)
        )
    if reader.gaps:
        raise ImportFailure("the model uses what cnnspec cannot express", _by_module(reader.gaps))
    assert reader.input_shape is not None
    output = reader.value(graph.output[0].name)
    # torch's exporters name every graph alike: the file's name says which model it is.
    named = graph.name not in _DEFAULT_GRAPH_NAMES
    name = identifier(graph.name if named else Path(source).stem) or "imported"
    return Network(
        name=name,
        input_shape=reader.input_shape,
        layers=reader.layers,
        output=output,
        tensors=reader.tensors,
        source=source,
    )


class _Reader:
    def __init__(self, constants: dict[str, Any], shapes: dict[str, list[Any]], source: str):
        self.constants = constants
        self.shapes = shapes
        self.source = source
        self.aliases: dict[str, str] = {}
        self.layers: list[Layer] = []
        self.by_name: dict[str, Layer] = {}
        self.tensors: dict[str, Any] = {}
        self.gaps: list[Gap] = []
        self.input_shape: tuple[int, int, int] | None = None
        self.users: dict[str, int] = {}
        # Layers cnnspec exported as layers of their own (not steps of another's pattern).
        self.declared: set[str] = set()
        # The initializer a folded constant came from (`stage1.gamma` through an Unsqueeze).
        self.origins: dict[str, str] = {}
        # The file's initializers, and those of them that are learnt (see network_from_model).
        self.initializers: frozenset[str] = frozenset()
        self.parameters: frozenset[str] = frozenset()
        # The ONNX values that hold a map transposed to channels-last (NHWC).
        self.channels_last: set[str] = set()
        # The ONNX values that hold a map's positions flattened, (batch, C, H * W): tokens once
        # transposed (x.flatten(2).transpose(1, 2)).
        self.positions_first: set[str] = set()
        # The layers whose output is tokens (batch, N, D).
        self.token_layers: set[str] = set()
        # The ONNX values of refused nodes, other than shape plumbing: see `after_refusal`.
        self.refused: set[str] = set()

    # ---- values

    def value(self, name: str) -> str:
        seen = {name}
        while name in self.aliases and self.aliases[name] not in seen:
            name = self.aliases[name]
            seen.add(name)
        return name

    def constant(self, name: str) -> Any:
        """The value of a constant input (an array), or None where the input is not one."""
        return self.constants.get(name)

    def hwc(self, value: str) -> tuple[int, ...] | None:
        shape = self.shapes.get(value)
        if not shape or any(d is None for d in shape[1:]):
            return None
        dims = shape[1:]
        if len(dims) == 3 and value not in self.channels_last:
            return (dims[1], dims[2], dims[0])
        return tuple(dims)

    def origin(self, name: str) -> str:
        """The initializer a constant input came from (itself, where it is one)."""
        return self.origins.get(name, name)

    def learnt(self, name: str) -> bool:
        """Whether constant input `name` is a weight the file holds (an initializer, or made
        of one), not a Constant node's value (such as the ones of a LayerNorm without
        elementwise_affine)."""
        return self.origin(name) in self.initializers

    # ---- naming

    def name_for(self, node: Any, weight: str | None = None) -> str:
        if weight is not None:
            for suffix in (".weight", ".depthwise.weight", ".pointwise.weight", ".bias"):
                if weight.endswith(suffix) and len(weight) > len(suffix):
                    return self.unique(identifier(weight[: -len(suffix)]))
        raw = node.name or node.output[0]
        if raw.startswith("/"):
            parts = raw.strip("/").split("/")
            op = parts.pop() if parts else node.op_type
            path: list[str] = []
            for part in parts:
                if path and part.startswith(path[-1] + "."):
                    path[-1] = part
                else:
                    path.append(part)
            base = identifier(".".join(path))
            op_name = re.sub(r"_\d+$", "", op).lower()
            if not base or node.op_type in _JOINS or base in self.by_name:
                base = f"{base}_{op_name}" if base else op_name
            return self.unique(base)
        return self.unique(identifier(raw) or node.op_type.lower())

    def unique(self, name: str) -> str:
        candidate, index = name, 1
        while candidate in self.by_name or candidate in (INPUT, "training"):
            index += 1
            candidate = f"{name}_{index}"
        return candidate

    def add(
        self,
        node: Any,
        kind: str,
        args: dict[str, Any],
        sources: list[str],
        name: str | None = None,
    ) -> Layer:
        name = name or self.name_for(node)
        layer = Layer(
            name,
            kind,
            args,
            tuple(sources),
            f"node '{node.name or node.output[0]}' ({node.op_type})",
        )
        self.layers.append(layer)
        self.by_name[name] = layer
        self.aliases[node.output[0]] = name
        if node.doc_string.startswith("cnnspec "):
            self.declared.add(name)
        entry = REGISTRY.get(kind)
        if entry is not None and not entry.takes_tokens and self.token_layers & set(sources):
            self.gap(node, f"{kind} of tokens (N, D)", _tokens_kinds())
        if self.is_tokens(node.output[0]):
            self.token_layers.add(name)
        return layer

    def gap(self, node: Any, what: str, why: str) -> None:
        self.gaps.append(Gap(f"node '{node.name or node.output[0]}' ({node.op_type})", what, why))
        if node.op_type not in _PLUMBING:
            # What reads its output is not read (see `after_refusal`): this is the cause.
            self.refused.update(o for o in node.output if o)

    # ---- nodes

    def read(self, input_name: str, nodes: list[Any]) -> None:
        import numpy as np

        shape = self.shapes.get(input_name) or []
        producers_of_input = [n for n in nodes if input_name in n.input]
        first = producers_of_input[0] if len(producers_of_input) == 1 else None
        attrs = _attributes(first) if first is not None else {}
        if first is not None and first.op_type == "Transpose" and attrs.get("perm") == [0, 3, 1, 2]:
            dims = shape[1:]
            if len(dims) == 3 and all(isinstance(d, int) and d for d in dims):
                self.input_shape = (dims[0], dims[1], dims[2])
            self.aliases[first.output[0]] = INPUT
            nodes = [n for n in nodes if n is not first]
        else:
            dims = shape[1:]
            if len(dims) == 3 and all(isinstance(d, int) and d for d in dims):
                self.input_shape = (dims[1], dims[2], dims[0])
        if self.input_shape is None:
            self.gaps.append(
                Gap(
                    f"input '{input_name}'",
                    f"shape {shape}",
                    "cnnspec needs a fixed (channels, height, width) image input",
                )
            )
            return
        self.aliases[input_name] = INPUT
        # cnnspec's own layers by their nodes' names (a weight's Transpose among them), then
        # the others; the nodes folded to constants (shape arithmetic) compute nothing more.
        composites, members = self.composites(nodes)
        nodes = [n for n in nodes if not all(o in self.constants for o in n.output if o)]
        for node in nodes:
            for value in node.input:
                self.users[value] = self.users.get(value, 0) + 1
        # Swin's windows first: their Softmaxes are no ViT attention's.
        # MaxViT's partitions before them: their Softmaxes are no Swin window's.
        partitions, held = onnx_partitions.take(self, nodes, members)
        windows, softmaxes = onnx_windows.take(self, nodes, members | held)
        windows.update(partitions)
        softmaxes |= held
        attentions = self.attentions(nodes, members | softmaxes)
        readers = onnx_readers()
        consumers: dict[str, list[Any]] = {}
        for node in nodes:
            for value in node.input:
                consumers.setdefault(value, []).append(node)
        taken: set[int] = set()
        for node in nodes:
            if node.name in members or id(node) in taken:
                continue
            if id(node) in windows:
                window = windows[id(node)]
                if isinstance(window, onnx_partitions.Found):
                    onnx_partitions.add(self, window)
                elif window is not None:
                    onnx_windows.add(self, window)
                continue
            if id(node) in attentions:
                found = attentions[id(node)]
                if found is not None:
                    self.attention(found)
                continue
            if node.name in composites:
                kind, args, source = composites[node.name]
                self.add(node, kind, args, [self.value(source)], node.name)
                # The layer's tensors, which its emitter read as `<layer>.<tensor>`.
                prefix = f"{node.name}."
                self.tensors.update(
                    {key: v for key, v in self.constants.items() if key.startswith(prefix)}
                )
                continue
            refused = self.after_refusal(node)
            if refused is not None:
                # Of a value whose node was refused: that refusal is the cause.
                self.aliases.update(dict.fromkeys((o for o in node.output if o), refused))
                continue
            last = self.layout(node)
            if last is None:
                continue  # refused
            if self.of_tokens(node):
                continue
            chain = self.keras_order(node, consumers) or self.entry_chain(
                node, readers.get(node.op_type, []), consumers, taken
            )
            if chain is not None:
                taken.update(id(n) for n in chain)
                if last:
                    self.channels_last.add(chain[-1].output[0])
                continue
            self.node(node, np)
            if last and node.op_type != "Transpose":
                self.channels_last.add(node.output[0])

    def after_refusal(self, node: Any) -> str | None:
        """The first of `node`'s data inputs that a refused node gives (or an attention
        refused), or None. A refusal of shape plumbing (a Transpose) is not one: what reads it
        is read on, since it is the telling cause (an LSTM after a Transpose)."""
        for value in node.input:
            if value and value not in self.constants:
                source = self.value(value)
                if source in self.refused:
                    return source
        return None

    def layout(self, node: Any) -> bool | None:
        """Whether `node` reads a channels-last map (then its output is one too); None,
        with a gap, where it reads one with an op that is not of the channels, or joins one
        with a channels-first map."""
        data = [i for i in node.input if i and i not in self.constants]
        if any(i in self.positions_first for i in data) and not (
            node.op_type == "Transpose" and _attributes(node).get("perm") == [0, 2, 1]
        ):
            self.gap(node, f"ONNX op {node.op_type} on a map's positions as (C, H*W)", _TOKENS)
            return None
        found = {i in self.channels_last for i in data}
        if True not in found:
            return False
        if node.op_type not in CHANNELS_LAST_OPS:
            self.gap(node, f"ONNX op {node.op_type} on a channels-last map", _CHANNELS_LAST)
            return None
        if len(found) > 1:
            self.gap(
                node, f"{node.op_type} of a channels-last and a channels-first map", _CHANNELS_LAST
            )
            return None
        return True

    def keras_order(self, first: Any, consumers: dict[str, list[Any]]) -> list[Any] | None:
        """The reorder cnnspec's export writes where a vector flattened from a map is used in
        Keras's HWC order (export._keras_order: Reshape to the map, Transpose to NHWC, Reshape
        to a vector). A spec's vectors are in that order already: it reads as nothing."""
        chain = [first]
        for op in ("Transpose", "Reshape"):
            following = consumers.get(chain[-1].output[0], [])
            if len(following) != 1 or following[0].op_type != op:
                return None
            chain.append(following[0])
        to_map, to_nhwc, to_vector = chain
        shapes = [self.constant(node.input[1]) if len(node.input) > 1 else None for node in chain]
        if first.op_type != "Reshape" or shapes[0] is None or shapes[2] is None:
            return None
        if len(shapes[0].reshape(-1)) != 4 or shapes[2].reshape(-1).tolist() != [0, -1]:
            return None
        if _attributes(to_nhwc).get("perm") != [0, 2, 3, 1]:
            return None
        data = [i for i in to_map.input if i and i not in self.constants]
        if len(data) != 1:
            return None
        self.aliases[to_vector.output[0]] = self.value(data[0])
        return chain

    def entry_chain(
        self,
        first: Any,
        readers: list[tuple[type[LayerArgs], tuple[str, ...]]],
        consumers: dict[str, list[Any]],
        taken: set[int],
    ) -> list[Any] | None:
        """Read the chain of nodes from `first` as the first entry whose pattern and reader
        (`onnx_patterns`, `from_onnx`) accept it; the chain read, or None."""
        data = [i for i in first.input if i and i not in self.constants]
        if not data:
            return None
        for entry, pattern in readers:
            chain = [first]
            for op in pattern[1:]:
                following = consumers.get(chain[-1].output[0], [])
                if len(following) != 1 or following[0].op_type != op or id(following[0]) in taken:
                    break
                chain.append(following[0])
            if len(chain) != len(pattern):
                continue
            try:
                args = entry.from_onnx([self.view(node) for node in chain])
            except ImportGap as gap:
                self.gap(chain[-1], gap.what, gap.why)
                return chain
            if args is not None:
                self.add(chain[-1], entry.kind, args, [self.value(data[0])])
                return chain
        return None

    def view(self, node: Any) -> OnnxNode:
        """`node` as an entry's reader sees it (see registry.OnnxNode)."""
        return OnnxNode(
            node.op_type,
            {key: _plain(value) for key, value in _attributes(node).items()},
            tuple(self.constant(i) if i else None for i in node.input),
            self.nchw(node.input[0]) if node.input else None,
            tuple(node.input),
        )

    def composites(
        self, nodes: list[Any]
    ) -> tuple[dict[str, tuple[str, dict[str, Any], str]], set[str]]:
        """The layers cnnspec exported as several nodes, named as their entries' `onnx_steps`
        declare (`<layer>_<step>`, the last one `<layer>`): last node -> (kind, arguments,
        the layer's input); and the names of the steps, to skip."""
        entries = [(entry, entry.onnx_steps) for entry in onnx_step_readers()]
        known = {step for _, declared in entries if declared for step in declared.every}
        by_name = {node.name: node for node in nodes}
        steps: dict[str, dict[str, Any]] = {}
        for node in nodes:
            for split in range(len(node.name) - 1, 0, -1):
                if node.name[split] != "_":
                    continue
                owner, step = node.name[:split], node.name[split + 1 :]
                if owner in by_name and step in known:
                    steps.setdefault(owner, {})[step] = node
                    break
        found: dict[str, tuple[str, dict[str, Any], str]] = {}
        members: set[str] = set()
        for owner, parts in steps.items():
            written = {**parts, "": by_name[owner]}
            for entry, declared in entries:
                if declared is None or not declared.matches(set(parts)):
                    continue
                args = entry.from_onnx_steps({s: self.view(n) for s, n in written.items()})
                if args is None:
                    continue
                first = next(written[s] for s in (*declared.inputs, "") if s in written)
                found[owner] = (entry.kind, args, first.input[0])
                members.update(node.name for node in parts.values())
                break
        return found, members

    def is_tokens(self, value: str) -> bool:
        """Whether ONNX value `value` holds tokens (batch, N, D): of rank 3, and not a map's
        positions before their transpose."""
        shape = self.shapes.get(value)
        return shape is not None and len(shape) == 3 and value not in self.positions_first

    # ---- tokens (a Vision Transformer's)

    def attentions(
        self, nodes: list[Any], members: set[str]
    ) -> dict[int, onnx_attention.Attention | None]:
        """The attentions in the graph (see cnnspec.importing.onnx_attention): the node that
        gives each one's output -> it; each of their other nodes -> None. One refused is a gap
        at its Softmax, and its nodes are read no further."""
        found: dict[int, onnx_attention.Attention | None] = {}
        for item in onnx_attention.find(nodes, self.constants, self.shapes, self.origins, members):
            found.update(dict.fromkeys(item.members))
            if isinstance(item, onnx_attention.Refused):
                self.gap(item.node, item.what, item.why)
                self.refused.update(
                    o for n in nodes if id(n) in item.members for o in n.output if o
                )
                continue
            found[id(item.last)] = item
        return found

    def attention(self, found: onnx_attention.Attention) -> None:
        source = self.value(found.source)
        module = identifier(found.module)
        name = self.unique(module) if module else self.name_for(found.softmax)
        self.add(found.last, "attention", {"heads": found.heads}, [source], name)
        for key, value in found.tensors.items():
            self.tensors[f"{name}.{key}"] = value

    def of_tokens(self, node: Any) -> bool:
        """The reductions of tokens (batch, N, D) to a vector: x[:, 0] (Gather) is
        token_pool(class), x.mean(1) (ReduceMean) token_pool(mean). True where `node` is one
        (read, or refused)."""
        if node.op_type not in ("Gather", "ReduceMean", "Slice") or not self.is_tokens(
            node.input[0]
        ):
            return False
        if node.input[0] in self.constants:
            return False
        attrs = _attributes(node)
        source = self.value(node.input[0])
        if source != INPUT and source not in self.by_name:
            # Of a value whose node was refused: that refusal is the cause.
            self.aliases[node.output[0]] = source
            return True
        if node.op_type == "Slice":
            self.gap(
                node,
                "Slice of tokens",
                "cnnspec reads tokens whole: token_pool(class) the first, token_pool(mean) "
                "the mean of all of them",
            )
            return True
        if node.op_type == "Gather":
            index = self.constant(node.input[1])
            first = index is not None and index.ndim == 0 and int(index) == 0
            if attrs.get("axis", 0) in (1, -2) and first:
                self.add(node, "token_pool", {"mode": "class"}, [source])
                return True
            self.gap(
                node,
                f"Gather of index {index.tolist() if index is not None else '?'} on axis "
                f"{attrs.get('axis', 0)} of tokens",
                "cnnspec reads one token, the first (x[:, 0]): token_pool(class)",
            )
            return True
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1 and self.constant(node.input[1]) is not None:
            axes = [int(a) for a in self.constant(node.input[1]).reshape(-1)]
        if axes is not None and [a % 3 for a in axes] == [1] and not attrs.get("keepdims", 1):
            self.add(node, "token_pool", {"mode": "mean"}, [source])
            return True
        self.gap(
            node,
            f"ReduceMean over axes {axes} of tokens, keepdims={attrs.get('keepdims', 1)}",
            "cnnspec averages the tokens to a vector (x.mean(1)): token_pool(mean)",
        )
        return True

    def nchw(self, value: str) -> tuple[int | None, ...] | None:
        """The NCHW shape of ONNX value `value`, where the file or shape inference says it."""
        shape = self.shapes.get(value)
        return tuple(d if isinstance(d, int) and d > 0 else None for d in shape) if shape else None

    def node(self, node: Any, np: Any) -> None:
        op = node.op_type
        attrs = _attributes(node)
        data = [i for i in node.input if i and i not in self.constants]
        sources = [self.value(i) for i in data]
        if not sources:  # on constants, and not one the folding computes
            self.gap(node, f"ONNX op {op} on constants", "cnnspec computes on the image only")
            return
        match op:
            case "Identity" | "Dropout":
                self.aliases[node.output[0]] = sources[0]
            case "Conv":
                self.conv(node, attrs, sources, np)
            case "BatchNormalization":
                self.batchnorm(node, attrs, sources)
            case "LayerNormalization":
                self.layer_norm(node, sources)
            case "Transpose":
                self.transpose(node, attrs, sources)
            case "Add" | "Sum" | "Mul" | "Concat":
                self.join(node, attrs, sources, np)
            case "MaxPool" | "AveragePool":
                self.pool(node, attrs, sources)
            case "Flatten" | "Reshape" | "Squeeze":
                self.flatten(node, attrs, sources)
            case "Unsqueeze":
                # A vector made (C, 1, 1) to meet maps at a join: cnnspec's joins do that.
                self.aliases[node.output[0]] = sources[0]
            case "Gemm":
                self.gemm(node, attrs, sources)
            case "MatMul":
                self.matmul(node, sources)
            case "Pad":
                self.pad(node, attrs, sources)
            case "Slice":
                self.crop(node, sources)
            case "Split":  # of the channels: a channel_slice per part (onnx_slices)
                from cnnspec.importing.onnx_slices import read_split

                read_split(self, node, attrs, sources[0])
            case _:
                self.gap(node, f"ONNX op {op}", "cnnspec has no layer for it")

    def conv(self, node: Any, attrs: dict[str, Any], sources: list[str], np: Any) -> None:
        weight_name = node.input[1]
        weight = self.constant(weight_name)
        if weight is None or weight.ndim != 4:
            self.gap(node, "a convolution with computed weights", "cnnspec needs 2-D kernels")
            return
        bias = self.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        group = int(attrs.get("group", 1))
        out, per_group, kh, kw = weight.shape
        in_channels = per_group * group
        args: dict[str, Any] = {
            "kernel": (kh, kw),
            "stride": tuple(attrs.get("strides", [1, 1])),
            "dilation": tuple(attrs.get("dilations", [1, 1])),
            "activation": None,
            "use_bias": bias is not None,
        }
        padding = self.padding(node, attrs, sources[0], (kh, kw), "conv")
        if padding is None:
            return
        args["padding"], sources = padding
        if weight_name.endswith(".pointwise.weight") and (kh, kw) == (1, 1) and group == 1:
            owner = self.by_name.get(sources[0])
            if (
                owner is not None
                and owner.kind == "depthwise_conv2d"
                and owner.name.endswith("_depthwise")
            ):
                self.layers.remove(owner)
                del self.by_name[owner.name]
                name = owner.name.removesuffix("_depthwise")
                owner.args.pop("use_bias", None)
                separable = {**owner.args, "filters": out, "use_bias": bias is not None}
                self.add(node, "separable_conv2d", separable, list(owner.inputs), name)
                self.tensors[f"{name}.depthwise.weight"] = self.tensors.pop(f"{owner.name}.weight")
                self.tensors[f"{name}.pointwise.weight"] = weight
                if bias is not None:
                    self.tensors[f"{name}.pointwise.bias"] = bias
                return
        # With one input channel a depthwise convolution is an ordinary one to ONNX, and one
        # channel per group is conv2d(groups=C) or depthwise_conv2d: what cnnspec exported says
        # which it was (its doc_string, a separable's weight names); otherwise depthwise.
        said = node.doc_string == "cnnspec depthwise_conv2d" or weight_name.endswith(
            ".depthwise.weight"
        )
        depthwise = per_group == 1 and out % in_channels == 0 and (group > 1 or said)
        if depthwise and node.doc_string != "cnnspec conv2d":
            kind, args["depth_multiplier"] = "depthwise_conv2d", out // in_channels
        elif group == 1:
            kind, args["filters"] = "conv2d", out
        else:
            kind, args["filters"], args["groups"] = "conv2d", out, group
        if weight_name.endswith(".depthwise.weight"):
            name = self.unique(
                identifier(weight_name.removesuffix(".depthwise.weight")) + "_depthwise"
            )
        else:
            name = self.name_for(node, weight_name)
        self.add(node, kind, args, sources, name)
        self.tensors[f"{name}.weight"] = weight
        if bias is not None:
            self.tensors[f"{name}.bias"] = bias

    def padding(
        self, node: Any, attrs: dict[str, Any], source: str, window: tuple[int, int], what: str
    ) -> tuple[Any, list[str]] | None:
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID", b"NOTSET", b"VALID"):
            self.gap(node, f"auto_pad={attrs['auto_pad']}", "write the pads out")
            return None
        if not any(pads):
            return "valid", [source]
        top, left, bottom, right = pads
        strides = list(attrs.get("strides", [1, 1]))
        dilations = list(attrs.get("dilations", [1, 1]))
        shape = self.hwc(node.input[0])
        if shape is not None and len(shape) == 3:
            same = (
                same_pads(shape[0], window[0], strides[0], dilations[0]),
                same_pads(shape[1], window[1], strides[1], dilations[1]),
            )
            if ((top, bottom), (left, right)) == same:
                return "same", [source]
        if top == left == bottom == right and what == "conv":
            return top, [source]
        if what == "conv":
            # Uneven padding: a zero_pad layer of its own before the convolution.
            name = self.unique(self.name_for(node, node.input[1]) + PADDING_SUFFIX)
            self.by_name.pop(name, None)
            layer = Layer(
                name,
                "zero_pad",
                {"padding": ((top, bottom), (left, right))},
                (source,),
                f"node '{node.name}' ({node.op_type})",
            )
            self.layers.append(layer)
            self.by_name[name] = layer
            return "valid", [name]
        return None

    def batchnorm(self, node: Any, attrs: dict[str, Any], sources: list[str]) -> None:
        scale, bias, mean, var = (self.constant(i) for i in node.input[1:5])
        if any(t is None for t in (scale, bias, mean, var)) or attrs.get("training_mode", 0):
            self.gap(node, "batch normalization in training mode", "export the model in eval mode")
            return
        import numpy as np

        name = self.name_for(node, node.input[1] if node.input[1].endswith(".weight") else None)
        if not node.input[1].endswith(".weight") and node.input[3].endswith(".running_mean"):
            name = self.unique(identifier(node.input[3].removesuffix(".running_mean")))
        center = node.input[2].endswith(".bias") or bool(np.any(bias != 0))
        scaled = node.input[1].endswith(".weight") or bool(np.any(scale != 1))
        args = {
            "epsilon": float32(attrs.get("epsilon", 1e-5)),
            "momentum": float32(attrs.get("momentum", 0.9)),
            "center": center,
            "scale": scaled,
        }
        self.add(node, "batchnorm", args, sources, name)
        if scaled:
            self.tensors[f"{name}.weight"] = scale
        if center:
            self.tensors[f"{name}.bias"] = bias
        self.tensors[f"{name}.running_mean"] = mean
        self.tensors[f"{name}.running_var"] = var

    def layer_norm(self, node: Any, sources: list[str]) -> None:
        """nn.LayerNorm(C) of a vector, or of a map permuted to channels-last (ConvNeXt's,
        torchvision's LayerNorm2d): layer_norm, with Scale and B as its weight and bias."""
        try:
            args = REGISTRY["layer_norm"].from_onnx([self.view(node)])
        except ImportGap as gap:
            self.gap(node, gap.what, gap.why)
            return
        if args is None:  # pragma: no cover - the entry reads every one-axis LayerNormalization
            self.gap(node, "LayerNormalization", "cnnspec's layer_norm is not this")
            return
        if any(self.users.get(extra) for extra in node.output[1:] if extra):
            self.gap(
                node,
                "LayerNormalization's mean or inverse deviation used",
                "cnnspec's layer_norm gives its normalized output alone",
            )
            return
        rank = len(self.shapes.get(node.input[0]) or [])
        tokens = self.is_tokens(node.input[0])
        if rank != 2 and not tokens and not (rank == 4 and node.input[0] in self.channels_last):
            what = (
                "LayerNormalization of the width of a channels-first map"
                if rank == 4
                else f"LayerNormalization of a {f'rank-{rank}' if rank else 'shapeless'} tensor"
            )
            self.gap(
                node,
                what,
                "cnnspec's layer_norm normalizes the channels: of a vector, or of a map "
                "permuted to channels-last (x.permute(0, 2, 3, 1)) and back",
            )
            return
        scale = node.input[1] if len(node.input) > 1 else ""
        bias = node.input[2] if len(node.input) > 2 else ""
        has_scale = bool(scale) and self.constant(scale) is not None and self.learnt(scale)
        has_bias = bool(bias) and self.constant(bias) is not None and self.learnt(bias)
        if not (has_scale and has_bias):
            missing = (
                "a learnt scale and shift (elementwise_affine=False)"
                if not has_scale
                else "a learnt shift (bias=False)"
            )
            self.gap(
                node,
                f"LayerNormalization without {missing}",
                "cnnspec's layer_norm learns a scale and a shift per channel",
            )
            return
        name = self.name_for(node, self.origin(scale))
        self.add(node, "layer_norm", args, sources, name)
        self.tensors[f"{name}.weight"] = self.constant(scale).reshape(-1)
        self.tensors[f"{name}.bias"] = self.constant(bias).reshape(-1)

    def transpose(self, node: Any, attrs: dict[str, Any], sources: list[str]) -> None:
        """A map to channels-last and back reads as nothing (see CHANNELS_LAST_OPS)."""
        perm = list(attrs.get("perm", []))
        value = node.input[0]
        last = value in self.channels_last
        if sources[0] != INPUT and sources[0] not in self.by_name:
            # Of a value whose node was refused: that refusal is the cause.
            self.aliases[node.output[0]] = sources[0]
            return
        if value in self.positions_first and perm == [0, 2, 1]:
            self.to_tokens(node, sources[0])
            return
        if self.is_tokens(value):
            self.gap(node, f"Transpose {perm} of tokens", _TOKENS)
            return
        if perm == _TO_NHWC and not last and len(self.shapes.get(value) or []) == 4:
            self.aliases[node.output[0]] = sources[0]
            self.channels_last.add(node.output[0])
            return
        if perm == _TO_NCHW and last:
            self.aliases[node.output[0]] = sources[0]
            return
        self.gap(
            node,
            f"Transpose {perm} of a {'channels-last' if last else 'channels-first'} "
            f"{'map' if len(self.shapes.get(value) or []) == 4 else 'tensor'}",
            "cnnspec's maps are channels-last throughout: it reads a map permuted to "
            "channels-last (0, 2, 3, 1) and back (0, 3, 1, 2) around layers of the channels",
        )

    def to_tokens(self, node: Any, source: str) -> None:
        """A map's positions as tokens, x.flatten(2).transpose(1, 2): after a convolution with
        kernel and stride equal (that feeds nothing else), a ViT's patch embedding, which
        patch_embed is; after anything else reshape((-1, C)), which gives the same order."""
        shape = self.hwc(node.input[0])  # (C, H * W), as the reshape gave it
        conv = self.by_name.get(source)
        args = conv.args if conv is not None else {}
        if (
            conv is not None
            and conv.kind == "conv2d"
            and conv.name not in self.declared
            and args.get("stride") == args.get("kernel")
            and args.get("padding") == "valid"
            and args.get("dilation", (1, 1)) == (1, 1)
            and args.get("groups", 1) == 1
            and args.get("use_bias")
            and self.users.get(_output_of(conv, self.aliases), 1) == 1
        ):
            conv.kind = "patch_embed"
            conv.args = {"dim": args["filters"], "patch": args["kernel"]}
            self.aliases[node.output[0]] = conv.name
            self.token_layers.add(conv.name)
            return
        assert shape is not None
        self.add(node, "reshape", {"target": (shape[1], shape[0])}, [source])

    def join(self, node: Any, attrs: dict[str, Any], sources: list[str], np: Any) -> None:
        op = node.op_type
        if op == "Concat" and self.is_tokens(node.output[0]):
            self.class_token(node, attrs, sources)
            return
        data = [i for i in node.input if i and i not in self.constants]
        shapes = {tuple(self.shapes.get(i) or ()) for i in data}
        if len(data) > 1 and any(self.is_tokens(i) for i in data) and len(shapes) > 1:
            self.gap(
                node,
                f"{op} of tokens and another shape: "
                + " and ".join(str(tuple(s[1:])) for s in sorted(shapes)),
                "cnnspec joins tokens with tokens of their shape",
            )
            return
        if op == "Concat" and len(sources) < len([i for i in node.input if i]):
            self.gap(node, "Concat of a constant", "cnnspec joins layers' outputs")
            return
        if op == "Concat" and attrs.get("axis") not in (1, -3):
            self.gap(node, f"Concat on axis {attrs.get('axis')}", "cnnspec joins channels")
            return
        if op == "Mul" and len(sources) == 2:
            # swish: x * sigmoid(x), the sigmoid used nowhere else
            for gate, other in ((sources[1], sources[0]), (sources[0], sources[1])):
                layer = self.by_name.get(gate)
                if (
                    layer is not None
                    and layer.name not in self.declared
                    and layer.kind in ("sigmoid", "hard_sigmoid")
                    and layer.inputs == (other,)
                    and self.users.get(_output_of(layer, self.aliases), 1) == 1
                ):
                    self.layers.remove(layer)
                    del self.by_name[layer.name]
                    kind = "swish" if layer.kind == "sigmoid" else "hard_swish"
                    name = self.name_for(node)
                    if layer.name.startswith(name + "_"):
                        name = name  # cnnspec's own: the gate is `<name>_sigmoid`
                    self.add(node, kind, {}, [other], name)
                    return
        if len(sources) == 1 and op in ("Add", "Mul"):
            self.affine(node, sources[0], np)
            return
        if len(sources) < 2:
            self.aliases[node.output[0]] = sources[0]
            return
        name = self.name_for(node)
        first = self.by_name.get(sources[0])
        if (
            op == "Mul"
            and first is not None
            and first.kind == "multiply"
            and re.fullmatch(re.escape(name) + r"_mul\d+", first.name)
            and self.users.get(_output_of(first, self.aliases), 1) == 1
        ):
            # cnnspec multiplies three or more branches as a chain `<name>_mul1`, ..., `<name>`.
            self.layers.remove(first)
            del self.by_name[first.name]
            sources = [*first.inputs, *sources[1:]]
        self.add(node, _JOINS[op], {}, sources, name)

    def class_token(self, node: Any, attrs: dict[str, Any], sources: list[str]) -> None:
        """torch.cat([token.expand(B, -1, -1), x], dim=1) of tokens x: class_token, the token
        (1, 1, D) its weight."""
        inputs = [i for i in node.input if i]
        shape = self.shapes.get(node.output[0]) or []
        token = self.constant(inputs[0]) if len(inputs) == 2 else None
        if (
            attrs.get("axis") in (1, -2)
            and token is not None
            and len(sources) == 1
            and self.is_tokens(inputs[1])
            and tuple(token.shape) == (1, 1, shape[-1])
        ):
            origin = self.origin(inputs[0])
            name = self.unique(identifier(origin)) if self.learnt(inputs[0]) else None
            self.add(node, "class_token", {}, sources, name)
            self.tensors[f"{self.value(node.output[0])}.weight"] = token.astype("float32")
            return
        self.gap(
            node,
            f"Concat of tokens on axis {attrs.get('axis')}",
            "cnnspec puts one learnt token before the tokens (class_token: "
            "torch.cat([token.expand(B, -1, -1), x], dim=1)), and joins no others",
        )

    def affine(self, node: Any, source: str, np: Any) -> None:
        """x * c or x + c with a constant c: a layer_scale when c is a weight, otherwise a
        rescaling (an offset after a scale joins it: cnnspec's `<name>_scaled`, then `<name>`);
        tokens plus a constant (N, D) are a position_embedding."""
        constant_name = next(i for i in node.input if i in self.constants)
        value = np.asarray(self.constants[constant_name], dtype=np.float32)
        origin = self.origin(constant_name)
        data = next(i for i in node.input if i and i not in self.constants)
        if self.is_tokens(data):
            self.token_affine(node, data, source, value, constant_name)
            return
        channels = self.hwc(data)
        per_channel = channels[-1] if channels else None
        if value.size not in (1, per_channel) or not _broadcasts_per_channel(
            value.shape, len(self.shapes.get(data) or []), data in self.channels_last
        ):
            self.gap(
                node,
                f"{node.op_type} by a constant of shape {value.shape}",
                "cnnspec scales per channel or by one number",
            )
            return
        flat = value.reshape(-1)
        previous = self.by_name.get(source)
        if node.op_type == "Add" and self.dense_bias(node, previous, origin, flat):
            return
        learnt = origin in self.parameters and value.size == per_channel
        if node.op_type == "Mul" and (origin.endswith(".weight") or learnt):
            name = self.unique(identifier(origin.removesuffix(".weight")))
            self.add(node, "layer_scale", {}, [source], name)
            self.tensors[f"{name}.weight"] = flat.reshape(-1)
            return
        numbers = tuple(float32(v) for v in flat)
        amount = numbers[0] if len(numbers) == 1 else numbers
        if node.op_type == "Add":
            name = self.name_for(node)
            if (
                previous is not None
                and previous.kind == "rescaling"
                and same_zero(previous.args.get("offset", 0.0))
                and previous.name == f"{name}_scaled"
            ):
                previous.args["offset"] = amount
                del self.by_name[previous.name]
                previous.name = name
                self.by_name[name] = previous
                self.aliases[node.output[0]] = name
                return
            self.add(node, "rescaling", {"scale": 1.0, "offset": amount}, [source], name)
            return
        self.add(node, "rescaling", {"scale": amount, "offset": 0.0}, [source])

    def token_affine(self, node: Any, data: str, source: str, value: Any, constant: str) -> None:
        """Tokens (batch, N, D) plus a constant: a position embedding where it is (N, D) (a
        learnt one, named as its tensor), a linear layer's bias where it is (D,) after the
        MatMul; anything else is refused."""
        shape = self.shapes.get(data) or []
        flat = value.reshape(-1)
        previous = self.by_name.get(source)
        if (
            node.op_type == "Add"
            and value.shape[-2:] == tuple(shape[1:])
            and (all(d == 1 for d in value.shape[:-2]))
        ):
            name = self.unique(identifier(self.origin(constant))) if self.learnt(constant) else None
            self.add(node, "position_embedding", {}, [source], name)
            self.tensors[f"{self.value(node.output[0])}.weight"] = value.reshape(1, *shape[1:])
            return
        if (
            node.op_type == "Add"
            and value.size == shape[-1]
            and self.dense_bias(node, previous, self.origin(constant), flat, any_vector=True)
        ):
            return
        origin = self.origin(constant)
        if (
            node.op_type == "Mul"
            and value.size == shape[-1]
            and (origin.endswith(".weight") or origin in self.parameters)
        ):
            # A learnt scale of each feature (DeiT III's and CaiT's layer scale).
            name = self.unique(identifier(origin.removesuffix(".weight")))
            self.add(node, "layer_scale", {}, [source], name)
            self.tensors[f"{name}.weight"] = flat
            return
        self.gap(
            node,
            f"{node.op_type} of tokens {tuple(shape[1:])} by a constant of shape {value.shape}",
            "cnnspec adds a learnt vector per position to tokens (position_embedding) and a "
            "bias to a dense layer's, and scales each feature by a learnt vector (layer_scale)",
        )

    def dense_bias(
        self, node: Any, dense: Layer | None, origin: str, flat: Any, any_vector: bool = False
    ) -> bool:
        """An Add of a learnt vector (`<linear>.bias`, or a parameter; on tokens, where no
        rescaling could read it, `any_vector`) to a MatMul's dense, which feeds nothing else:
        nn.Linear's bias, as torch writes it for inputs of more than two axes. The dense gets
        it; True where it did."""
        if (
            dense is None
            or dense.kind != "dense"
            or dense.args.get("use_bias")
            or not dense.origin.endswith("(MatMul)")
            or dense.name in self.declared
            or node.doc_string.startswith("cnnspec ")  # a layer of its own in a spec
            or not (any_vector or origin.endswith(".bias") or origin in self.parameters)
            or flat.shape != (dense.args["units"],)
            or self.users.get(_output_of(dense, self.aliases), 1) != 1
        ):
            return False
        dense.args["use_bias"] = True
        self.tensors[f"{dense.name}.bias"] = flat
        self.aliases[node.output[0]] = dense.name
        return True

    def pool(self, node: Any, attrs: dict[str, Any], sources: list[str]) -> None:
        kernel = tuple(attrs["kernel_shape"])
        stride = tuple(attrs.get("strides", [1, 1]))
        kind = "maxpool" if node.op_type == "MaxPool" else "avgpool"
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        dilations = list(attrs.get("dilations", [1, 1]))
        if any(d != 1 for d in dilations):
            self.gap(node, f"dilations {dilations}", "cnnspec pools without dilation")
            return
        if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID", b"NOTSET", b"VALID"):
            self.gap(node, f"auto_pad={attrs['auto_pad']}", "write the pads out")
            return
        if attrs.get("ceil_mode", 0):
            ceiled = self.ceil_pads(node, kind, kernel, stride, pads, sources[0])
            if ceiled is None:
                return
            if ceiled != pads and kind == "maxpool":
                self.max_padded(node, kernel, stride, ceiled, sources)
                return
            if ceiled != pads:
                self.padded_pool(node, kind, kernel, stride, ceiled, sources[0])
                return
        padding: Any = "valid"
        if any(pads):
            if kind == "avgpool" and attrs.get("count_include_pad", 0):
                # Zeros averaged in, divided by the whole window (inception_v3's branch pool):
                # exactly a zero_pad, then the valid pooling.
                self.padded_pool(node, kind, kernel, stride, pads, sources[0])
                return
            found = self.padding(node, attrs, sources[0], kernel, "pool")
            if found is None and kind == "maxpool":
                # PyTorch's padding (ResNet's stem), -inf as cnnspec's maxpool pads: one layer,
                # as the source has it, whatever the values before it.
                self.max_padded(node, kernel, stride, pads, sources)
                return
            if found is None:
                shape = self.hwc(node.input[0])
                size = (
                    f"the {shape[0]}x{shape[1]} input" if shape and len(shape) == 3 else "its input"
                )
                self.gap(
                    node,
                    f"AveragePool pads {pads} with count_include_pad=0",
                    "cnnspec's avgpool leaves only Keras's `same` padding out of the "
                    f"average, and these pads are not `same` for {size}",
                )
                return
            padding = found[0]
        stride_arg = None if stride == kernel else stride
        self.add(node, kind, {"pool": kernel, "stride": stride_arg, "padding": padding}, sources)

    def max_padded(
        self,
        node: Any,
        kernel: tuple[int, ...],
        stride: tuple[int, ...],
        pads: list[int],
        sources: list[str],
    ) -> None:
        """A max pooling padded with -inf by amounts of its own: PyTorch's padding=, or the
        overhang of its ceil_mode (cspresnet50's stem after a leaky ReLU)."""
        top, left, bottom, right = pads
        if max(top, bottom) >= kernel[0] or max(left, right) >= kernel[1]:
            self.gap(
                node,
                f"MaxPool pads {pads} with a {kernel[0]}x{kernel[1]} kernel",
                "a window would hold only padding",
            )
            return
        stride_arg = None if stride == kernel else stride
        padding = ((top, bottom), (left, right))
        self.add(
            node, "maxpool", {"pool": kernel, "stride": stride_arg, "padding": padding}, sources
        )

    def padded_pool(
        self,
        node: Any,
        kind: str,
        kernel: tuple[int, ...],
        stride: tuple[int, ...],
        pads: list[int],
        source: str,
    ) -> None:
        """A zero_pad of the node's pads (`<name>_pad`), then the node's pooling, valid."""
        name = self.name_for(node)
        top, left, bottom, right = pads
        layer = Layer(
            f"{name}_pad",
            "zero_pad",
            {"padding": ((top, bottom), (left, right))},
            (source,),
            f"node '{node.name}' ({node.op_type})",
        )
        self.layers.append(layer)
        self.by_name[layer.name] = layer
        stride_arg = None if stride == kernel else stride
        self.add(
            node,
            kind,
            {"pool": kernel, "stride": stride_arg, "padding": "valid"},
            [layer.name],
            name,
        )

    def ceil_pads(
        self,
        node: Any,
        kind: str,
        kernel: tuple[int, ...],
        stride: tuple[int, ...],
        pads: list[int],
        source: str,
    ) -> list[int] | None:
        """The pads that make a ceil_mode=1 pooling a floor one: its own where ceil and floor
        give the same sizes for the input (squeezenet's pools at 224; every window then lies
        inside the padded input), or, for a maximum, with the last window's overhang padded
        too (with -inf, as maxpool pads: googlenet's). A gap, and None, otherwise."""
        shape = self.hwc(node.input[0])
        if shape is None or len(shape) != 3:
            self.gap(
                node,
                "ceil_mode=1 on an input of unknown size",
                "cnnspec pools as Keras does (floor), and without the size the import cannot "
                "tell whether ceil gives other sizes",
            )
            return None
        top, left, bottom, right = pads
        axes = (
            (shape[0], kernel[0], stride[0], top, bottom),
            (shape[1], kernel[1], stride[1], left, right),
        )
        floor = [_pooled_size(*axis, ceil=False) for axis in axes]
        ceil = [_pooled_size(*axis, ceil=True) for axis in axes]
        if floor == ceil:
            return pads
        if kind == "maxpool":
            # The rows and columns the last window reaches past the padded input: -inf there
            # picks the same maximum as ceil_mode's nothing.
            extra = [
                max(0, (count - 1) * s + k - (size + before + after))
                for count, (size, k, s, before, after) in zip(ceil, axes, strict=True)
            ]
            return [top, left, bottom + extra[0], right + extra[1]]
        self.gap(
            node,
            f"ceil_mode=1 pools the {shape[0]}x{shape[1]} input to {ceil[0]}x{ceil[1]}, "
            f"floor to {floor[0]}x{floor[1]}",
            "cnnspec pools as Keras does (floor): a max pooling takes ceil_mode's overhang as "
            "padding, but an average would count it, which ceil_mode does not",
        )
        return None

    def flatten(self, node: Any, attrs: dict[str, Any], sources: list[str]) -> None:
        shape = self.hwc(node.input[0])
        out = self.shapes.get(node.output[0])
        given = self.shapes.get(node.input[0])
        if (
            node.op_type == "Reshape"
            and given is not None
            and len(given) == 4
            and node.input[0] not in self.channels_last
            and out is not None
            and len(out) == 3
            and None not in given
            and out == [given[0], given[1], given[2] * given[3]]
        ):
            # x.flatten(2): the map's positions as columns, tokens once transposed (below).
            self.aliases[node.output[0]] = sources[0]
            self.positions_first.add(node.output[0])
            return
        if node.op_type == "Flatten" and attrs.get("axis", 1) != 1:
            self.gap(node, f"Flatten axis={attrs.get('axis')}", "cnnspec flattens after the batch")
            return
        if (
            node.op_type == "Reshape"
            and shape is not None
            and len(shape) == 1
            and out is not None
            and len(out) in (2, 4)
            and all(isinstance(d, int) for d in out[1:])
        ):
            # A vector reshaped: to a vector, or to a map (an SE gate's (C, 1, 1)), in HWC.
            dims = out[1:]
            target = (dims[1], dims[2], dims[0]) if len(dims) == 3 else tuple(dims)
            self.add(node, "reshape", {"target": target}, sources)
            return
        if node.op_type != "Flatten" and not (out is not None and len(out) == 2):
            self.gap(node, f"{node.op_type} to {out}", "cnnspec reshapes by flatten or reshape")
            return
        pooled = self.by_name.get(sources[0])
        if (
            node.doc_string != "cnnspec flatten"  # a flatten a spec wrote stays one
            and pooled is not None
            and pooled.kind.startswith("global_")
            and pooled.args.get("keepdims")
            and self.users.get(_output_of(pooled, self.aliases), 1) == 1
        ):
            pooled.args["keepdims"] = False
            flat_name = self.name_for(node)
            if pooled.name == f"{flat_name}_pool":  # cnnspec's own export
                del self.by_name[pooled.name]
                pooled.name = flat_name
                self.by_name[flat_name] = pooled
            else:
                self.by_name.pop(flat_name, None)
            self.aliases[node.output[0]] = pooled.name
            return
        self.add(node, "flatten", {}, sources)  # of a vector too, as a spec may write it

    def gemm(self, node: Any, attrs: dict[str, Any], sources: list[str]) -> None:
        weight = self.constant(node.input[1])
        if weight is None or attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0:
            self.gap(node, "a Gemm that is not x W^T + b", "cnnspec's dense is x W^T + b")
            return
        if not attrs.get("transB", 0):
            weight = weight.T
        bias = self.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if bias is not None and attrs.get("beta", 1.0) != 1.0:
            bias = bias * attrs["beta"]
        name = self.name_for(node, node.input[1])
        self.add(
            node,
            "dense",
            {"units": int(weight.shape[0]), "activation": None, "use_bias": bias is not None},
            sources,
            name,
        )
        self.tensors[f"{name}.weight"] = weight
        if bias is not None:
            self.tensors[f"{name}.bias"] = bias.reshape(-1)

    def matmul(self, node: Any, sources: list[str]) -> None:
        """A dense layer without its bias (an Add after it may be that: see `affine`), on a
        vector or on a channels-last map (nn.Linear on a permuted map, as ConvNeXt's)."""
        weight = self.constant(node.input[1])
        shape = self.hwc(node.input[0])
        of_channels = shape is not None and (
            len(shape) == 1
            or (len(shape) == 3 and node.input[0] in self.channels_last)
            or self.is_tokens(node.input[0])
        )
        if (
            weight is None
            or weight.ndim != 2
            or shape is None
            or not of_channels
            or weight.shape[0] != shape[-1]
        ):
            self.gap(
                node,
                "MatMul",
                "cnnspec multiplies a feature vector, a map's channels (permuted "
                "channels-last) or tokens' features by a weight matrix",
            )
            return
        name = self.name_for(node, self.origin(node.input[1]))
        self.add(
            node,
            "dense",
            {"units": int(weight.shape[1]), "activation": None, "use_bias": False},
            sources,
            name,
        )
        self.tensors[f"{name}.weight"] = weight.T

    def crop(self, node: Any, sources: list[str]) -> None:
        """A Slice of height and width with unit steps: crop(((top, bottom), (left, right)))."""
        shape = self.hwc(node.input[0])
        parts = [self.constant(i) if i else None for i in [*node.input[1:], "", "", ""][:4]]
        starts, ends, axes, steps = (
            [int(v) for v in p.reshape(-1).tolist()] if p is not None else None for p in parts
        )
        if starts is None or ends is None or shape is None or len(shape) != 3:
            self.gap(node, "Slice", "cnnspec crops height and width by constants")
            return
        axes = axes or list(range(len(starts)))
        if steps is not None and any(s != 1 for s in steps):
            self.gap(node, f"Slice with steps {steps}", "cnnspec crops without strides")
            return
        sizes = {2: shape[0], 3: shape[1]}
        amounts = {2: (0, 0), 3: (0, 0)}
        for axis, start, end in zip(axes, starts, ends, strict=True):
            axis %= 4
            if axis not in sizes:
                self.gap(node, f"Slice of axis {axis}", "cnnspec crops height and width")
                return
            size = sizes[axis]
            first = start if start >= 0 else size + start
            stop = min(end, size) if end >= 0 else size + end
            amounts[axis] = (first, size - stop)
        self.add(node, "crop", {"cropping": (amounts[2], amounts[3])}, sources)

    def pad(self, node: Any, attrs: dict[str, Any], sources: list[str]) -> None:
        mode = attrs.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        pads = attrs.get("pads")
        if pads is None and len(node.input) > 1:
            pads = [int(p) for p in self.constant(node.input[1]).tolist()]
        value = self.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if mode != "constant" or (value is not None and float(value) != 0.0) or pads is None:
            self.gap(node, f"{mode} padding", "cnnspec pads with zeros")
            return
        if len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)):
            self.gap(node, f"Pad {pads}", "cnnspec pads height and width")
            return
        top, left, bottom, right = pads[2], pads[3], pads[6], pads[7]
        self.add(node, "zero_pad", {"padding": ((top, bottom), (left, right))}, sources)


# Ops that compute shapes and indices around the real work (an LSTM's, a reshape's): reported
# as part of the module they belong to, not one line each.
_PLUMBING = {
    "Shape",
    "Gather",
    "Slice",
    "Concat",
    "Expand",
    "Unsqueeze",
    "Squeeze",
    "Transpose",
    "Reshape",
    "Cast",
    "ConstantOfShape",
    "Range",
    "Equal",
    "Where",
    "Identity",
}


def _by_module(gaps: list[Gap]) -> list[Gap]:
    """One gap per PyTorch module (node names `/lstm/...`), naming its most telling node."""
    groups: dict[str, list[Gap]] = {}
    for gap in gaps:
        match = re.match(r"node '(/(?:[^']*/)?)[^/']*' \((\w+)\)", gap.where)
        key = match.group(1) if match else gap.where
        groups.setdefault(key, []).append(gap)
    result = []
    for key, members in groups.items():
        telling = [g for g in members if g.where.rsplit("(", 1)[-1].rstrip(")") not in _PLUMBING]
        chosen = (telling or members)[0]
        if len(members) > 1:
            module = key.strip("/").replace("/", ".") or "the forward"
            chosen = Gap(
                chosen.where,
                chosen.what,
                f"{chosen.why} (and {plural(len(members) - 1, 'more node')} of {module})",
            )
        result.append(chosen)
    return result


def _pooled_size(size: int, kernel: int, stride: int, before: int, after: int, ceil: bool) -> int:
    """A pooling's output size along one axis, as ONNX and PyTorch define it: with ceil_mode,
    a last window that would start past the input and its leading padding is dropped."""
    span = size + before + after - kernel
    count = (-(-span // stride) if ceil else span // stride) + 1
    if ceil and (count - 1) * stride >= size + before:
        count -= 1
    return count


def same_zero(value: Any) -> bool:
    values = value if isinstance(value, tuple) else (value,)
    return all(v == 0.0 for v in values)


def _broadcasts_per_channel(shape: tuple[int, ...], rank: int, channels_last: bool) -> bool:
    """Whether a constant of `shape` broadcasts over a value of `rank` axes along its
    channels alone: (C, 1, 1) over an NCHW map, (C,) over a vector or a channels-last map
    (leading ones aside); any shape of one value broadcasts over all."""
    if not shape or all(d == 1 for d in shape):
        return True
    if len(shape) > rank:
        return False
    trailing = 3 if rank == 4 and not channels_last else 1
    if len(shape) < trailing:
        return False  # over an NCHW map, a (C,) vector would broadcast over the width
    return all(d == 1 for d in shape[: len(shape) - trailing]) and all(
        d == 1 for d in shape[len(shape) - trailing + 1 :]
    )


def _output_of(layer: Layer, aliases: dict[str, str]) -> str:
    for onnx_name, target in aliases.items():
        if target == layer.name:
            return onnx_name
    return layer.name


def _plain(value: Any) -> Any:
    """An attribute's value as an entry reads it: text decoded, floats as float32 gives them."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, float):
        return float32(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _attributes(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}
