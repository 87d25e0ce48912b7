"""Pooling, padding and cropping: maxpool, avgpool, zero_pad, cropping, and the global
poolings."""

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal

from cnnspec import codes
from cnnspec.codegen import Call, literal
from cnnspec.layers import keras_config
from cnnspec.layers.base import (
    onnx_pads,
    same_pads,
    scalar_or_pair,
    slide,
    spatial,
)
from cnnspec.registry import (
    KERAS_INPUT,
    ImportGap,
    KerasLayer,
    KerasReading,
    LayerArgs,
    OnnxBuilder,
    OnnxNode,
    Pair,
    Shape,
    ShapeError,
    TorchLayer,
    Window,
    register,
)
from cnnspec.schema import Before, Problem, model_validator

Pads = tuple[tuple[int, int], tuple[int, int]]


def _zero_padding(value: Any) -> Any:
    """`1`, `(1, 2)` (height, width) or `((0, 1), (0, 1))` ((top, bottom), (left, right)),
    normalised to the last form; or `same`."""
    if value == "same":
        return value

    def amount(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    if amount(value):
        value = (value, value)
    if isinstance(value, tuple) and len(value) == 2 and all(amount(v) for v in value):
        value = ((value[0], value[0]), (value[1], value[1]))
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, tuple) and len(v) == 2 and all(map(amount, v)) for v in value)
    ):
        return value
    raise Problem(
        "must be an amount, (height, width), ((top, bottom), (left, right)) or same",
        hint="for example 3, (1, 2) or ((0, 1), (0, 1))",
    )


def _max_padding(value: Any) -> Any:
    """maxpool's padding: Keras's `same` or `valid`, or amounts padded with -inf."""
    return value if value in ("same", "valid") else _zero_padding(value)


MaxPadding = Annotated[Pads | Literal["same", "valid"], Before(_max_padding)]


class _Pool(LayerArgs):
    positional: ClassVar[tuple[str, ...]] = ("pool",)
    aliases: ClassVar[dict[str, str]] = {
        "pool_size": "pool",
        "kernel_size": "pool",
        "strides": "stride",
    }
    pool: Pair = (2, 2)
    stride: Pair | None = None
    padding: Literal["same", "valid"] = "valid"

    @property
    def strides(self) -> tuple[int, int]:
        return self.stride if self.stride is not None else self.pool

    def output_shape(self, inputs: list[Shape]) -> Shape:
        channels = spatial(inputs[0], self.kind)[2]
        return slide(self.kind, inputs[0], self.pool, self.strides, (1, 1), self.padding, channels)

    def window(self) -> Window:
        return Window(self.pool, self.strides)

    keras_class: ClassVar[str]
    torch_class: ClassVar[str]

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        options: dict[str, object] = {}
        if self.strides != self.pool:
            options["stride"] = scalar_or_pair(self.strides)
        if self.padding == "same":
            # Keras leaves `same` padding out of the max and the average: pad in forward.
            helper = f"{self.torch_class}Same"
            return TorchLayer(Call(helper, scalar_or_pair(self.pool), **options), helpers=(helper,))
        return TorchLayer(Call(f"nn.{self.torch_class}", scalar_or_pair(self.pool), **options))

    onnx_op: ClassVar[str]

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        # Keras leaves `same` padding out of both: ONNX pads with -inf for the max, and
        # count_include_pad=0 leaves it out of the average.
        options = {"count_include_pad": 0} if self.onnx_op == "AveragePool" else {}
        return graph.op(
            self.onnx_op,
            inputs,
            name,
            kernel_shape=list(self.pool),
            strides=list(self.strides),
            pads=onnx_pads(shapes[0], self.pool, self.strides, (1, 1), self.padding),
            **options,
        )

    def keras(self) -> list[KerasLayer]:
        options: dict[str, object] = {}
        if self.stride is not None and self.stride != self.pool:
            options["strides"] = scalar_or_pair(self.stride)
        if self.padding != "valid":
            options["padding"] = self.padding
        return [KerasLayer("", Call(self.keras_class, scalar_or_pair(self.pool), **options))]

    # ONNX's MaxPool and AveragePool are the reader's own: their pads may be `same` padding
    # or a zero_pad of their own, which takes the input's shape and producer to tell.
    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> KerasReading:
        keras_config.channels_last(config)
        pool = keras_config.pair(config["pool_size"])
        strides = config.get("strides")
        stride = keras_config.pair(strides) if strides is not None else None
        return {
            "pool": pool,
            "stride": None if stride == pool else stride,  # the pool's own, as Keras's default
            "padding": config.get("padding", "valid"),
        }


@register
class MaxPool(_Pool):
    kind: ClassVar[str] = "maxpool"
    framework_names: ClassVar[tuple[str, ...]] = ("MaxPooling2D", "MaxPool2D", "MaxPool2d")
    keras_class: ClassVar[str] = "layers.MaxPooling2D"
    keras_classes: ClassVar[tuple[str, ...]] = ("MaxPooling2D", "PaddedMaxPooling2D")
    torch_class: ClassVar[str] = "MaxPool2d"
    onnx_op: ClassVar[str] = "MaxPool"
    doc: ClassVar[str] = (
        "Max pooling; the stride defaults to the pool size. `padding` is same, valid, or "
        "amounts (1, (h, w) or ((top, bottom), (left, right))) padded with -inf, which never "
        "win the max: PyTorch's max_pool2d(padding=...) and ceil_mode, ONNX's MaxPool pads."
    )
    # Explicit amounts are PyTorch's and ONNX's padding, which Keras's pooling cannot express.
    padding: MaxPadding = "valid"  # type: ignore[assignment]

    @model_validator(mode="after")
    def _padding_inside_the_window(self) -> "MaxPool":
        if isinstance(self.padding, tuple):
            for (before, after), pool in zip(self.padding, self.pool, strict=True):
                if max(before, after) >= pool:
                    raise ValueError(
                        f"padding {self.padding} reaches past the {self.pool} pool: a window "
                        "would hold only padding"
                    )
        return self

    def output_shape(self, inputs: list[Shape]) -> Shape:
        if not isinstance(self.padding, tuple):
            return super().output_shape(inputs)
        h, w, c = spatial(inputs[0], self.kind)
        (top, bottom), (left, right) = self.padding
        padded = (h + top + bottom, w + left + right, c)
        return slide(self.kind, padded, self.pool, self.strides, (1, 1), "valid", c)

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        if not isinstance(self.padding, tuple):
            return super().torch(inputs)
        (top, bottom), (left, right) = self.padding
        options: dict[str, object] = {}
        if self.strides != self.pool:
            options["stride"] = scalar_or_pair(self.strides)
        if top == bottom and left == right and 2 * top <= self.pool[0] and 2 * left <= self.pool[1]:
            options["padding"] = scalar_or_pair((top, left))
            return TorchLayer(Call("nn.MaxPool2d", scalar_or_pair(self.pool), **options))
        # Uneven amounts (PyTorch's ceil_mode): pad with -inf, then the valid pooling.
        pads = literal((left, right, top, bottom))
        window = f"{literal(scalar_or_pair(self.pool))}, {literal(scalar_or_pair(self.strides))}"
        return TorchLayer(None, f"F.max_pool2d(F.pad({{x}}, {pads}, value=-torch.inf), {window})")

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        if not isinstance(self.padding, tuple):
            return super().onnx(graph, name, inputs, shapes)
        (top, bottom), (left, right) = self.padding
        return graph.op(
            "MaxPool",
            inputs,
            name,
            kernel_shape=list(self.pool),
            strides=list(self.strides),
            pads=[top, left, bottom, right],
        )

    def keras(self) -> list[KerasLayer]:
        if not isinstance(self.padding, tuple):
            return super().keras()
        options: dict[str, object] = {}
        if self.strides != self.pool:
            options["strides"] = scalar_or_pair(self.strides)
        call = Call("PaddedMaxPooling2D", scalar_or_pair(self.pool), pads=self.padding, **options)
        return [KerasLayer("", call)]

    def keras_helpers(self) -> tuple[str, ...]:
        return ("PaddedMaxPooling2D",) if isinstance(self.padding, tuple) else ()

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> KerasReading:
        reading = super().from_keras(class_name, config)
        if class_name == "PaddedMaxPooling2D":
            assert isinstance(reading, dict)
            return {**reading, "padding": keras_config.pads(config["pads"])}
        return reading


@register
class AvgPool(_Pool):
    kind: ClassVar[str] = "avgpool"
    framework_names: ClassVar[tuple[str, ...]] = ("AveragePooling2D", "AvgPool2D", "AvgPool2d")
    keras_class: ClassVar[str] = "layers.AveragePooling2D"
    keras_classes: ClassVar[tuple[str, ...]] = ("AveragePooling2D",)
    torch_class: ClassVar[str] = "AvgPool2d"
    onnx_op: ClassVar[str] = "AveragePool"
    doc: ClassVar[str] = "Average pooling; with padding=same the padding is not averaged in."


ZeroPadding = Annotated[Pads | Literal["same"], Before(_zero_padding)]


@register
class ZeroPad(LayerArgs):
    kind: ClassVar[str] = "zero_pad"
    framework_names: ClassVar[tuple[str, ...]] = ("ZeroPadding2D", "ZeroPad2d")
    doc: ClassVar[str] = (
        "Pads H and W with zeros; `same` pads what TensorFlow's `same` would for a window of "
        "`kernel` and `stride` (keras.applications' correct_pad), the odd pixel after."
    )
    positional: ClassVar[tuple[str, ...]] = ("padding",)
    padding: ZeroPadding = ((1, 1), (1, 1))
    kernel: Pair = (3, 3)
    stride: Pair = (1, 1)

    @model_validator(mode="after")
    def _window_only_with_same(self) -> "ZeroPad":
        if self.padding != "same" and (self.kernel, self.stride) != ((3, 3), (1, 1)):
            raise ValueError("kernel and stride only apply to zero_pad(same, ...)")
        return self

    def pads(self, shape: Shape) -> Pads:
        if self.padding != "same":
            return self.padding
        return (
            same_pads(shape[0], self.kernel[0], self.stride[0], 1),
            same_pads(shape[1], self.kernel[1], self.stride[1], 1),
        )

    def output_shape(self, inputs: list[Shape]) -> Shape:
        h, w, c = spatial(inputs[0], self.kind)
        (top, bottom), (left, right) = self.pads(inputs[0])
        return (h + top + bottom, w + left + right, c)

    def keras(self) -> list[KerasLayer]:
        if self.padding == "same":
            # The amount depends on the input's size, which --image-size may change.
            amount: object = Call("same_padding", KERAS_INPUT, self.kernel, self.stride)
        else:
            (top, bottom), (left, right) = self.padding
            amount = self.padding
            if top == bottom and left == right:
                amount = top if top == left else (top, left)
        return [KerasLayer("", Call("layers.ZeroPadding2D", amount))]

    def keras_helpers(self) -> tuple[str, ...]:
        return ("same_padding",) if self.padding == "same" else ()

    # `same` is written as the amounts for the model's input size, and read back as those.
    keras_classes: ClassVar[tuple[str, ...]] = ("ZeroPadding2D",)

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> KerasReading:
        return {"padding": keras_config.pads(config["padding"])}

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        if self.padding == "same":
            window = f"{literal(self.kernel)}, {literal(self.stride)}"
            return TorchLayer(None, f"pad_same({{x}}, {window})", helpers=("pad_same",))
        (top, bottom), (left, right) = self.padding
        return TorchLayer(None, f"F.pad({{x}}, {literal((left, right, top, bottom))})")

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        (top, bottom), (left, right) = self.pads(shapes[0])
        pads = graph.constant(
            f"{name}_pads", [0, 0, top, left, 0, 0, bottom, right], (8,), dtype="int64"
        )
        return graph.op("Pad", [inputs[0], pads], name)


def _cropping(value: Any) -> Any:
    """The forms of zero_pad's amounts, without `same`."""
    try:
        if value != "same":
            return _zero_padding(value)
    except Problem:
        pass
    raise Problem(
        "must be an amount, (height, width) or ((top, bottom), (left, right))",
        hint="for example 1, (1, 2) or ((1, 0), (1, 0))",
    )


Cropping = Annotated[Pads, Before(_cropping)]


@register
class Crop(LayerArgs):
    kind: ClassVar[str] = "crop"
    framework_names: ClassVar[tuple[str, ...]] = ("Cropping2D",)
    doc: ClassVar[str] = (
        "Removes rows and columns at the edges of H and W: an amount, (height, width) or "
        "((top, bottom), (left, right)), as NASNet aligns its branches."
    )
    positional: ClassVar[tuple[str, ...]] = ("cropping",)
    cropping: Cropping = ((1, 1), (1, 1))

    def output_shape(self, inputs: list[Shape]) -> Shape:
        h, w, c = spatial(inputs[0], self.kind)
        (top, bottom), (left, right) = self.cropping
        if h - top - bottom < 1 or w - left - right < 1:
            raise ShapeError(
                codes.SHRINKS_BELOW_ONE,
                f"crop removes {top + bottom} rows and {left + right} columns, which leaves "
                f"nothing of the {h}x{w} map",
                "crop less, or crop before the map is downsampled",
                field="cropping",
            )
        return (h - top - bottom, w - left - right, c)

    def keras(self) -> list[KerasLayer]:
        (top, bottom), (left, right) = self.cropping
        amount: object = self.cropping
        if top == bottom and left == right:
            amount = top if top == left else (top, left)
        return [KerasLayer("", Call("layers.Cropping2D", amount))]

    keras_classes: ClassVar[tuple[str, ...]] = ("Cropping2D",)

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> KerasReading:
        return {"cropping": keras_config.pads(config["cropping"])}

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        (top, bottom), (left, right) = self.cropping

        def span(start: int, end: int) -> str:
            # From the far edge, so that another image size crops the same.
            return f"{start or ''}:{-end if end else ''}"

        return TorchLayer(None, f"{{x}}[:, :, {span(top, bottom)}, {span(left, right)}]")

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        (top, bottom), (left, right) = self.cropping
        end = 2**63 - 1  # ONNX's "to the end"
        starts = graph.constant(f"{name}_starts", [top, left], (2,), dtype="int64")
        ends = [-bottom if bottom else end, -right if right else end]
        stops = graph.constant(f"{name}_ends", ends, (2,), dtype="int64")
        axes = graph.constant(f"{name}_axes", [2, 3], (2,), dtype="int64")
        return graph.op("Slice", [inputs[0], starts, stops, axes], name)


class _GlobalPool(LayerArgs):
    keepdims: bool = False

    def output_shape(self, inputs: list[Shape]) -> Shape:
        channels = spatial(inputs[0], self.kind)[2]
        return (1, 1, channels) if self.keepdims else (channels,)

    def window(self) -> Window:
        return Window(global_=True)

    keras_class: ClassVar[str]
    torch_reduce: ClassVar[str]

    def keras(self) -> list[KerasLayer]:
        options = {"keepdims": True} if self.keepdims else {}
        return [KerasLayer("", Call(self.keras_class, **options))]

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        keep = ", keepdim=True" if self.keepdims else ""
        return TorchLayer(None, f"{{x}}.{self.torch_reduce}(dim=(2, 3){keep})")

    onnx_op: ClassVar[str]

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        if self.keepdims:
            return graph.op(self.onnx_op, inputs, name)  # (N, C, 1, 1), as Keras's (1, 1, C)
        pooled = graph.op(self.onnx_op, inputs, f"{name}_pool")
        return graph.op("Flatten", [pooled], name, axis=1)

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> KerasReading:
        keras_config.channels_last(config)
        return {"keepdims": bool(config.get("keepdims", False))}

    # The pooling op (N, C, 1, 1), or a reduction over H and W as torch's x.mean((2, 3))
    # writes it. A Flatten after a pooling with kept dimensions is the reader's: it drops
    # them where the pooling feeds nothing else.
    @classmethod
    def from_onnx(cls, chain: Sequence[OnnxNode]) -> dict[str, Any] | None:
        (node,) = chain
        if node.op_type == cls.onnx_op:
            return {"keepdims": True}
        axes = node.attributes.get("axes")
        if axes is None and len(node.constants) > 1 and node.constants[1] is not None:
            axes = [int(a) for a in node.constants[1].reshape(-1)]  # opset 18: an input
        if sorted(a % 4 for a in (axes or [])) != [2, 3]:
            raise ImportGap(
                f"{node.op_type} over axes {axes}", "cnnspec pools over height and width"
            )
        return {"keepdims": bool(node.attributes.get("keepdims", 1))}


@register
class GlobalAvgPool(_GlobalPool):
    kind: ClassVar[str] = "global_avg_pool"
    framework_names: ClassVar[tuple[str, ...]] = (
        "GlobalAveragePooling2D",
        "GlobalAvgPool2D",
        "AdaptiveAvgPool2d",
    )
    keras_class: ClassVar[str] = "layers.GlobalAveragePooling2D"
    torch_reduce: ClassVar[str] = "mean"
    onnx_op: ClassVar[str] = "GlobalAveragePool"
    keras_classes: ClassVar[tuple[str, ...]] = ("GlobalAveragePooling2D",)
    onnx_patterns: ClassVar[tuple[tuple[str, ...], ...]] = (("GlobalAveragePool",), ("ReduceMean",))
    doc: ClassVar[str] = (
        "Averages each channel over H and W: (H, W, C) -> (C,), or (1, 1, C) with keepdims=true."
    )


@register
class GlobalMaxPool(_GlobalPool):
    kind: ClassVar[str] = "global_max_pool"
    framework_names: ClassVar[tuple[str, ...]] = (
        "GlobalMaxPooling2D",
        "GlobalMaxPool2D",
        "AdaptiveMaxPool2d",
    )
    keras_class: ClassVar[str] = "layers.GlobalMaxPooling2D"
    torch_reduce: ClassVar[str] = "amax"
    onnx_op: ClassVar[str] = "GlobalMaxPool"
    keras_classes: ClassVar[tuple[str, ...]] = ("GlobalMaxPooling2D",)
    onnx_patterns: ClassVar[tuple[tuple[str, ...], ...]] = (("GlobalMaxPool",), ("ReduceMax",))
    doc: ClassVar[str] = (
        "Maximum of each channel over H and W: (H, W, C) -> (C,), or (1, 1, C) with keepdims=true."
    )
