"""A Swin Transformer's kinds, on maps (H, W, C) held channels-last as torchvision's Swin holds
them after its patch embedding: `window_attention`, multi-head self-attention within windows
of the map (shifted by half a window every other block), and `patch_merge`, each 2x2 square
of positions made one position of 4C channels (torchvision's PatchMerging before its norm
and reduction, which are layer_norm and dense).

The tensors and the computation are torchvision's ShiftedWindowAttention's (qkv, proj,
relative_position_bias_table; the relative-position index and the shift mask are fixed
tables, cnnspec.runtime.rules' window_index and window_mask, so no weights), and the PyTorch
script's WindowAttention holds them under the same names.

`version=2` is Swin V2's attention, torchvision's ShiftedWindowAttentionV2: the same windows,
shift and mask, but cosine attention (q and k of unit length, the scores times a learnt
per-head exp(logit_scale), clamped at 100), a position bias that a small MLP (cpb_mlp) computes
from each relative offset's log-spaced coordinates (window_coords, a fixed table) rather than a
learnt table, and no key bias (torchvision zeroes that third of qkv.bias as it computes, and so
do the emitters: the tensor keeps its shape and its name). An argument rather than a kind of its
own: the windows, the shift, the shape rule and the state dict's first four tensors are the
same, and V2's other differences (the norm after the attention, the reduction before the patch
merging's norm) are the spec's order of layers, not this kind's."""

import math
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

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
from cnnspec.runtime.rules import window_coords, window_index, window_mask, window_shift
from cnnspec.schema import Before, Problem


def _shift(value: Any) -> Any:
    if isinstance(value, bool):
        raise Problem("must be a non-negative integer or a pair of them")
    if isinstance(value, int):
        value = (value, value)
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    ):
        return value
    raise Problem(
        "must be a non-negative integer or a pair of them", hint="for example 3, or 0 for none"
    )


ShiftPair = Annotated[tuple[int, int], Before(_shift)]

# Swin V2's continuous position bias: cpb_mlp is Linear(2, CPB_HIDDEN), ReLU, Linear(CPB_HIDDEN,
# heads, bias=False) in torchvision (and in the paper); its output goes through 16 * sigmoid.
CPB_HIDDEN = 512
# torchvision clamps the logit scale at log(100) before its exp, and starts it at log(10).
LOGIT_MAX = math.log(100.0)
LOGIT_START = math.log(10.0)


# The steps of one F.normalize in the ONNX graph of version 2 (see WindowAttention.onnx).
_UNIT_STEPS = ("squares", "sum", "length", "floor", "unit")


def padded(size: tuple[int, int], window: tuple[int, int]) -> tuple[int, int]:
    """The map padded (bottom and right) to whole windows, as torchvision pads it."""
    return (-(-size[0] // window[0]) * window[0], -(-size[1] // window[1]) * window[1])


@register
class WindowAttention(LayerArgs):
    kind: ClassVar[str] = "window_attention"
    framework_names: ClassVar[tuple[str, ...]] = (
        "ShiftedWindowAttention",
        "ShiftedWindowAttentionV2",
        "WindowAttention",
    )
    doc: ClassVar[str] = (
        "A Swin Transformer's shifted-window attention on an (H, W, C) map: the map, padded "
        "to whole windows and rolled by `shift` (none along an axis one window covers), is "
        "cut into windows of `size`, and each window's positions attend to each other with `heads` "
        "heads and a learnt bias per relative position (masked across the roll's seams); "
        "torchvision's ShiftedWindowAttention, its weights named alike. `version=2` is Swin V2's "
        "(ShiftedWindowAttentionV2): cosine attention scaled by a learnt per-head logit_scale, "
        "the position bias computed by a small MLP (cpb_mlp) from log-spaced offsets, no key bias."
    )
    positional: ClassVar[tuple[str, ...]] = ("heads",)
    aliases: ClassVar[dict[str, str]] = {
        "num_heads": "heads",
        "window": "size",
        "window_size": "size",
        "shift_size": "shift",
    }
    heads: PositiveInt
    size: Pair = (7, 7)
    shift: ShiftPair = (0, 0)
    version: Literal[1, 2] = 1

    def output_shape(self, inputs: list[Shape]) -> Shape:
        c = spatial(inputs[0], self.kind)[2]
        if c % self.heads:
            raise ShapeError(
                codes.SETTINGS_CONFLICT,
                f"window_attention cannot split {c} channels into {self.heads} heads",
                f"the channels must be a multiple of heads: {_divisors(c)}",
                field="heads",
            )
        for moved, step, axis in zip(self.shift, self.size, ("height", "width"), strict=True):
            if moved >= step:
                raise ShapeError(
                    codes.SETTINGS_CONFLICT,
                    f"window_attention shifts by {moved} along the {axis}, a whole window "
                    f"of {step} or more",
                    "the shift is less than the window: half of it in Swin's shifted blocks",
                    field="shift",
                )
        if self.version == 2 and 1 in self.size:
            # torchvision divides the offsets by size - 1: a window of one position along an
            # axis gives NaN biases.
            raise ShapeError(
                codes.SETTINGS_CONFLICT,
                f"window_attention version 2 with windows of {self.size[0]}x{self.size[1]}: "
                "its position bias divides the offsets by the window's size - 1",
                "give windows of 2 or more positions along each axis",
                field="size",
            )
        return inputs[0]

    def applied_shift(self, shape: Shape) -> tuple[int, int]:
        """The shift applied to a map of `shape`: torchvision's, none where one window
        covers the padded map along an axis."""
        size = (shape[0], shape[1])
        first, second = window_shift(size, self.size, self.shift)
        return first, second

    def tokens(self) -> int:
        return self.size[0] * self.size[1]

    def table_rows(self) -> int:
        return (2 * self.size[0] - 1) * (2 * self.size[1] - 1)

    def params(self, inputs: list[Shape], output: Shape) -> Params:
        dim = output[-1]
        if self.version == 2:
            # The key's third of qkv.bias counts, as torchvision counts it, though unused.
            cpb = 3 * CPB_HIDDEN + CPB_HIDDEN * self.heads
            return Params(4 * dim * dim + 4 * dim + self.heads + cpb)
        return Params(4 * dim * dim + 4 * dim + self.table_rows() * self.heads)

    def macs(self, inputs: list[Shape], output: Shape) -> int:
        h, w, dim = output
        ph, pw = padded((h, w), self.size)
        positions, count = ph * pw, self.tokens()
        # The four projections of every padded position, then each window's scores and the
        # weighted sum of its values.
        macs = 4 * positions * dim * dim + 2 * positions * count * dim
        if self.version == 2:
            # The bias MLP over the table's offsets, once per image.
            macs += self.table_rows() * (2 + self.heads) * CPB_HIDDEN
        return macs

    def window(self) -> Window:
        # A position sees its window, which reaches up to size - 1 positions either way.
        return Window(kernel=(2 * self.size[0] - 1, 2 * self.size[1] - 1))

    def keras(self) -> list[KerasLayer]:
        v2 = {"version": 2} if self.version == 2 else {}
        call = Call("WindowAttention", self.heads, size=self.size, shift=self.shift, **v2)
        return [KerasLayer("", call)]

    def keras_helpers(self) -> tuple[str, ...]:
        return ("WindowAttention",)

    keras_classes: ClassVar[tuple[str, ...]] = ("WindowAttention",)

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "heads": int(config["num_heads"]),
            "size": tuple(int(v) for v in config["size"]),
            "shift": tuple(int(v) for v in config["shift"]),
            "version": int(config.get("version", 1)),
        }

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        h, w, dim = inputs[0]
        v2 = {"version": 2} if self.version == 2 else {}
        call = Call("WindowAttention", dim, self.heads, self.size, self.shift, (h, w), **v2)
        # The module takes torchvision's channels-last map: the channels last and back.
        return TorchLayer(
            call, "{module}({x}.movedim(1, -1)).movedim(-1, 1)", helpers=("WindowAttention",)
        )

    def weight_shapes(self, inputs: list[Shape]) -> dict[str, tuple[int, ...]]:
        dim = inputs[0][-1]
        shapes: dict[str, tuple[int, ...]] = {
            "qkv.weight": (3 * dim, dim),
            "qkv.bias": (3 * dim,),
            "proj.weight": (dim, dim),
            "proj.bias": (dim,),
        }
        if self.version == 2:
            shapes["logit_scale"] = (self.heads, 1, 1)
            shapes["cpb_mlp.0.weight"] = (CPB_HIDDEN, 2)
            shapes["cpb_mlp.0.bias"] = (CPB_HIDDEN,)
            shapes["cpb_mlp.2.weight"] = (self.heads, CPB_HIDDEN)
        else:
            shapes["relative_position_bias_table"] = (self.table_rows(), self.heads)
        return shapes

    def keras_weights(self) -> tuple[KerasWeight, ...]:
        projections = (
            KerasWeight("qkv_kernel", "qkv.weight", "dense"),
            KerasWeight("qkv_bias", "qkv.bias"),
            KerasWeight("proj_kernel", "proj.weight", "dense"),
            KerasWeight("proj_bias", "proj.bias"),
        )
        if self.version == 2:
            return (
                *projections,
                KerasWeight("logit_scale", "logit_scale"),
                KerasWeight("cpb_mlp_0_kernel", "cpb_mlp.0.weight", "dense"),
                KerasWeight("cpb_mlp_0_bias", "cpb_mlp.0.bias"),
                KerasWeight("cpb_mlp_2_kernel", "cpb_mlp.2.weight", "dense"),
            )
        return (
            *projections,
            KerasWeight("relative_position_bias_table", "relative_position_bias_table"),
        )

    def initial_value(self, suffix: str) -> float | None:
        if suffix == "logit_scale":
            return LOGIT_START
        return 0.0 if suffix.endswith("bias") else None

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        h, w, dim = shapes[0]
        (wh, ww), (ph, pw) = self.size, padded((h, w), self.size)
        sh, sw = self.applied_shift(shapes[0])
        count, head, heads = self.tokens(), dim // self.heads, self.heads
        windows = (ph // wh) * (pw // ww)

        def shape(step: str, values: list[int]) -> str:
            return graph.constant(f"{name}_{step}_shape", values, (len(values),), dtype="int64")

        def roll(x: str, amounts: tuple[int, int], extents: tuple[int, int], step: str) -> str:
            # torch.roll along H and W (axes 1 and 2 of NHWC): the last `amount` positions
            # first, as two Slices and a Concat per axis.
            for axis, amount, extent in zip((1, 2), amounts, extents, strict=True):
                amount %= extent
                if not amount:
                    continue
                parts = []
                for part, (start, end) in enumerate(
                    ((extent - amount, extent), (0, extent - amount))
                ):
                    bounds = [
                        graph.constant(f"{name}_{step}{axis}{part}_{bound}", [v], (1,), "int64")
                        for bound, v in (("start", start), ("end", end), ("axis", axis))
                    ]
                    parts.append(graph.op("Slice", [x, *bounds], f"{name}_{step}{axis}{part}"))
                x = graph.op("Concat", parts, f"{name}_{step}{axis}", axis=axis)
            return x

        def project(x: str, tensor: str, step: str) -> str:
            kernel = graph.op(
                "Transpose",
                [graph.weight(f"{name}.{tensor}.weight")],
                f"{name}_{step}weights",
                perm=[1, 0],
            )
            y = graph.op("MatMul", [x, kernel], f"{name}_{step}")
            bias = graph.weight(f"{name}.{tensor}.bias")
            if tensor == "qkv" and self.version == 2:
                # V2 has no key bias: its third of the tensor is zeroed, as torchvision does.
                keep = graph.constant(
                    f"{name}_qkv_keep", [1.0] * dim + [0.0] * dim + [1.0] * dim, (3 * dim,)
                )
                bias = graph.op("Mul", [bias, keep], f"{name}_qkvkeep")
            return graph.op("Add", [y, bias], f"{name}_{step}bias")

        def unit(x: str, step: str) -> str:
            # F.normalize along the last axis: x / max(|x|, 1e-12), the sum of squares a
            # product with a column of ones (the same at every opset).
            squares = graph.op("Mul", [x, x], f"{name}_{step}squares")
            ones = graph.constant(f"{name}_{step}_ones", [1.0] * head, (head, 1))
            total = graph.op("MatMul", [squares, ones], f"{name}_{step}sum")
            length = graph.op("Sqrt", [total], f"{name}_{step}length")
            floor = graph.constant(f"{name}_{step}_floor", [1e-12])
            length = graph.op("Max", [length, floor], f"{name}_{step}floor")
            return graph.op("Div", [x, length], f"{name}_{step}unit")

        def project_cpb(coords: str) -> str:
            # The bias table (rows, heads): cpb_mlp on the offsets' coordinates.
            first = graph.op(
                "Transpose",
                [graph.weight(f"{name}.cpb_mlp.0.weight")],
                f"{name}_cpbweights",
                perm=[1, 0],
            )
            hidden = graph.op("MatMul", [coords, first], f"{name}_cpb")
            hidden = graph.op(
                "Add", [hidden, graph.weight(f"{name}.cpb_mlp.0.bias")], f"{name}_cpbbias"
            )
            hidden = graph.op("Relu", [hidden], f"{name}_cpbrelu")
            second = graph.op(
                "Transpose",
                [graph.weight(f"{name}.cpb_mlp.2.weight")],
                f"{name}_cpbweights2",
                perm=[1, 0],
            )
            return graph.op("MatMul", [hidden, second], f"{name}_cpbtable")

        x = graph.op("Transpose", [inputs[0]], f"{name}_nhwc", perm=[0, 2, 3, 1])
        if (ph, pw) != (h, w):
            pads = graph.constant(
                f"{name}_pads", [0, 0, 0, 0, 0, ph - h, pw - w, 0], (8,), dtype="int64"
            )
            x = graph.op("Pad", [x, pads], f"{name}_pad")
        x = roll(x, (-sh, -sw), (ph, pw), "roll")
        x = graph.op(
            "Reshape",
            [x, shape("windows", [-1, ph // wh, wh, pw // ww, ww, dim])],
            f"{name}_windows",
        )
        x = graph.op("Transpose", [x], f"{name}_perwindow", perm=[0, 1, 3, 2, 4, 5])
        x = graph.op("Reshape", [x, shape("tokens", [-1, count, dim])], f"{name}_tokens")
        qkv = project(x, "qkv", "qkv")
        qkv = graph.op(
            "Reshape", [qkv, shape("heads", [-1, count, 3, heads, head])], f"{name}_heads"
        )
        qkv = graph.op("Transpose", [qkv], f"{name}_perhead", perm=[2, 0, 3, 1, 4])
        parts = []
        for position, part in enumerate(("query", "key", "value")):
            which = graph.constant(f"{name}_{part}_index", [position], (), dtype="int64")
            parts.append(graph.op("Gather", [qkv, which], f"{name}_{part}", axis=0))
        query, key, value = parts
        if self.version == 2:
            query, key = unit(query, "query"), unit(key, "key")
        else:
            scale = graph.constant(f"{name}_scale_factor", [head**-0.5])
            query = graph.op("Mul", [query, scale], f"{name}_scaled")
        keys = graph.op("Transpose", [key], f"{name}_keys", perm=[0, 1, 3, 2])
        scores = graph.op("MatMul", [query, keys], f"{name}_scores")
        if self.version == 2:
            limit = graph.constant(f"{name}_logit_max", [LOGIT_MAX])
            logit = graph.op(
                "Min", [graph.weight(f"{name}.logit_scale"), limit], f"{name}_logitclamp"
            )
            logit = graph.op("Exp", [logit], f"{name}_logit")
            scores = graph.op("Mul", [scores, logit], f"{name}_cosine")
        index = graph.constant(
            f"{name}_relative_index", window_index(self.size), (count * count,), "int64"
        )
        if self.version == 2:
            rows = self.table_rows()
            coords = graph.constant(f"{name}_coords", window_coords(self.size), (rows, 2))
            table = project_cpb(coords)
        else:
            table = graph.weight(f"{name}.relative_position_bias_table")
        bias = graph.op("Gather", [table, index], f"{name}_relative", axis=0)
        bias = graph.op("Reshape", [bias, shape("bias", [count, count, heads])], f"{name}_biasgrid")
        bias = graph.op("Transpose", [bias], f"{name}_bias", perm=[2, 0, 1])
        if self.version == 2:
            bias = graph.op("Sigmoid", [bias], f"{name}_biassigmoid")
            sixteen = graph.constant(f"{name}_bias_range", [16.0])
            bias = graph.op("Mul", [bias, sixteen], f"{name}_biasscaled")
        scores = graph.op("Add", [scores, bias], f"{name}_biased")
        if sh or sw:
            mask = graph.constant(
                f"{name}_mask_values",
                window_mask((ph, pw), self.size, (sh, sw)),
                (windows, 1, count, count),
            )
            scores = graph.op(
                "Reshape",
                [scores, shape("perimage", [-1, windows, heads, count, count])],
                f"{name}_perimage",
            )
            scores = graph.op("Add", [scores, mask], f"{name}_masked")
            scores = graph.op(
                "Reshape",
                [scores, shape("unmasked", [-1, heads, count, count])],
                f"{name}_unmasked",
            )
        weights = graph.op("Softmax", [scores], f"{name}_softmax", axis=-1)
        context = graph.op("MatMul", [weights, value], f"{name}_context")
        context = graph.op("Transpose", [context], f"{name}_merge", perm=[0, 2, 1, 3])
        context = graph.op(
            "Reshape", [context, shape("merged", [-1, count, dim])], f"{name}_merged"
        )
        y = project(context, "proj", "proj")
        y = graph.op(
            "Reshape", [y, shape("grid", [-1, ph // wh, pw // ww, wh, ww, dim])], f"{name}_grid"
        )
        y = graph.op("Transpose", [y], f"{name}_unwindow", perm=[0, 1, 3, 2, 4, 5])
        y = graph.op("Reshape", [y, shape("map", [-1, ph, pw, dim])], f"{name}_map")
        y = roll(y, (sh, sw), (ph, pw), "back")
        if (ph, pw) != (h, w):
            bounds = [
                graph.constant(f"{name}_crop_{bound}", values, (2,), "int64")
                for bound, values in (("start", [0, 0]), ("end", [h, w]), ("axes", [1, 2]))
            ]
            y = graph.op("Slice", [y, *bounds], f"{name}_crop")
        return graph.op("Transpose", [y], name, perm=[0, 3, 1, 2])

    onnx_steps: ClassVar[OnnxSteps | None] = OnnxSteps(
        every=(
            "nhwc",
            "pad",
            *(f"roll{axis}{part}" for axis in (1, 2) for part in ("", "0", "1")),
            "windows",
            "perwindow",
            "tokens",
            "qkvweights",
            "qkv",
            "qkvkeep",
            "qkvbias",
            "heads",
            "perhead",
            "query",
            "key",
            "value",
            "scaled",
            *(f"{part}{step}" for part in ("query", "key") for step in _UNIT_STEPS),
            "keys",
            "scores",
            "logitclamp",
            "logit",
            "cosine",
            "cpbweights",
            "cpb",
            "cpbbias",
            "cpbrelu",
            "cpbweights2",
            "cpbtable",
            "relative",
            "biasgrid",
            "bias",
            "biassigmoid",
            "biasscaled",
            "biased",
            "perimage",
            "masked",
            "unmasked",
            "softmax",
            "context",
            "merge",
            "merged",
            "projweights",
            "proj",
            "projbias",
            "grid",
            "unwindow",
            "map",
            *(f"back{axis}{part}" for axis in (1, 2) for part in ("", "0", "1")),
            "crop",
        ),
        signatures=(("windows", "heads", "relative", "softmax", "grid"),),
        inputs=("nhwc",),
    )

    @classmethod
    def from_onnx_steps(cls, steps: Mapping[str, OnnxNode]) -> dict[str, Any] | None:
        grid, heads = steps["windows"].constants, steps["heads"].constants
        if len(grid) < 2 or grid[1] is None or len(heads) < 2 or heads[1] is None:
            return None
        grid_shape, head_shape = grid[1].reshape(-1), heads[1].reshape(-1)
        if grid_shape.size != 6 or head_shape.size != 5:
            return None
        shift = []
        for axis in (1, 2):
            # The roll by -shift: its first Slice starts at the shift (see `onnx`).
            first = steps.get(f"roll{axis}0")
            start = first.constants[1] if first is not None and len(first.constants) > 1 else None
            shift.append(0 if start is None else int(start.reshape(-1)[0]))
        found = {
            "heads": int(head_shape[3]),
            "size": (int(grid_shape[2]), int(grid_shape[4])),
            "shift": tuple(shift),
        }
        return {**found, "version": 2} if "cosine" in steps else found


@register
class PatchMerge(LayerArgs):
    kind: ClassVar[str] = "patch_merge"
    framework_names: ClassVar[tuple[str, ...]] = ("PatchMerging", "PatchMergingV2")
    doc: ClassVar[str] = (
        "A Swin Transformer's patch merging without its norm and reduction: each 2x2 square "
        "of positions becomes one position of 4C channels, in torchvision's order (top-left, "
        "bottom-left, top-right, bottom-right), giving (H/2, W/2, 4C); an odd height or width "
        "is padded with zeros first. torchvision's PatchMerging is patch_merge() "
        "layer_norm() dense(2C, use_bias=false); its PatchMergingV2 patch_merge() "
        "dense(2C, use_bias=false) layer_norm()."
    )

    def output_shape(self, inputs: list[Shape]) -> Shape:
        h, w, c = spatial(inputs[0], self.kind)
        return (-(-h // 2), -(-w // 2), 4 * c)

    def window(self) -> Window:
        return Window(kernel=(2, 2), stride=(2, 2))

    def keras(self) -> list[KerasLayer]:
        return [KerasLayer("", Call("PatchMerge"))]

    def keras_helpers(self) -> tuple[str, ...]:
        return ("PatchMerge",)

    keras_classes: ClassVar[tuple[str, ...]] = ("PatchMerge",)

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        return TorchLayer(None, "patch_merge({x})", helpers=("patch_merge",))

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        h, w, _ = shapes[0]
        x = inputs[0]
        if h % 2 or w % 2:
            pads = graph.constant(f"{name}_pads", [0, 0, 0, 0, 0, 0, h % 2, w % 2], (8,), "int64")
            x = graph.op("Pad", [x, pads], f"{name}_pad")
        parts = []
        # torchvision's order: x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2].
        for step, (row, column) in zip(
            ("tl", "bl", "tr", "br"), ((0, 0), (1, 0), (0, 1), (1, 1)), strict=True
        ):
            bounds = [
                graph.constant(f"{name}_{step}_{bound}", values, (2,), "int64")
                for bound, values in (
                    ("start", [row, column]),
                    ("end", [h + 1, w + 1]),
                    ("axes", [2, 3]),
                    ("steps", [2, 2]),
                )
            ]
            parts.append(graph.op("Slice", [x, *bounds], f"{name}_{step}"))
        return graph.op("Concat", parts, name, axis=1)

    onnx_steps: ClassVar[OnnxSteps | None] = OnnxSteps(
        every=("pad", "tl", "bl", "tr", "br"),
        signatures=(("tl", "bl", "tr", "br"),),
        inputs=("pad", "tl"),
    )

    @classmethod
    def from_onnx_steps(cls, steps: Mapping[str, OnnxNode]) -> dict[str, Any] | None:
        return {} if steps[""].op_type == "Concat" else None


def _divisors(dim: int) -> str:
    found = [str(d) for d in range(1, min(dim, 64) + 1) if dim % d == 0]
    return ", ".join(found[:10])
