"""A Vision Transformer's kinds: tokens, a sequence (N, D) of N vectors of D features, beside
maps (H, W, C) and vectors (C,).

`patch_embed` cuts a map into patches and projects each to a token; `class_token` puts a learnt
token before them; `position_embedding` adds a learnt vector per position; `attention` is
multi-head self-attention; `token_pool` reduces the tokens to one vector (the class token's, or
their mean). Between them, the kinds that act on the last axis take tokens as they are
(`LayerArgs.takes_tokens`: dense, layer_norm, dropout, the activations but softmax, add).

Every framework holds tokens as (batch, N, D), so no backend transposes them. The weights are
torchvision's VisionTransformer's: `attention` is nn.MultiheadAttention's four tensors, which
the Keras script's SelfAttention layer holds under the same names."""

from collections.abc import Mapping
from math import prod
from typing import Any, ClassVar, Literal

from cnnspec import codes
from cnnspec.codegen import Call
from cnnspec.layers.base import format_shape, scalar_or_pair, spatial
from cnnspec.registry import (
    ImportGap,
    KerasLayer,
    KerasReading,
    KerasWeight,
    LayerArgs,
    OnnxBuilder,
    OnnxNode,
    OnnxSteps,
    Pair,
    Params,
    PositiveInt,
    Shape,
    ShapeError,
    TorchLayer,
    Window,
    register,
)

_TOKENS_HINT = "tokens come from patch_embed(); a ViT's kinds are listed under Tokens in the README"


def tokens(shape: Shape, kind: str) -> tuple[int, int]:
    """(N, D) of a tokens input, with a located error for a map or a vector."""
    if len(shape) != 2:
        raise ShapeError(
            codes.NEEDS_TOKENS,
            f"{kind} needs tokens (N, D), but gets {format_shape(shape)}",
            _TOKENS_HINT,
        )
    count, dim = shape
    return count, dim


@register
class PatchEmbed(LayerArgs):
    kind: ClassVar[str] = "patch_embed"
    framework_names: ClassVar[tuple[str, ...]] = ("PatchEmbed", "PatchEmbedding")
    doc: ClassVar[str] = (
        "A ViT's patch embedding: cuts the (H, W, C) map into patch x patch squares and "
        "projects each to a token of `dim` features (a convolution with kernel and stride "
        "`patch`), giving (H/patch * W/patch, dim) tokens in row-major order."
    )
    positional: ClassVar[tuple[str, ...]] = ("dim",)
    aliases: ClassVar[dict[str, str]] = {"patch_size": "patch", "embed_dim": "dim"}
    dim: PositiveInt
    patch: Pair = (16, 16)

    def output_shape(self, inputs: list[Shape]) -> Shape:
        h, w, _ = spatial(inputs[0], self.kind)
        ph, pw = self.patch
        if h % ph or w % pw:
            raise ShapeError(
                codes.SETTINGS_CONFLICT,
                f"patch_embed cannot cut the {h}x{w} map into {ph}x{pw} patches",
                "the map's height and width must be multiples of the patch size",
                field="patch",
            )
        return ((h // ph) * (w // pw), self.dim)

    def params(self, inputs: list[Shape], output: Shape) -> Params:
        return Params(prod(self.patch) * inputs[0][-1] * self.dim + self.dim)

    def macs(self, inputs: list[Shape], output: Shape) -> int:
        return output[0] * self.dim * prod(self.patch) * inputs[0][-1]

    def window(self) -> Window:
        return Window(kernel=self.patch, stride=self.patch)

    def keras(self) -> list[KerasLayer]:
        patch = scalar_or_pair(self.patch)
        return [
            KerasLayer("", Call("layers.Conv2D", self.dim, patch, strides=patch)),
            KerasLayer("_tokens", Call("layers.Reshape", (-1, self.dim))),
        ]

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        patch = scalar_or_pair(self.patch)
        call = Call("nn.Conv2d", inputs[0][-1], self.dim, patch, stride=patch)
        # (B, D, H', W') to (B, H' * W', D): the positions row by row, as Keras's Reshape.
        return TorchLayer(call, "{module}({x}).flatten(2).transpose(1, 2)")

    def weight_shapes(self, inputs: list[Shape]) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.dim, inputs[0][-1], *self.patch), "bias": (self.dim,)}

    def keras_weights(self) -> tuple[KerasWeight, ...]:
        return (KerasWeight("kernel", "weight", "conv"), KerasWeight("bias", "bias"))

    def initial_value(self, suffix: str) -> float | None:
        return None if suffix == "weight" else 0.0

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        weight, bias = graph.weight(f"{name}.weight"), graph.weight(f"{name}.bias")
        patches = graph.op(
            "Conv",
            [inputs[0], weight, bias],
            f"{name}_patches",
            kernel_shape=list(self.patch),
            strides=list(self.patch),
        )
        flat = graph.constant(f"{name}_flat_shape", [0, self.dim, -1], (3,), dtype="int64")
        y = graph.op("Reshape", [patches, flat], f"{name}_flat")
        return graph.op("Transpose", [y], name, perm=[0, 2, 1])

    onnx_steps: ClassVar[OnnxSteps | None] = OnnxSteps(
        every=("patches", "flat"), signatures=(("patches", "flat"),), inputs=("patches",)
    )

    @classmethod
    def from_onnx_steps(cls, steps: Mapping[str, OnnxNode]) -> dict[str, Any] | None:
        conv = steps["patches"]
        weight = conv.constants[1] if len(conv.constants) > 1 else None
        kernel = tuple(conv.attributes.get("kernel_shape", ()))
        if (
            weight is None
            or len(kernel) != 2
            or tuple(conv.attributes.get("strides", ())) != kernel
        ):
            return None
        return {"dim": int(weight.shape[0]), "patch": kernel}


@register
class ClassToken(LayerArgs):
    kind: ClassVar[str] = "class_token"
    takes_tokens: ClassVar[bool] = True
    framework_names: ClassVar[tuple[str, ...]] = ("ClassToken", "cls_token")
    doc: ClassVar[str] = (
        "A ViT's class token: a learnt vector of D features put before the N tokens, giving "
        "(N + 1, D); `token_pool(class)` reads it out at the end."
    )

    def output_shape(self, inputs: list[Shape]) -> Shape:
        count, dim = tokens(inputs[0], self.kind)
        return (count + 1, dim)

    def params(self, inputs: list[Shape], output: Shape) -> Params:
        return Params(output[-1])

    def window(self) -> Window:
        return Window(global_=True)  # a token that sees every patch

    def keras(self) -> list[KerasLayer]:
        return [KerasLayer("", Call("ClassToken"))]

    def keras_helpers(self) -> tuple[str, ...]:
        return ("ClassToken",)

    keras_classes: ClassVar[tuple[str, ...]] = ("ClassToken",)

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> KerasReading:
        return {}

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        return TorchLayer(Call("ClassToken", inputs[0][-1]), helpers=("ClassToken",))

    def weight_shapes(self, inputs: list[Shape]) -> dict[str, tuple[int, ...]]:
        return {"weight": (1, 1, inputs[0][-1])}

    def keras_weights(self) -> tuple[KerasWeight, ...]:
        return (KerasWeight("token", "weight"),)

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        dim = shapes[0][-1]
        # The token, repeated for each example: Expand to (batch, 1, D).
        shape = graph.op("Shape", [inputs[0]], f"{name}_shape")
        start = graph.constant(f"{name}_start", [0], (1,), dtype="int64")
        end = graph.constant(f"{name}_end", [1], (1,), dtype="int64")
        batch = graph.op("Slice", [shape, start, end], f"{name}_batch")
        rest = graph.constant(f"{name}_rest", [1, dim], (2,), dtype="int64")
        size = graph.op("Concat", [batch, rest], f"{name}_size", axis=0)
        token = graph.op("Expand", [graph.weight(f"{name}.weight"), size], f"{name}_expand")
        return graph.op("Concat", [token, inputs[0]], name, axis=1)

    onnx_steps: ClassVar[OnnxSteps | None] = OnnxSteps(
        every=("shape", "batch", "size", "expand"),
        signatures=(("shape", "expand"),),
        inputs=("shape",),
    )

    @classmethod
    def from_onnx_steps(cls, steps: Mapping[str, OnnxNode]) -> dict[str, Any] | None:
        return {} if steps[""].op_type == "Concat" else None


@register
class PositionEmbedding(LayerArgs):
    kind: ClassVar[str] = "position_embedding"
    takes_tokens: ClassVar[bool] = True
    framework_names: ClassVar[tuple[str, ...]] = ("PositionEmbedding", "pos_embed")
    doc: ClassVar[str] = (
        "A ViT's learnt position embeddings: a vector of D features for each of the N "
        "positions, added to the tokens."
    )

    def output_shape(self, inputs: list[Shape]) -> Shape:
        tokens(inputs[0], self.kind)
        return inputs[0]

    def params(self, inputs: list[Shape], output: Shape) -> Params:
        return Params(prod(output))

    def keras(self) -> list[KerasLayer]:
        return [KerasLayer("", Call("PositionEmbedding"))]

    def keras_helpers(self) -> tuple[str, ...]:
        return ("PositionEmbedding",)

    keras_classes: ClassVar[tuple[str, ...]] = ("PositionEmbedding",)

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> KerasReading:
        return {}

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        count, dim = inputs[0]
        return TorchLayer(Call("PositionEmbedding", count, dim), helpers=("PositionEmbedding",))

    def weight_shapes(self, inputs: list[Shape]) -> dict[str, tuple[int, ...]]:
        return {"weight": (1, *inputs[0])}

    def keras_weights(self) -> tuple[KerasWeight, ...]:
        return (KerasWeight("embedding", "weight"),)

    def initial_value(self, suffix: str) -> float | None:
        return None

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        y = graph.op("Add", [inputs[0], graph.weight(f"{name}.weight")], f"{name}_embed")
        # The node carrying the layer's name, by which the ONNX reader finds the Add again
        # (an Add of a constant is otherwise an offset); onnxruntime drops it.
        return graph.op("Identity", [y], name)

    onnx_steps: ClassVar[OnnxSteps | None] = OnnxSteps(
        every=("embed",), signatures=(("embed",),), inputs=("embed",)
    )

    @classmethod
    def from_onnx_steps(cls, steps: Mapping[str, OnnxNode]) -> dict[str, Any] | None:
        return {} if steps["embed"].op_type == "Add" else None


@register
class Attention(LayerArgs):
    kind: ClassVar[str] = "attention"
    takes_tokens: ClassVar[bool] = True
    framework_names: ClassVar[tuple[str, ...]] = (
        "MultiHeadAttention",
        "MultiheadAttention",
        "SelfAttention",
    )
    doc: ClassVar[str] = (
        "Multi-head self-attention over tokens: `heads` heads of D / heads features each, "
        "with a bias on every projection (nn.MultiheadAttention's, and torchvision's ViT's). "
        "The weights are one (3D, D) projection to queries, keys and values and one (D, D) "
        "projection out of the heads."
    )
    positional: ClassVar[tuple[str, ...]] = ("heads",)
    aliases: ClassVar[dict[str, str]] = {"num_heads": "heads"}
    heads: PositiveInt

    def output_shape(self, inputs: list[Shape]) -> Shape:
        _, dim = tokens(inputs[0], self.kind)
        if dim % self.heads:
            raise ShapeError(
                codes.SETTINGS_CONFLICT,
                f"attention cannot split {dim} features into {self.heads} heads",
                f"the token size must be a multiple of heads: {_divisors(dim)}",
                field="heads",
            )
        return inputs[0]

    def params(self, inputs: list[Shape], output: Shape) -> Params:
        dim = output[-1]
        return Params(4 * dim * dim + 4 * dim)

    def macs(self, inputs: list[Shape], output: Shape) -> int:
        count, dim = output
        # The four projections, then the scores and the weighted sum of the values.
        return 4 * count * dim * dim + 2 * count * count * dim

    def window(self) -> Window:
        return Window(global_=True)

    def keras(self) -> list[KerasLayer]:
        return [KerasLayer("", Call("SelfAttention", self.heads))]

    def keras_helpers(self) -> tuple[str, ...]:
        return ("SelfAttention",)

    keras_classes: ClassVar[tuple[str, ...]] = ("SelfAttention",)

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> KerasReading:
        return {"heads": int(config["num_heads"])}

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        call = Call("nn.MultiheadAttention", inputs[0][-1], self.heads, batch_first=True)
        return TorchLayer(call, "{module}({x}, {x}, {x}, need_weights=False)[0]")

    def weight_shapes(self, inputs: list[Shape]) -> dict[str, tuple[int, ...]]:
        dim = inputs[0][-1]
        return {
            "in_proj_weight": (3 * dim, dim),
            "in_proj_bias": (3 * dim,),
            "out_proj.weight": (dim, dim),
            "out_proj.bias": (dim,),
        }

    def keras_weights(self) -> tuple[KerasWeight, ...]:
        return (
            KerasWeight("in_proj_kernel", "in_proj_weight", "dense"),
            KerasWeight("in_proj_bias", "in_proj_bias"),
            KerasWeight("out_proj_kernel", "out_proj.weight", "dense"),
            KerasWeight("out_proj_bias", "out_proj.bias"),
        )

    def initial_value(self, suffix: str) -> float | None:
        return None if suffix.endswith("weight") else 0.0

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        _, dim = shapes[0]
        size = dim // self.heads

        def project(x: str, tensor: str, step: str) -> str:
            kernel = graph.op(
                "Transpose",
                [graph.weight(f"{name}.{tensor}_weight")],
                f"{name}_{step}weights",
                perm=[1, 0],
            )
            y = graph.op("MatMul", [x, kernel], f"{name}_{step}")
            return graph.op("Add", [y, graph.weight(f"{name}.{tensor}_bias")], f"{name}_{step}bias")

        qkv = project(inputs[0], "in_proj", "qkv")
        split = graph.constant(
            f"{name}_heads_shape", [0, 0, 3, self.heads, size], (5,), dtype="int64"
        )
        heads = graph.op("Reshape", [qkv, split], f"{name}_heads")
        # (3, batch, heads, N, size): queries, keys and values, each per head.
        qkv_heads = graph.op("Transpose", [heads], f"{name}_perhead", perm=[2, 0, 3, 1, 4])
        parts = []
        for index, part in enumerate(("query", "key", "value")):
            which = graph.constant(f"{name}_{part}_index", [index], (), dtype="int64")
            parts.append(graph.op("Gather", [qkv_heads, which], f"{name}_{part}", axis=0))
        query, key, value = parts
        keys = graph.op("Transpose", [key], f"{name}_keys", perm=[0, 1, 3, 2])
        scores = graph.op("MatMul", [query, keys], f"{name}_scores")
        scale = graph.constant(f"{name}_scale_factor", [size**-0.5])
        scaled = graph.op("Mul", [scores, scale], f"{name}_scaled")
        weights = graph.op("Softmax", [scaled], f"{name}_softmax", axis=-1)
        context = graph.op("MatMul", [weights, value], f"{name}_context")
        merged = graph.op("Transpose", [context], f"{name}_merge", perm=[0, 2, 1, 3])
        flat = graph.constant(f"{name}_merged_shape", [0, 0, dim], (3,), dtype="int64")
        merged = graph.op("Reshape", [merged, flat], f"{name}_merged")
        kernel = graph.op(
            "Transpose",
            [graph.weight(f"{name}.out_proj.weight")],
            f"{name}_outweights",
            perm=[1, 0],
        )
        y = graph.op("MatMul", [merged, kernel], f"{name}_outproj")
        return graph.op("Add", [y, graph.weight(f"{name}.out_proj.bias")], name)

    onnx_steps: ClassVar[OnnxSteps | None] = OnnxSteps(
        every=(
            "qkvweights",
            "qkv",
            "qkvbias",
            "heads",
            "perhead",
            "query",
            "key",
            "value",
            "keys",
            "scores",
            "scaled",
            "softmax",
            "context",
            "merge",
            "merged",
            "outweights",
            "outproj",
        ),
        signatures=(("qkv", "heads", "scores", "softmax", "context", "outproj"),),
        inputs=("qkv",),
    )

    @classmethod
    def from_onnx_steps(cls, steps: Mapping[str, OnnxNode]) -> dict[str, Any] | None:
        heads = steps["heads"]
        shape = heads.constants[1] if len(heads.constants) > 1 else None
        if shape is None or shape.size != 5:
            return None
        return {"heads": int(shape.reshape(-1)[3])}


@register
class TokenPool(LayerArgs):
    kind: ClassVar[str] = "token_pool"
    takes_tokens: ClassVar[bool] = True
    doc: ClassVar[str] = (
        "Reduces tokens (N, D) to one vector (D,): the class token's (`mode=class`, the "
        "first token) or the mean of all tokens (`mode=mean`)."
    )
    positional: ClassVar[tuple[str, ...]] = ("mode",)
    mode: Literal["class", "mean"] = "class"

    def output_shape(self, inputs: list[Shape]) -> Shape:
        _, dim = tokens(inputs[0], self.kind)
        return (dim,)

    def window(self) -> Window:
        return Window(global_=True)

    def keras(self) -> list[KerasLayer]:
        if self.mode == "mean":
            return [KerasLayer("", Call("layers.GlobalAveragePooling1D"))]
        return [KerasLayer("", Call("FirstToken"))]

    def keras_helpers(self) -> tuple[str, ...]:
        return ("FirstToken",) if self.mode == "class" else ()

    keras_classes: ClassVar[tuple[str, ...]] = ("FirstToken", "GlobalAveragePooling1D")

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> KerasReading:
        if class_name == "FirstToken":
            return {"mode": "class"}
        if config.get("keepdims"):
            raise ImportGap("keepdims=True", "token_pool gives a vector (D,)")
        return {"mode": "mean"}

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        return TorchLayer(None, "{x}[:, 0]" if self.mode == "class" else "{x}.mean(1)")

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        count = shapes[0][0]
        if self.mode == "class":
            index = graph.constant(f"{name}_index", [0], (1,), dtype="int64")
            first = graph.op("Gather", [inputs[0], index], f"{name}_first", axis=1)
            return graph.op("Flatten", [first], name, axis=1)
        # The mean as a product with a column of 1 / N (the same at every opset, where
        # ReduceMean's axes moved from an attribute to an input).
        features = graph.op("Transpose", [inputs[0]], f"{name}_features", perm=[0, 2, 1])
        column = graph.constant(f"{name}_column", [1.0 / count] * count, (count, 1))
        mean = graph.op("MatMul", [features, column], f"{name}_mean")
        return graph.op("Flatten", [mean], name, axis=1)

    onnx_steps: ClassVar[OnnxSteps | None] = OnnxSteps(
        every=("first", "features", "mean"),
        signatures=(("first",), ("features", "mean")),
        inputs=("first", "features"),
    )

    @classmethod
    def from_onnx_steps(cls, steps: Mapping[str, OnnxNode]) -> dict[str, Any] | None:
        return {"mode": "class" if "first" in steps else "mean"}


def _divisors(dim: int) -> str:
    found = [str(d) for d in range(1, min(dim, 64) + 1) if dim % d == 0]
    return ", ".join(found[:10])
