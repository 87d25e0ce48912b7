"""MaxViT's attention, on maps (H, W, C): `partition_attention`, multi-head self-attention within
the partitions of the map, either windows (MaxViT's block attention: each P x P square of
positions) or a grid (its grid attention: P x P positions spread evenly over the whole map, at a
stride of H/P and W/P), with a learnt bias per relative position of two tokens in the partition.

The tensors and the computation are torchvision's RelativePositionalMultiHeadAttention's
(to_qkv, merge, relative_position_bias_table; the relative-position index is
cnnspec.runtime.rules' window_index, a fixed table) with its partitioning (WindowPartition,
the SwapAxes of the grid, WindowDepartition) done inside the layer, so that a spec writes the
rest of torchvision's PartitionAttentionLayer (its two LayerNorms, its MLP, its residual adds),
which act per position alike in the partitioned and in the map's layout, as ordinary layers.

A kind of its own rather than an argument of window_attention: MaxViT scales the scores by the
whole channel count's C^-0.5, not a head's (torchvision's scale_factor is feat_dim ** -0.5), and
has no padding, shift or mask; its grid is a partition Swin has not."""

from collections.abc import Mapping
from typing import Any, ClassVar

from cnnspec import codes
from cnnspec.codegen import Call
from cnnspec.layers.base import spatial
from cnnspec.registry import (
    KerasLayer,
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
from cnnspec.runtime.rules import window_index


def partition_perms(grid: bool) -> tuple[list[int], list[int]]:
    """The Transposes that partition an NCHW map reshaped to (B, C, a, b, c, d) into (B, groups
    along H, groups along W, P_h, P_w, C), and that put the partitions, so shaped, back into
    (B, C, a, b, c, d): windows split H into (H/P, P), a grid into (P, H/P)."""
    if grid:
        return [0, 3, 5, 2, 4, 1], [0, 5, 3, 1, 4, 2]
    return [0, 2, 4, 3, 5, 1], [0, 5, 1, 3, 2, 4]


@register
class PartitionAttention(LayerArgs):
    kind: ClassVar[str] = "partition_attention"
    framework_names: ClassVar[tuple[str, ...]] = (
        "PartitionAttention",
        "RelativePositionalMultiHeadAttention",
    )
    doc: ClassVar[str] = (
        "MaxViT's partitioned attention on an (H, W, C) map: the map, whose height and width "
        "`size` divides, is cut into windows of `size` (MaxViT's block attention) or, with "
        "`grid=true`, into groups of size[0] x size[1] positions spread over the whole map at a "
        "stride of H/size (its grid attention); each partition's positions attend to each "
        "other with `heads` heads, the scores scaled by C^-0.5 and given a learnt bias per "
        "relative position. torchvision's RelativePositionalMultiHeadAttention with the "
        "partitioning of its PartitionAttentionLayer, its weights named alike."
    )
    positional: ClassVar[tuple[str, ...]] = ("heads",)
    aliases: ClassVar[dict[str, str]] = {
        "num_heads": "heads",
        "partition_size": "size",
        "window": "size",
    }
    heads: PositiveInt
    size: Pair = (7, 7)
    grid: bool = False

    def output_shape(self, inputs: list[Shape]) -> Shape:
        h, w, c = spatial(inputs[0], self.kind)
        if c % self.heads:
            raise ShapeError(
                codes.SETTINGS_CONFLICT,
                f"partition_attention cannot split {c} channels into {self.heads} heads",
                "the channels must be a multiple of heads",
                field="heads",
            )
        for extent, step, axis in zip((h, w), self.size, ("height", "width"), strict=True):
            if extent % step:
                # torchvision leaves it undefined (MaxViT pads nothing): refused here.
                raise ShapeError(
                    codes.SETTINGS_CONFLICT,
                    f"partition_attention cannot cut a {axis} of {extent} into partitions "
                    f"of {step}",
                    f"the map's {axis} must be a multiple of size: "
                    f"{_divisors(extent)} divide {extent}",
                    field="size",
                )
        return inputs[0]

    def tokens(self) -> int:
        return self.size[0] * self.size[1]

    def table_rows(self) -> int:
        return (2 * self.size[0] - 1) * (2 * self.size[1] - 1)

    def params(self, inputs: list[Shape], output: Shape) -> Params:
        dim = output[-1]
        return Params(4 * dim * dim + 4 * dim + self.table_rows() * self.heads)

    def macs(self, inputs: list[Shape], output: Shape) -> int:
        h, w, dim = output
        # The four projections of every position, then each partition's scores and the
        # weighted sum of its values.
        return 4 * h * w * dim * dim + 2 * h * w * self.tokens() * dim

    def window(self) -> Window:
        if self.grid:
            # A grid's partition spans the whole map.
            return Window(global_=True)
        return Window(kernel=(2 * self.size[0] - 1, 2 * self.size[1] - 1))

    def keras(self) -> list[KerasLayer]:
        grid = {"grid": True} if self.grid else {}
        return [KerasLayer("", Call("PartitionAttention", self.heads, size=self.size, **grid))]

    def keras_helpers(self) -> tuple[str, ...]:
        return ("PartitionAttention",)

    keras_classes: ClassVar[tuple[str, ...]] = ("PartitionAttention",)

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "heads": int(config["num_heads"]),
            "size": tuple(int(v) for v in config["size"]),
            "grid": bool(config.get("grid", False)),
        }

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        dim = inputs[0][-1]
        grid = {"grid": True} if self.grid else {}
        call = Call("PartitionAttention", dim, self.heads, self.size, **grid)
        # The module takes the NCHW map, as torchvision's PartitionAttentionLayer does.
        return TorchLayer(call, helpers=("PartitionAttention",))

    def weight_shapes(self, inputs: list[Shape]) -> dict[str, tuple[int, ...]]:
        dim = inputs[0][-1]
        return {
            "to_qkv.weight": (3 * dim, dim),
            "to_qkv.bias": (3 * dim,),
            "merge.weight": (dim, dim),
            "merge.bias": (dim,),
            "relative_position_bias_table": (self.table_rows(), self.heads),
        }

    def keras_weights(self) -> tuple[KerasWeight, ...]:
        return (
            KerasWeight("to_qkv_kernel", "to_qkv.weight", "dense"),
            KerasWeight("to_qkv_bias", "to_qkv.bias"),
            KerasWeight("merge_kernel", "merge.weight", "dense"),
            KerasWeight("merge_bias", "merge.bias"),
            KerasWeight("relative_position_bias_table", "relative_position_bias_table"),
        )

    def initial_value(self, suffix: str) -> float | None:
        return 0.0 if suffix.endswith("bias") else None

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        h, w, dim = shapes[0]
        (ph, pw), count, heads = self.size, self.tokens(), self.heads
        head = dim // heads
        # Windows split each axis into (groups, P), a grid into (P, stride).
        split = [h // ph, ph, w // pw, pw] if not self.grid else [ph, h // ph, pw, w // pw]
        groups = (h // ph, w // pw)
        forward, backward = partition_perms(self.grid)

        def shape(step: str, values: list[int]) -> str:
            return graph.constant(f"{name}_{step}_shape", values, (len(values),), dtype="int64")

        def project(x: str, tensor: str, step: str) -> str:
            kernel = graph.op(
                "Transpose",
                [graph.weight(f"{name}.{tensor}.weight")],
                f"{name}_{step}weights",
                perm=[1, 0],
            )
            y = graph.op("MatMul", [x, kernel], f"{name}_{step}")
            return graph.op("Add", [y, graph.weight(f"{name}.{tensor}.bias")], f"{name}_{step}bias")

        x = graph.op("Reshape", [inputs[0], shape("split", [-1, dim, *split])], f"{name}_split")
        x = graph.op("Transpose", [x], f"{name}_partition", perm=forward)
        x = graph.op("Reshape", [x, shape("tokens", [-1, count, dim])], f"{name}_tokens")
        qkv = project(x, "to_qkv", "qkv")
        qkv = graph.op(
            "Reshape", [qkv, shape("heads", [-1, count, 3, heads, head])], f"{name}_heads"
        )
        qkv = graph.op("Transpose", [qkv], f"{name}_perhead", perm=[2, 0, 3, 1, 4])
        parts = []
        for position, part in enumerate(("query", "key", "value")):
            which = graph.constant(f"{name}_{part}_index", [position], (), dtype="int64")
            parts.append(graph.op("Gather", [qkv, which], f"{name}_{part}", axis=0))
        query, key, value = parts
        # torchvision scales the keys, by the whole channel count's root.
        scale = graph.constant(f"{name}_scale_factor", [dim**-0.5])
        key = graph.op("Mul", [key, scale], f"{name}_scaled")
        keys = graph.op("Transpose", [key], f"{name}_keys", perm=[0, 1, 3, 2])
        scores = graph.op("MatMul", [query, keys], f"{name}_scores")
        index = graph.constant(
            f"{name}_relative_index", window_index(self.size), (count * count,), "int64"
        )
        table = graph.weight(f"{name}.relative_position_bias_table")
        bias = graph.op("Gather", [table, index], f"{name}_relative", axis=0)
        bias = graph.op("Reshape", [bias, shape("bias", [count, count, heads])], f"{name}_biasgrid")
        bias = graph.op("Transpose", [bias], f"{name}_bias", perm=[2, 0, 1])
        scores = graph.op("Add", [scores, bias], f"{name}_biased")
        weights = graph.op("Softmax", [scores], f"{name}_softmax", axis=-1)
        context = graph.op("MatMul", [weights, value], f"{name}_context")
        context = graph.op("Transpose", [context], f"{name}_gather", perm=[0, 2, 1, 3])
        context = graph.op(
            "Reshape", [context, shape("merged", [-1, count, dim])], f"{name}_merged"
        )
        y = project(context, "merge", "merge")
        y = graph.op("Reshape", [y, shape("groups", [-1, *groups, ph, pw, dim])], f"{name}_groups")
        y = graph.op("Transpose", [y], f"{name}_departition", perm=backward)
        return graph.op("Reshape", [y, shape("map", [-1, dim, h, w])], name)

    onnx_steps: ClassVar[OnnxSteps | None] = OnnxSteps(
        every=(
            "split",
            "partition",
            "tokens",
            "qkvweights",
            "qkv",
            "qkvbias",
            "heads",
            "perhead",
            "query",
            "key",
            "value",
            "scaled",
            "keys",
            "scores",
            "relative",
            "biasgrid",
            "bias",
            "biased",
            "softmax",
            "context",
            "gather",
            "merged",
            "mergeweights",
            "merge",
            "mergebias",
            "groups",
            "departition",
        ),
        signatures=(("split", "partition", "heads", "relative", "softmax", "departition"),),
        inputs=("split",),
    )

    @classmethod
    def from_onnx_steps(cls, steps: Mapping[str, OnnxNode]) -> dict[str, Any] | None:
        split, perm = steps["split"].constants, steps["partition"].attributes.get("perm")
        if len(split) < 2 or split[1] is None or perm is None:
            return None
        heads = steps["heads"].constants
        if len(heads) < 2 or heads[1] is None:
            return None
        values, head_shape = split[1].reshape(-1), heads[1].reshape(-1)
        if values.size != 6 or head_shape.size != 5:
            return None
        grid = list(perm) == partition_perms(True)[0]
        size = (int(values[2]), int(values[4])) if grid else (int(values[3]), int(values[5]))
        found: dict[str, Any] = {"heads": int(head_shape[3]), "size": size}
        return {**found, "grid": True} if grid else found


def _divisors(extent: int) -> str:
    found = [str(d) for d in range(1, extent + 1) if extent % d == 0]
    return ", ".join(found[:10])
