"""Multi-head self-attention in an ONNX graph, as torch.onnx.export writes nn.MultiheadAttention
(torchvision's ViT) and timm's Attention, read as one `attention` layer.

Around each Softmax whose input is a product of two computed values (scores = q k^T) the
reader looks for the whole computation, from the tokens to the output projection:

    tokens -> [moves] -> projection (MatMul + Add, or Gemm) -> [moves, scales] -> q, k, v
    softmax(q @ k^T * scale) @ v -> [moves] -> projection -> [moves] -> output tokens

where the moves are ops that only rearrange values (Reshape, Transpose, Squeeze, Unsqueeze,
Gather, Split, Slice, Flatten, Identity) and the scales multiply by one constant number. The
exporters write very different moves (nn.MultiheadAttention goes through (N, B, D), timm
through (3, B, heads, N, head size)); rather than a pattern of them, the reader runs them on
the positions themselves: the moves applied to an array numbering the projection's outputs
say, for every value of q, k and v, which token and which projected feature it is. An
attention reads as `attention(heads)` only where

- q, k and v are, for each of G groups (the heads: the export's batch is one), every token in
  order with the same features of one projection of the same tokens (self-attention);
- k enters the product transposed, the softmax is over the keys, and the product of the
  scales is 1/sqrt(head size);
- the heads' outputs are joined feature-wise, token by token, into the output projection, and
  its output is moved back to the tokens' (batch, N, D) order;
- G * head size is D, and every projection has its bias;
- nothing outside uses a value in between (the attention weights, say).

Its tensors are the canonical ones, nn.MultiheadAttention's: the projections' rows and
columns gathered in the order the heads use them (`in_proj_weight` (3D, D), `in_proj_bias`,
`out_proj.weight` (D, D), `out_proj.bias`). A computation that has the shape of an attention
but fails a condition is refused at its Softmax, saying which; one without that shape is left
to the other readers (which refuse its ops)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cnnspec.importing.onnx_fold import compute

MOVES = frozenset(
    {
        "Reshape",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Gather",
        "Split",
        "Slice",
        "Flatten",
        "Identity",
        "Dropout",
    }
)
_SCALES = frozenset({"Mul", "Div"})

_WHAT_IT_IS = (
    "cnnspec's attention is nn.MultiheadAttention's self-attention: the tokens projected to "
    "queries, keys and values, split into heads, softmax(q k^T / sqrt(head size)) v, the heads "
    "joined and projected, every projection with a bias"
)


@dataclass
class Attention:
    """One attention read: the node giving its output, the tokens it reads, its nodes."""

    last: Any
    source: str
    heads: int
    tensors: dict[str, Any]
    # The module's name, from its projections' weights (`encoder.layers.0.self_attention`),
    # or "" where they share no prefix (an exporter's folded `onnx::MatMul_12`).
    module: str
    softmax: Any
    members: set[int] = field(default_factory=set)


@dataclass
class Refused:
    """A computation shaped as an attention that cnnspec's cannot express: at its Softmax."""

    node: Any
    what: str
    why: str
    members: set[int] = field(default_factory=set)


class _NotAttention(Exception):
    """The computation around a Softmax is not an attention's shape: left to the others."""


class _Refusal(Exception):
    def __init__(self, what: str, why: str = _WHAT_IT_IS) -> None:
        super().__init__(what)
        self.what = what
        self.why = why


@dataclass
class _Projection:
    nodes: list[Any]
    x: str  # the data it projects
    weight: Any  # (inputs, outputs): y = x @ weight + bias
    bias: Any | None
    weight_name: str
    output: str


@dataclass
class _Path:
    """q, k or v: the moves from a projection's output, and the scale on the way."""

    steps: list[tuple[Any, str]]
    scale: float
    projection: _Projection
    x_steps: list[tuple[Any, str]]
    tokens: str
    # The shape of the rows the projection reads (its input's but the features), and the
    # token each row is.
    row_shape: tuple[int, ...]
    row_tokens: Any


def find(
    nodes: list[Any],
    constants: dict[str, Any],
    shapes: dict[str, list[Any]],
    origins: dict[str, str],
    skip: set[str],
) -> list[Attention | Refused]:
    """Every attention in `nodes` (those named in `skip` aside: cnnspec's own export, read by
    its step names), read or refused."""
    graph = _Graph(nodes, constants, shapes, origins)
    found: list[Attention | Refused] = []
    for node in nodes:
        if node.op_type != "Softmax" or node.name in skip or graph.folded(node):
            continue
        try:
            found.append(graph.attention(node))
        except _NotAttention:
            continue
        except _Refusal as refusal:
            found.append(Refused(node, refusal.what, refusal.why, graph.region(node)))
    return found


class _Graph:
    def __init__(
        self,
        nodes: list[Any],
        constants: dict[str, Any],
        shapes: dict[str, list[Any]],
        origins: dict[str, str],
    ) -> None:
        self.constants = constants
        self.shapes = shapes
        self.origins = origins
        self.producer = {out: node for node in nodes for out in node.output if out}
        self.consumers: dict[str, list[Any]] = {}
        for node in nodes:
            if self.folded(node):
                continue
            for value in node.input:
                if value:
                    self.consumers.setdefault(value, []).append(node)
        # The nodes of the attention being read, so far (a refusal covers them).
        self.seen: set[int] = set()

    def folded(self, node: Any) -> bool:
        return all(o in self.constants for o in node.output if o)

    def data(self, node: Any) -> list[str]:
        return [i for i in node.input if i and i not in self.constants]

    def attributes(self, node: Any) -> dict[str, Any]:
        from onnx import helper

        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def see(self, nodes: Iterable[Any]) -> None:
        self.seen.update(id(node) for node in nodes)

    # ---- the whole

    def attention(self, softmax: Any) -> Attention:
        import numpy as np

        self.seen = {id(softmax)}
        scores_steps, scores_scale, product = self.scores(softmax)
        query, key = product.input[0], product.input[1]
        after = self.consumers.get(softmax.output[0], [])
        contexts = [
            n
            for n in after
            if n.op_type == "MatMul"
            and n.input[0] == softmax.output[0]
            and n.input[1] not in self.constants
        ]
        if len(contexts) != 1:
            raise _NotAttention
        context = contexts[0]
        value = context.input[1]
        if len(after) > 1:
            raise _Refusal(
                "attention's weights used besides weighing the values",
                "cnnspec's attention gives its output alone (need_weights=False)",
            )
        self.see([product, context, *(n for n, _ in scores_steps)])
        rank = len(self.shapes.get(softmax.input[0]) or [])
        axis = self.attributes(softmax).get("axis", -1)
        if rank < 3 or axis % rank != rank - 1:
            raise _Refusal(f"attention's softmax over axis {axis}", "it is over the keys")
        paths = [
            self.path(v, part) for v, part in ((query, "query"), (key, "key"), (value, "value"))
        ]
        sources = {path.tokens for path in paths}
        if len(sources) != 1:
            raise _Refusal(
                "attention of keys and values from other tokens",
                "cnnspec's attention is self-attention: queries, keys and values of the same "
                "tokens",
            )
        tokens = paths[0].tokens
        shape = self.shapes.get(tokens)
        if not shape or len(shape) != 3 or shape[0] != 1 or None in shape:
            raise _Refusal(f"attention of a tensor of shape {shape}", "it reads tokens (N, D)")
        _, count, dim = shape
        q_ids, k_ids, v_ids = (self.features(path) for path in paths)
        lead = q_ids.shape[:-2]
        if (
            k_ids.shape[:-2] != lead
            or v_ids.shape[:-2] != lead
            or q_ids.shape[-2:][::-1] != k_ids.shape[-2:]
            or v_ids.shape[-2:] != q_ids.shape[-2:]
            or q_ids.shape[-2] != count
        ):
            raise _Refusal(
                f"attention's queries {q_ids.shape}, keys {k_ids.shape} and values {v_ids.shape}",
                "they are not one head size, keys transposed, for every token",
            )
        groups, size = int(np.prod(lead)), int(q_ids.shape[-1])
        if groups * size != dim:
            raise _Refusal(
                f"attention of {groups} heads of {size} features on {dim}-feature tokens",
                "cnnspec's attention splits the tokens' own width among its heads",
            )
        arranged = [
            q_ids.reshape(groups, count, size),
            k_ids.reshape(groups, size, count).transpose(0, 2, 1),
            v_ids.reshape(groups, count, size),
        ]
        maps = [
            self.decode(ids, path, part, count)
            for ids, path, part in zip(arranged, paths, ("queries", "keys", "values"), strict=True)
        ]
        if paths[2].scale != 1.0:
            raise _Refusal(f"attention's values scaled by {paths[2].scale:.6g}", _WHAT_IT_IS)
        scale = paths[0].scale * paths[1].scale * scores_scale
        if not np.isclose(scale, size**-0.5, rtol=1e-5, atol=0.0):
            raise _Refusal(
                f"attention scaled by {scale:.6g}",
                f"cnnspec's attention scales the scores by 1/sqrt(head size), {size**-0.5:.6g} "
                f"for heads of {size} features",
            )
        weights, biases = [], []
        for path, order, part in zip(paths, maps, ("query", "key", "value"), strict=True):
            projection = path.projection
            if projection.bias is None:
                raise _Refusal(
                    f"attention without a bias on its {part} projection",
                    "cnnspec's attention has a bias on every projection (nn.MultiheadAttention's "
                    "bias=True, timm's qkv_bias=True)",
                )
            weights.append(projection.weight[:, order.reshape(-1)].T)
            biases.append(projection.bias[order.reshape(-1)])
        out, last = self.output(context, (*lead, count, size), groups, count, size, dim)
        names = [paths[0].projection.weight_name, out.weight_name]
        self.check_closed(last)
        tensors = {
            "in_proj_weight": np.concatenate(weights).astype(np.float32),
            "in_proj_bias": np.concatenate(biases).astype(np.float32),
        }
        tensors.update(out.tensors)
        module = common_module(names)
        return Attention(last, tokens, groups, tensors, module, softmax, set(self.seen))

    def region(self, softmax: Any) -> set[int]:
        """The nodes of a refused attention, as far as they can be told: those read so far,
        and the moves and projections around its two products (its other nodes, refused one
        by one, would only repeat the cause)."""
        seen = set(self.seen) | {id(softmax)}

        def take(steps: list[tuple[Any, str]]) -> None:
            seen.update(id(n) for n, _ in steps)

        source, steps, _ = self.back(softmax.input[0], scales=True, moves=False)
        take(steps)
        node = self.producer.get(source)
        products = []
        if node is not None and node.op_type == "MatMul":
            products.append(node)
        elif node is not None and node.op_type in ("Add", "Sub", "Where"):  # a mask
            seen.add(id(node))
            for value in self.data(node):
                inner, steps, _ = self.back(value, scales=True, moves=False)
                product = self.producer.get(inner)
                if product is not None and product.op_type == "MatMul":
                    take(steps)
                    products.append(product)
        starts: list[str] = []
        for product in products:
            seen.add(id(product))
            starts += self.data(product)
        for context in self.consumers.get(softmax.output[0], []):
            if context.op_type == "MatMul" and context.input[0] == softmax.output[0]:
                seen.add(id(context))
                starts.append(context.input[1])
                seen.update(id(n) for n in self.ahead(context.output[0]))
        for value in starts:
            source, steps, _ = self.back(value, scales=True, moves=True)
            take(steps)
            projection = self.projection(source)
            if projection is None:
                continue
            seen.update(id(n) for n in projection.nodes)
            _, x_steps, _ = self.back(projection.x, scales=False, moves=True)
            for index in range(len(x_steps) - 1, -1, -1):
                take([x_steps[index]])
                shape = self.shapes.get(x_steps[index][0].input[0]) or []
                if len(shape) == 3 and shape[0] == 1:
                    break  # the tokens
        return seen

    def ahead(self, value: str) -> list[Any]:
        """The moves, then the projection, then the moves from `value` on: the heads joined,
        projected and moved back, as far as they go."""
        found: list[Any] = []
        projected = False
        while True:
            following = self.consumers.get(value, [])
            if len(following) != 1 or self.data(following[0]) != [value]:
                return found
            node = following[0]
            if node.op_type in ("MatMul", "Gemm") and not projected:
                projected = True
            elif node.op_type == "Add" and projected and found and found[-1].op_type == "MatMul":
                pass
            elif node.op_type not in MOVES or len(node.output) != 1:
                return found
            found.append(node)
            value = node.output[0]

    # ---- scores, q, k and v

    def scores(self, softmax: Any) -> tuple[list[tuple[Any, str]], float, Any]:
        """The scales between q k^T and the softmax, and the product's node."""
        source, steps, scale = self.back(softmax.input[0], scales=True, moves=False)
        node = self.producer.get(source)
        if node is None:
            raise _NotAttention
        if node.op_type == "MatMul" and len(self.data(node)) == 2:
            return steps, scale, node
        if node.op_type in ("Add", "Sub", "Where") and any(
            self.is_product(i) for i in self.data(node)
        ):
            self.see([node])
            raise _Refusal(
                "a mask or bias added to the attention scores",
                "cnnspec's attention weighs every token, unmasked",
            )
        raise _NotAttention

    def is_product(self, value: str) -> bool:
        source, _, _ = self.back(value, scales=True, moves=False)
        node = self.producer.get(source)
        return node is not None and node.op_type == "MatMul" and len(self.data(node)) == 2

    def path(self, value: str, part: str) -> _Path:
        source, steps, scale = self.back(value, scales=True, moves=True)
        projection = self.projection(source)
        if projection is None:
            raise _Refusal(
                f"attention's {part} not a projection of tokens ({self.describe(source)})"
            )
        start, x_steps, _ = self.back(projection.x, scales=False, moves=True)
        # The tokens: the value nearest the projection, along the moves before it, that is
        # (1, N, D) and whose rows the projection reads, each a token (nn.MultiheadAttention's
        # moves to (N, 1, D) are the attention's).
        values = [start, *(out for _, out in x_steps)]
        width = projection.weight.shape[0]
        for index in range(len(values) - 1, -1, -1):
            shape = self.shapes.get(values[index]) or []
            if len(shape) != 3 or shape[0] != 1 or shape[2] != width or None in shape:
                continue
            rows = self.rows(shape[1], width, x_steps[index:])
            if rows is not None:
                self.see(
                    [*(n for n, _ in steps), *projection.nodes, *(n for n, _ in x_steps[index:])]
                )
                return _Path(steps, scale, projection, x_steps[index:], values[index], *rows)
        raise _Refusal(
            f"attention's {part} projection of no tokens (batch, N, D) in order "
            f"({self.describe(projection.x)})"
        )

    def rows(
        self, count: int, dim: int, steps: list[tuple[Any, str]]
    ) -> tuple[tuple[int, ...], Any] | None:
        """Where the moves `steps` take tokens (1, N, D) to rows of D features, each a token:
        the rows' shape and each row's token; None where they take them elsewhere."""
        import numpy as np

        try:
            rows = self.replay(np.arange(count * dim).reshape(1, count, dim), steps)
        except _Refusal:
            return None
        if rows.shape[-1] != dim:
            return None
        flat = rows.reshape(-1, dim)
        first = flat[:, 0]
        if not (
            np.array_equal(flat, first[:, None] + np.arange(dim)[None, :])
            and np.all(first % dim == 0)
            and sorted((first // dim).tolist()) == list(range(count))
        ):
            return None
        return tuple(rows.shape[:-1]), first // dim

    def describe(self, value: str) -> str:
        node = self.producer.get(value)
        return f"from {node.op_type} '{node.name}'" if node is not None else f"'{value}'"

    def back(
        self, value: str, scales: bool, moves: bool
    ) -> tuple[str, list[tuple[Any, str]], float]:
        """From `value` back through moves and scales by one number, as far as they go: the
        value they start from, the steps in their order (node, its output taken), the scale."""
        import numpy as np

        steps: list[tuple[Any, str]] = []
        scale = 1.0
        while True:
            node = self.producer.get(value)
            if node is None or self.folded(node):
                break
            data = self.data(node)
            if len(data) != 1:
                break
            if moves and node.op_type in MOVES and node.input[0] == data[0]:
                pass
            elif scales and node.op_type in _SCALES:
                other = next(i for i in node.input if i and i != data[0])
                number = np.asarray(self.constants[other])
                rank = len(self.shapes.get(data[0]) or [])
                if number.size != 1 or number.ndim > rank:
                    break
                if node.op_type == "Div":
                    if node.input[0] != data[0]:
                        break
                    scale /= float(number.reshape(()))
                else:
                    scale *= float(number.reshape(()))
            else:
                break
            steps.append((node, value))
            value = data[0]
        steps.reverse()
        return value, steps, scale

    def projection(self, value: str) -> _Projection | None:
        """x @ W + b as torch writes nn.Linear: MatMul then Add (of more than two axes), or
        Gemm (of two); None for anything else."""
        import numpy as np

        node = self.producer.get(value)
        if node is None:
            return None
        bias, bias_node = None, None
        if node.op_type == "Add" and len(self.data(node)) == 1:
            inner = self.data(node)[0]
            constant = next(i for i in node.input if i and i != inner)
            if len(self.consumers.get(inner, [])) != 1:
                return None
            bias, bias_node = np.asarray(self.constants[constant]), node
            node = self.producer.get(inner)
            if node is None or node.op_type != "MatMul":
                return None
        if node.op_type == "MatMul":
            weight = self.constants.get(node.input[1])
            if weight is None or weight.ndim != 2 or node.input[0] in self.constants:
                return None
            name = self.origins.get(node.input[1], node.input[1])
        elif node.op_type == "Gemm" and bias_node is None:
            attrs = self.attributes(node)
            weight = self.constants.get(node.input[1])
            if (
                weight is None
                or node.input[0] in self.constants
                or attrs.get("transA", 0)
                or attrs.get("alpha", 1.0) != 1.0
                or attrs.get("beta", 1.0) != 1.0
            ):
                return None
            weight = weight.T if attrs.get("transB", 0) else weight
            name = self.origins.get(node.input[1], node.input[1])
            if len(node.input) > 2 and node.input[2]:
                bias = self.constants.get(node.input[2])
                if bias is None:
                    return None
        else:
            return None
        if bias is not None:
            bias = np.asarray(bias)
            if bias.size != weight.shape[1] or any(d != 1 for d in bias.shape[:-1]):
                return None
            bias = bias.reshape(-1)
        nodes = [node] if bias_node is None else [node, bias_node]
        return _Projection(nodes, node.input[0], np.asarray(weight), bias, name, value)

    def replay(self, numbers: Any, steps: list[tuple[Any, str]]) -> Any:
        """The moves of `steps` applied to `numbers` (the scales change no position)."""
        for node, taken in steps:
            if node.op_type in _SCALES or node.op_type in ("Identity", "Dropout"):
                continue
            data = self.data(node)[0]
            values = [
                numbers if i == data else self.constants.get(i) if i else None for i in node.input
            ]
            try:
                result = compute(node.op_type, self.attributes(node), values)
            except (ValueError, TypeError, IndexError):
                result = None
            if result is None:
                raise _Refusal(f"attention moving its values with {node.op_type} '{node.name}'")
            numbers = result[list(node.output).index(taken)] if isinstance(result, list) else result
        return numbers

    def features(self, path: _Path) -> Any:
        """q, k or v as positions of its projection's outputs: row * width + feature."""
        import numpy as np

        width = path.projection.weight.shape[1]
        count = int(np.prod(path.row_shape))
        projected = np.arange(count * width).reshape(*path.row_shape, width)
        return self.replay(projected, path.steps)

    def decode(self, ids: Any, path: _Path, part: str, count: int) -> Any:
        """The projected feature each (head, feature) of q, k or v is: (G, size) of `ids`
        (G, N, size), which must hold every token in order."""
        import numpy as np

        width = path.projection.weight.shape[1]
        token = path.row_tokens[ids // width]
        feature = ids % width
        if not np.array_equal(token, np.broadcast_to(np.arange(count)[None, :, None], ids.shape)):
            raise _Refusal(f"attention's {part} not every token in order")
        order = feature[:, 0, :]
        if not np.array_equal(feature, np.broadcast_to(order[:, None, :], ids.shape)):
            raise _Refusal(f"attention's {part} mixing features across tokens")
        return order

    # ---- the output

    def output(
        self,
        context: Any,
        shape: tuple[int, ...],
        groups: int,
        count: int,
        size: int,
        dim: int,
    ) -> tuple[Any, Any]:
        """The heads joined and projected, then moved back to (batch, N, D): the projection's
        tensors, and the node giving the attention's output."""
        import numpy as np

        value, steps = context.output[0], []
        while True:
            following = self.consumers.get(value, [])
            if len(following) != 1:
                raise _Refusal("attention's heads used past their join")
            node = following[0]
            if node.op_type in ("MatMul", "Gemm"):
                break
            if node.op_type not in MOVES or self.data(node) != [value] or len(node.output) != 1:
                raise _Refusal(f"{node.op_type} '{node.name}' on the attention's heads")
            steps.append((node, node.output[0]))
            value = node.output[0]
        self.see(n for n, _ in steps)
        joined = self.replay(np.arange(int(np.prod(shape))).reshape(shape), steps)
        flat = joined.reshape(-1, joined.shape[-1])
        if flat.shape[1] != dim:
            raise _Refusal(f"attention's heads joined into {flat.shape[1]} features, not {dim}")
        head, token, feature = flat // (count * size), (flat // size) % count, flat % size
        if not np.all(token == token[:, :1]):
            raise _Refusal("attention's heads joined across tokens")
        columns = head * size + feature
        if not np.all(columns == columns[:1]) or sorted(columns[0].tolist()) != list(range(dim)):
            raise _Refusal("attention's heads joined out of order")
        row_tokens = token[:, 0]
        # The projection reads the joined heads: find it from its last node back.
        end = following[0]
        ends = [end.output[0]]
        if end.op_type == "MatMul":
            after = self.consumers.get(end.output[0], [])
            if len(after) == 1 and after[0].op_type == "Add":
                ends.insert(0, after[0].output[0])
        projection = None
        for candidate in ends:
            projection = self.projection(candidate)
            if projection is not None and projection.x == value:
                break
            projection = None
        if projection is None:
            raise _Refusal(f"attention's output {end.op_type} '{end.name}' not a projection")
        self.see(projection.nodes)
        weight, bias = projection.weight, projection.bias
        if weight.shape != (dim, dim):
            raise _Refusal(f"attention's output projection {weight.shape}, not ({dim}, {dim})")
        if bias is None:
            raise _Refusal(
                "attention without a bias on its output projection",
                "cnnspec's attention has a bias on every projection (nn.MultiheadAttention's "
                "bias=True)",
            )
        canonical = np.empty((dim, dim), dtype=np.float32)
        canonical[:, columns[0]] = weight.T
        last = self.back_to_tokens(projection.output, joined.shape[:-1], row_tokens, count, dim)
        tensors = {"out_proj.weight": canonical, "out_proj.bias": bias.astype(np.float32)}
        return _Output(projection.weight_name, tensors), last

    def back_to_tokens(
        self, value: str, rows: tuple[int, ...], row_tokens: Any, count: int, dim: int
    ) -> Any:
        """From the output projection through moves to where its rows are the tokens in
        order, (1, N, D): the node giving that value."""
        import numpy as np

        numbers = np.arange(int(np.prod(rows)) * dim).reshape(*rows, dim)
        expected = (row_tokens.argsort()[:, None] * dim + np.arange(dim)[None, :])[None]
        node = self.producer[value]
        while True:
            if numbers.shape == (1, count, dim) and np.array_equal(numbers, expected):
                return node
            following = self.consumers.get(value, [])
            if len(following) != 1:
                raise _Refusal("attention's output not moved back to the tokens' order")
            node = following[0]
            if node.op_type not in MOVES or self.data(node) != [value] or len(node.output) != 1:
                raise _Refusal("attention's output not moved back to the tokens' order")
            self.see([node])
            numbers = self.replay(numbers, [(node, node.output[0])])
            value = node.output[0]

    def check_closed(self, last: Any) -> None:
        """No value between the tokens and the output is used outside the attention."""
        members = self.seen
        producer_ids = {id(n): n for n in self.producer.values()}
        for member in members:
            node = producer_ids.get(member)
            if node is None or node is last:
                continue
            for out in node.output:
                for user in self.consumers.get(out, []):
                    if id(user) not in members:
                        raise _Refusal(
                            f"attention's inner value '{out}' used by {user.op_type} '{user.name}'",
                            "cnnspec's attention gives its output alone (need_weights=False)",
                        )


@dataclass
class _Output:
    weight_name: str
    tensors: dict[str, Any]


def common_module(names: list[str]) -> str:
    """The dotted prefix the weights' names share: `blocks.0.attn` of `blocks.0.attn.qkv.weight`
    and `blocks.0.attn.proj.weight`."""
    parts = [name.split(".")[:-1] for name in names]
    common: list[str] = []
    for pieces in zip(*parts, strict=False):
        if len(set(pieces)) != 1:
            break
        common.append(pieces[0])
    return ".".join(common)
