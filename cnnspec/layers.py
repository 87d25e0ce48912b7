"""Every layer kind a spec can use. Each class is one registry entry; see `cnnspec.registry`.

Shapes follow Keras: channels last, `padding=same` gives ceil(size / stride), `valid` gives
floor((size - dilation * (kernel - 1) - 1) / stride) + 1. Parameter counts follow Keras too:
BatchNorm's moving mean and variance are non-trainable parameters (PyTorch keeps them as buffers,
so a PyTorch model's parameter count equals the trainable count here).
"""

from math import prod
from typing import Annotated, Any, ClassVar, Literal

from cnnspec.codegen import Call, Code, literal
from cnnspec.registry import (
    HOLE,
    KERAS_INPUT,
    Activation,
    KerasLayer,
    LayerArgs,
    NonNegFloat,
    OnnxBuilder,
    Padding,
    Pair,
    Params,
    PositiveInt,
    Rate,
    Shape,
    ShapeError,
    TorchLayer,
    Window,
    register,
)
from cnnspec.schema import Before, Field, Problem, model_validator


def spatial(shape: Shape, kind: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ShapeError(
            "E202",
            f"{kind} needs an (H, W, C) input, but gets {format_shape(shape)}",
            "spatial layers must come before flatten() or global pooling",
        )
    h, w, c = shape
    return h, w, c


def format_shape(shape: Shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _size(value: tuple[int, int]) -> int | tuple[int, int]:
    """A square kernel or stride as one number, the way people write it."""
    return value[0] if value[0] == value[1] else value


def _l2(factor: float) -> Call | None:
    return Call("regularizers.L2", factor) if factor else None


def keras_with_activation(
    func: str, args: tuple[object, ...], kwargs: dict[str, object], activation: LayerArgs | None
) -> list[KerasLayer]:
    """A Keras layer with its `activation=` (at the `activation` key's place in `kwargs`): the
    activation's Keras name when Keras's named activation means the same, otherwise a separate
    activation layer after it, named `<node>_act`."""
    keras_name = activation.keras_name() if activation is not None else None
    options = {k: v for k, v in {**kwargs, "activation": keras_name}.items() if v is not None}
    layers_ = [KerasLayer("", Call(func, *args, **options))]
    if activation is not None and keras_name is None:
        layers_ += [KerasLayer("_act", a.call) for a in activation.keras()]
    return layers_


def same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's `same` padding along one axis: (before, after), the odd pixel after."""
    extent = dilation * (kernel - 1) + 1
    total = max((-(-size // stride) - 1) * stride + extent - size, 0)
    return total // 2, total - total // 2


def onnx_pads(
    shape: Shape,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    padding: str | int,
) -> list[int]:
    """ONNX `pads` ([top, left, bottom, right]) for Keras's padding on an (H, W, C) input."""
    if padding == "same":
        top, bottom = same_pads(shape[0], kernel[0], stride[0], dilation[0])
        left, right = same_pads(shape[1], kernel[1], stride[1], dilation[1])
        return [top, left, bottom, right]
    amount = padding if isinstance(padding, int) else 0
    return [amount] * 4


def window_size(size: int, kernel: int, stride: int, dilation: int, padding: str | int) -> int:
    if padding == "same":
        return -(-size // stride)
    extent = dilation * (kernel - 1) + 1
    padded = size + (2 * padding if isinstance(padding, int) else 0)
    return (padded - extent) // stride + 1 if padded >= extent else 0


def slide(
    kind: str,
    shape: Shape,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    padding: str | int,
    channels: int,
) -> Shape:
    """The output shape of a sliding window (convolution or pooling), with a located error
    when the map would shrink below 1x1."""
    h, w, _ = spatial(shape, kind)
    out_h = window_size(h, kernel[0], stride[0], dilation[0], padding)
    out_w = window_size(w, kernel[1], stride[1], dilation[1], padding)
    if out_h < 1 or out_w < 1:
        extent = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True))
        raise ShapeError(
            "E201",
            f"{kind} shrinks the {h}x{w} map below 1x1: its window spans "
            f"{extent[0]}x{extent[1]} with padding={padding}",
            "use padding=same, a smaller kernel or pool, or remove a downsampling layer before it",
        )
    return (out_h, out_w, channels)


class _Conv(LayerArgs):
    aliases: ClassVar[dict[str, str]] = {
        "kernel_size": "kernel",
        "strides": "stride",
        "dilation_rate": "dilation",
        "kernel_regularizer": "l2",
        "bias": "use_bias",
    }
    kernel: Pair = (3, 3)
    stride: Pair = (1, 1)
    padding: Padding = "valid"
    dilation: Pair = (1, 1)
    activation: Activation = None
    l2: NonNegFloat = 0.0
    use_bias: bool = True

    def _check_stride_dilation(self) -> None:
        if max(self.stride) > 1 and max(self.dilation) > 1:
            raise ShapeError(
                "E205",
                f"{self.kind} cannot have both stride > 1 and dilation > 1",
                "Keras refuses the combination; downsample in a separate layer",
                field="dilation",
            )

    def window(self) -> Window:
        return Window(self.kernel, self.stride, self.dilation)

    def l2_factor(self) -> float:
        return self.l2

    def keras_helpers(self) -> tuple[str, ...]:
        return self.activation.keras_helpers() if self.activation is not None else ()

    def _torch_conv(self, in_channels: int, out_channels: int, groups: int) -> TorchLayer:
        kwargs: dict[str, object] = {}
        if self.stride != (1, 1):
            kwargs["stride"] = _size(self.stride)
        helpers: tuple[str, ...] = ()
        func = "nn.Conv2d"
        if self.padding == "same":
            totals = [d * (k - 1) for k, d in zip(self.kernel, self.dilation, strict=True)]
            if self.stride == (1, 1) and all(t % 2 == 0 for t in totals):
                if any(totals):
                    kwargs["padding"] = _size((totals[0] // 2, totals[1] // 2))
            else:
                # TensorFlow puts the odd pixel of `same` padding at the bottom and right, and
                # with a stride the amount depends on the input size: pad in forward.
                func, helpers = "Conv2dSame", ("Conv2dSame",)
        elif isinstance(self.padding, int) and self.padding:
            kwargs["padding"] = self.padding
        if self.dilation != (1, 1):
            kwargs["dilation"] = _size(self.dilation)
        if groups > 1:
            kwargs["groups"] = groups
        if not self.use_bias:
            kwargs["bias"] = False
        call = Call(func, in_channels, out_channels, _size(self.kernel), **kwargs)
        return TorchLayer(call, activation=self.activation, helpers=helpers)

    def _onnx_conv(self, graph: OnnxBuilder, name: str, x: str, shape: Shape, groups: int) -> str:
        inputs = [x, graph.weight(f"{name}.weight")]
        if self.use_bias:
            inputs.append(graph.weight(f"{name}.bias"))
        y = graph.op(
            "Conv",
            inputs,
            name,
            kernel_shape=list(self.kernel),
            strides=list(self.stride),
            dilations=list(self.dilation),
            pads=onnx_pads(shape, self.kernel, self.stride, self.dilation, self.padding),
            group=groups,
        )
        return self.activation.onnx_apply(graph, f"{name}_act", y) if self.activation else y

    def _keras_conv(self, func: str, args: tuple[object, ...], **extra: object) -> list[KerasLayer]:
        # Keras convolutions pad only `same` or `valid`: an explicit amount is a ZeroPadding2D.
        explicit = isinstance(self.padding, int) and self.padding > 0
        kwargs = {
            "strides": _size(self.stride) if self.stride != (1, 1) else None,
            "padding": "same" if self.padding == "same" else None,
            "dilation_rate": _size(self.dilation) if self.dilation != (1, 1) else None,
            "activation": None,
            **extra,
            "use_bias": False if not self.use_bias else None,
        }
        conv = keras_with_activation(func, args, kwargs, self.activation)
        if explicit:
            return [KerasLayer("_pad", Call("layers.ZeroPadding2D", self.padding)), *conv]
        return conv


@register
class Conv2D(_Conv):
    kind: ClassVar[str] = "conv2d"
    framework_names: ClassVar[tuple[str, ...]] = ("Conv2D", "Conv2d", "Convolution2D")
    doc: ClassVar[str] = "2-D convolution over (H, W, C) with `filters` output channels."
    positional: ClassVar[tuple[str, ...]] = ("filters", "kernel")
    filters: PositiveInt

    def output_shape(self, inputs: list[Shape]) -> Shape:
        self._check_stride_dilation()
        return slide(
            self.kind,
            inputs[0],
            self.kernel,
            self.stride,
            self.dilation,
            self.padding,
            self.filters,
        )

    def params(self, inputs: list[Shape], output: Shape) -> Params:
        c_in = inputs[0][-1]
        weights = self.kernel[0] * self.kernel[1] * c_in * self.filters
        return Params(weights + (self.filters if self.use_bias else 0))

    def macs(self, inputs: list[Shape], output: Shape) -> int:
        return prod(output) * self.kernel[0] * self.kernel[1] * inputs[0][-1]

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        return self._torch_conv(inputs[0][-1], self.filters, 1)

    def weight_shapes(self, inputs: list[Shape]) -> dict[str, tuple[int, ...]]:
        shapes = {"weight": (self.filters, inputs[0][-1], *self.kernel)}
        return {**shapes, "bias": (self.filters,)} if self.use_bias else shapes

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        return self._onnx_conv(graph, name, inputs[0], shapes[0], 1)

    def keras(self) -> list[KerasLayer]:
        return self._keras_conv(
            "layers.Conv2D",
            (self.filters, _size(self.kernel)),
            kernel_regularizer=_l2(self.l2),
        )


@register
class DepthwiseConv2D(_Conv):
    kind: ClassVar[str] = "depthwise_conv2d"
    framework_names: ClassVar[tuple[str, ...]] = ("DepthwiseConv2D",)
    doc: ClassVar[str] = "Depthwise convolution: one spatial filter per input channel."
    positional: ClassVar[tuple[str, ...]] = ("kernel",)
    depth_multiplier: PositiveInt = 1

    def output_shape(self, inputs: list[Shape]) -> Shape:
        self._check_stride_dilation()
        channels = spatial(inputs[0], self.kind)[2] * self.depth_multiplier
        return slide(
            self.kind, inputs[0], self.kernel, self.stride, self.dilation, self.padding, channels
        )

    def params(self, inputs: list[Shape], output: Shape) -> Params:
        out_c = output[-1]
        return Params(self.kernel[0] * self.kernel[1] * out_c + (out_c if self.use_bias else 0))

    def macs(self, inputs: list[Shape], output: Shape) -> int:
        return prod(output) * self.kernel[0] * self.kernel[1]

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        channels = inputs[0][-1]
        return self._torch_conv(channels, channels * self.depth_multiplier, channels)

    def weight_shapes(self, inputs: list[Shape]) -> dict[str, tuple[int, ...]]:
        out = inputs[0][-1] * self.depth_multiplier
        shapes = {"weight": (out, 1, *self.kernel)}
        return {**shapes, "bias": (out,)} if self.use_bias else shapes

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        return self._onnx_conv(graph, name, inputs[0], shapes[0], shapes[0][-1])

    def keras(self) -> list[KerasLayer]:
        options: dict[str, object] = {
            "depth_multiplier": self.depth_multiplier if self.depth_multiplier != 1 else None,
            "depthwise_regularizer": _l2(self.l2),
        }
        if not self._unequal_strides:
            return self._keras_conv("layers.DepthwiseConv2D", (_size(self.kernel),), **options)
        # TensorFlow's CPU kernel refuses unequal strides (oneDNN, where it runs, accepts them).
        # The stride-1 convolution sampled at every stride-th row and column is the same
        # numbers on every device; `same` padding is then the strided window's, in front.
        conv = keras_with_activation(
            "StridedDepthwiseConv2D",
            (_size(self.kernel),),
            {
                "subsample": self.stride,
                **options,
                "activation": None,
                "use_bias": False if not self.use_bias else None,
            },
            self.activation,
        )
        if self.padding == "same":
            pads = Call("same_padding", KERAS_INPUT, self.kernel, self.stride)
            return [KerasLayer("_pad", Call("layers.ZeroPadding2D", pads)), *conv]
        if isinstance(self.padding, int) and self.padding:
            return [KerasLayer("_pad", Call("layers.ZeroPadding2D", self.padding)), *conv]
        return conv

    @property
    def _unequal_strides(self) -> bool:
        return self.stride[0] != self.stride[1]

    def keras_helpers(self) -> tuple[str, ...]:
        if not self._unequal_strides:
            return super().keras_helpers()
        extra = ("same_padding",) if self.padding == "same" else ()
        return (*super().keras_helpers(), "StridedDepthwiseConv2D", *extra)


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
            options["stride"] = _size(self.strides)
        if self.padding == "same":
            # Keras leaves `same` padding out of the max and the average: pad in forward.
            helper = f"{self.torch_class}Same"
            return TorchLayer(Call(helper, _size(self.pool), **options), helpers=(helper,))
        return TorchLayer(Call(f"nn.{self.torch_class}", _size(self.pool), **options))

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
            options["strides"] = _size(self.stride)
        if self.padding != "valid":
            options["padding"] = self.padding
        return [KerasLayer("", Call(self.keras_class, _size(self.pool), **options))]


@register
class MaxPool(_Pool):
    kind: ClassVar[str] = "maxpool"
    framework_names: ClassVar[tuple[str, ...]] = ("MaxPooling2D", "MaxPool2D", "MaxPool2d")
    keras_class: ClassVar[str] = "layers.MaxPooling2D"
    torch_class: ClassVar[str] = "MaxPool2d"
    onnx_op: ClassVar[str] = "MaxPool"
    doc: ClassVar[str] = "Max pooling; the stride defaults to the pool size."


@register
class AvgPool(_Pool):
    kind: ClassVar[str] = "avgpool"
    framework_names: ClassVar[tuple[str, ...]] = ("AveragePooling2D", "AvgPool2D", "AvgPool2d")
    keras_class: ClassVar[str] = "layers.AveragePooling2D"
    torch_class: ClassVar[str] = "AvgPool2d"
    onnx_op: ClassVar[str] = "AveragePool"
    doc: ClassVar[str] = "Average pooling; with padding=same the padding is not averaged in."


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


class _GlobalPool(LayerArgs):
    def output_shape(self, inputs: list[Shape]) -> Shape:
        return (spatial(inputs[0], self.kind)[2],)

    def window(self) -> Window:
        return Window(global_=True)

    keras_class: ClassVar[str]
    torch_reduce: ClassVar[str]

    def keras(self) -> list[KerasLayer]:
        return [KerasLayer("", Call(self.keras_class))]

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        return TorchLayer(None, f"{{x}}.{self.torch_reduce}(dim=(2, 3))")

    onnx_op: ClassVar[str]

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        pooled = graph.op(self.onnx_op, inputs, f"{name}_pool")
        return graph.op("Flatten", [pooled], name, axis=1)


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
    doc: ClassVar[str] = "Averages each channel over H and W: (H, W, C) -> (C,)."


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
    doc: ClassVar[str] = "Maximum of each channel over H and W: (H, W, C) -> (C,)."


@register
class BatchNorm(LayerArgs):
    kind: ClassVar[str] = "batchnorm"
    framework_names: ClassVar[tuple[str, ...]] = (
        "BatchNormalization",
        "BatchNorm2d",
        "BatchNorm1d",
    )
    doc: ClassVar[str] = (
        "Batch normalisation over the last axis. `momentum` uses the Keras convention "
        "(0.99 keeps 99% of the running average); PyTorch's momentum is 1 - momentum."
    )
    epsilon: float = Field(default=1e-3, gt=0)
    momentum: float = Field(default=0.99, ge=0, lt=1)

    def params(self, inputs: list[Shape], output: Shape) -> Params:
        channels = output[-1]
        return Params(trainable=2 * channels, non_trainable=2 * channels)

    def keras(self) -> list[KerasLayer]:
        options: dict[str, object] = {}
        if self.momentum != 0.99:
            options["momentum"] = self.momentum
        if self.epsilon != 1e-3:
            options["epsilon"] = self.epsilon
        return [KerasLayer("", Call("layers.BatchNormalization", **options))]

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        # PyTorch's momentum weighs the new batch, Keras's the running average.
        func = "nn.BatchNorm2d" if len(inputs[0]) == 3 else "nn.BatchNorm1d"
        momentum = round(1 - self.momentum, 12)
        return TorchLayer(Call(func, inputs[0][-1], eps=self.epsilon, momentum=momentum))

    def weight_shapes(self, inputs: list[Shape]) -> dict[str, tuple[int, ...]]:
        channels = (inputs[0][-1],)
        return {k: channels for k in ("weight", "bias", "running_mean", "running_var")}

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        keys = ("weight", "bias", "running_mean", "running_var")
        tensors = [graph.weight(f"{name}.{key}") for key in keys]
        return graph.op("BatchNormalization", [inputs[0], *tensors], name, epsilon=self.epsilon)


@register
class Dropout(LayerArgs):
    kind: ClassVar[str] = "dropout"
    framework_names: ClassVar[tuple[str, ...]] = ("Dropout",)
    doc: ClassVar[str] = "Zeroes a fraction `rate` of the units during training."
    positional: ClassVar[tuple[str, ...]] = ("rate",)
    rate: Rate

    def keras(self) -> list[KerasLayer]:
        return [KerasLayer("", Call("layers.Dropout", self.rate))]

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        return TorchLayer(Call("nn.Dropout", self.rate))

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        return inputs[0]  # inference: no-op


@register
class SpatialDropout(LayerArgs):
    kind: ClassVar[str] = "spatial_dropout"
    framework_names: ClassVar[tuple[str, ...]] = ("SpatialDropout2D", "Dropout2d")
    doc: ClassVar[str] = "Drops whole feature maps (channels) during training."
    positional: ClassVar[tuple[str, ...]] = ("rate",)
    rate: Rate

    def output_shape(self, inputs: list[Shape]) -> Shape:
        spatial(inputs[0], self.kind)
        return inputs[0]

    def keras(self) -> list[KerasLayer]:
        return [KerasLayer("", Call("layers.SpatialDropout2D", self.rate))]

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        return TorchLayer(Call("nn.Dropout2d", self.rate))

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        return inputs[0]  # inference: no-op


@register
class Flatten(LayerArgs):
    kind: ClassVar[str] = "flatten"
    framework_names: ClassVar[tuple[str, ...]] = ("Flatten",)
    doc: ClassVar[str] = "Flattens (H, W, C) to (H*W*C,), in Keras's channels-last order."

    def output_shape(self, inputs: list[Shape]) -> Shape:
        return (prod(inputs[0]),)

    def window(self) -> Window:
        return Window(global_=True)

    def keras(self) -> list[KerasLayer]:
        return [KerasLayer("", Call("layers.Flatten"))]

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        # NCHW order: the canonical weight layout stores the next layer's rows to match.
        return TorchLayer(None, "torch.flatten({x}, 1)")

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        return graph.op("Flatten", inputs, name, axis=1)  # NCHW order, as the weights


@register
class Dense(LayerArgs):
    kind: ClassVar[str] = "dense"
    aliases: ClassVar[dict[str, str]] = {"kernel_regularizer": "l2", "bias": "use_bias"}
    framework_names: ClassVar[tuple[str, ...]] = ("Dense", "Linear")
    doc: ClassVar[str] = "Fully connected layer over the last axis."
    positional: ClassVar[tuple[str, ...]] = ("units",)
    units: PositiveInt
    activation: Activation = None
    l2: NonNegFloat = 0.0
    use_bias: bool = True

    def output_shape(self, inputs: list[Shape]) -> Shape:
        return (*inputs[0][:-1], self.units)

    def params(self, inputs: list[Shape], output: Shape) -> Params:
        return Params(inputs[0][-1] * self.units + (self.units if self.use_bias else 0))

    def macs(self, inputs: list[Shape], output: Shape) -> int:
        return prod(output) * inputs[0][-1]

    def keras(self) -> list[KerasLayer]:
        kwargs = {
            "activation": None,
            "kernel_regularizer": _l2(self.l2),
            "use_bias": False if not self.use_bias else None,
        }
        return keras_with_activation("layers.Dense", (self.units,), kwargs, self.activation)

    def keras_helpers(self) -> tuple[str, ...]:
        return self.activation.keras_helpers() if self.activation is not None else ()

    def l2_factor(self) -> float:
        return self.l2

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        options = {} if self.use_bias else {"bias": False}
        call = Call("nn.Linear", inputs[0][-1], self.units, **options)
        if len(inputs[0]) == 3:
            # On an (H, W, C) map Keras's Dense acts on the channels at every position.
            apply = "{module}({x}.movedim(1, -1)).movedim(-1, 1)"
            return TorchLayer(call, apply, activation=self.activation)
        return TorchLayer(call, activation=self.activation)

    def weight_shapes(self, inputs: list[Shape]) -> dict[str, tuple[int, ...]]:
        shapes = {"weight": (self.units, inputs[0][-1])}
        return {**shapes, "bias": (self.units,)} if self.use_bias else shapes

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        weight = graph.weight(f"{name}.weight")
        bias = [graph.weight(f"{name}.bias")] if self.use_bias else []
        if len(shapes[0]) == 1:
            y = graph.op("Gemm", [inputs[0], weight, *bias], name, transB=1)
        else:
            # On an (H, W, C) map Keras's Dense acts on the channels at every position.
            last = graph.op("Transpose", inputs, f"{name}_nhwc", perm=[0, 2, 3, 1])
            kernel = graph.op("Transpose", [weight], f"{name}_kernel", perm=[1, 0])
            y = graph.op("MatMul", [last, kernel], f"{name}_matmul")
            if bias:
                y = graph.op("Add", [y, *bias], f"{name}_bias")
            y = graph.op("Transpose", [y], name, perm=[0, 3, 1, 2])
        return self.activation.onnx_apply(graph, f"{name}_act", y) if self.activation else y


class _Merge(LayerArgs):
    """A join of two or more branches, as Keras's merge layers: this base checks the inputs
    and the output shape, and each join adds its rule and its three emitters.

    Shapes are in the checker's (H, W, C) order; PyTorch and ONNX hold maps as (C, H, W), so a
    vector (C,) joined with a map is unsqueezed to (C, 1, 1) there, which is where Keras's
    expand-at-axis-1 puts it too."""

    internal: ClassVar[bool] = True
    is_join: ClassVar[bool] = True
    arity: ClassVar[int | None] = None
    verb: ClassVar[str]

    def mismatch(self, first: Shape, other: Shape, index: int, hint: str) -> ShapeError:
        """The error for input `index`, which does not fit the inputs before it."""
        message = f"cannot {self.verb} {format_shape(first)} and {format_shape(other)}"
        return ShapeError("E203", message, hint, input=index)

    def onnx_map(self, graph: OnnxBuilder, name: str, x: str, shape: Shape, rank: int) -> str:
        """`x`, unsqueezed to (C, 1, 1) when it is a vector joined with maps."""
        if len(shape) == rank:
            return x
        axes = graph.constant(f"{name}_axes", [2, 3], (2,), dtype="int64")
        return graph.op("Unsqueeze", [x, axes], f"{name}_unsqueeze")

    @staticmethod
    def torch_map(index: int, shape: Shape, rank: int) -> str:
        return f"{{inputs[{index}]}}" + ("[:, :, None, None]" if len(shape) < rank else "")


@register
class Add(_Merge):
    kind: ClassVar[str] = "add"
    framework_names: ClassVar[tuple[str, ...]] = ("Add",)
    doc: ClassVar[str] = (
        "Element-wise sum of branches of equal shape, as a residual joins its body and its "
        "shortcut."
    )
    verb: ClassVar[str] = "add"

    def output_shape(self, inputs: list[Shape]) -> Shape:
        first = inputs[0]
        for index, other in enumerate(inputs[1:], 1):
            if other != first:
                raise self.mismatch(first, other, index, "added branches must have equal shapes")
        return first

    def keras(self) -> list[KerasLayer]:
        return [KerasLayer("", Call("layers.Add"))]

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        return TorchLayer(None, "{total}")

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        return graph.op("Sum", inputs, name)


@register
class Concat(_Merge):
    kind: ClassVar[str] = "concat"
    framework_names: ClassVar[tuple[str, ...]] = ("Concatenate", "concatenate", "cat")
    doc: ClassVar[str] = (
        "Joins branches along the channels, as Inception and DenseNet do: (H, W, C1) and "
        "(H, W, C2) give (H, W, C1 + C2)."
    )
    verb: ClassVar[str] = "concat"

    def output_shape(self, inputs: list[Shape]) -> Shape:
        first = inputs[0]
        for index, other in enumerate(inputs[1:], 1):
            if len(other) != len(first) or other[:-1] != first[:-1]:
                raise self.mismatch(
                    first,
                    other,
                    index,
                    "branches are joined along the channels, so all else must be equal; "
                    "give their layers padding=same or the same strides",
                )
        return (*first[:-1], sum(shape[-1] for shape in inputs))

    def keras(self) -> list[KerasLayer]:
        return [KerasLayer("", Call("layers.Concatenate"))]

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        joined = ", ".join(f"{{inputs[{i}]}}" for i in range(len(inputs)))
        return TorchLayer(None, f"torch.cat([{joined}], dim=1)")

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        return graph.op("Concat", inputs, name, axis=1)  # the channels, in NCHW


@register
class Multiply(_Merge):
    kind: ClassVar[str] = "multiply"
    framework_names: ClassVar[tuple[str, ...]] = ("Multiply", "multiply", "mul")
    doc: ClassVar[str] = (
        "Element-wise product with broadcasting, as a squeeze-and-excitation gate scales a "
        "(H, W, C) map by a (1, 1, C) or (C,) vector."
    )
    verb: ClassVar[str] = "multiply"

    def output_shape(self, inputs: list[Shape]) -> Shape:
        result: Shape = inputs[0]
        for index, other in enumerate(inputs[1:], 1):
            if {len(result), len(other)} - {1, 3}:
                raise self.mismatch(
                    result, other, index, "multiply joins (H, W, C) maps and (C,) vectors"
                )
            longer, shorter = (result, other) if len(result) >= len(other) else (other, result)
            shorter = (1,) * (len(longer) - len(shorter)) + shorter
            if any(a != b and 1 not in (a, b) for a, b in zip(longer, shorter, strict=True)):
                raise self.mismatch(
                    result,
                    other,
                    index,
                    "each axis must be equal or 1: a gate for a (H, W, C) map is (1, 1, C) or (C,)",
                )
            result = tuple(max(a, b) for a, b in zip(longer, shorter, strict=True))
        return result

    def keras(self) -> list[KerasLayer]:
        return [KerasLayer("", Call("layers.Multiply"))]

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        rank = max(len(shape) for shape in inputs)
        return TorchLayer(
            None, " * ".join(self.torch_map(i, shape, rank) for i, shape in enumerate(inputs))
        )

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        rank = max(len(shape) for shape in shapes)
        values = [
            self.onnx_map(graph, f"{name}_{i}", x, shape, rank)
            for i, (x, shape) in enumerate(zip(inputs, shapes, strict=True))
        ]
        out = values[0]
        for index, value in enumerate(values[1:], 1):
            last = index == len(values) - 1
            out = graph.op("Mul", [out, value], name if last else f"{name}_{index}")
        return out


# --------------------------------------------------------------------------------------------
# Activations: usable as layers, `relu()`, and as arguments, `activation=relu`.


class _Activation(LayerArgs):
    is_activation: ClassVar[bool] = True
    # Keras's name for this activation as an `activation=` string, when it means the same.
    keras_string: ClassVar[str | None] = None

    def keras_name(self) -> str | None:
        return self.keras_string

    def keras(self) -> list[KerasLayer]:
        return [KerasLayer("", Call("layers.Activation", self.keras_string))]

    torch_name: ClassVar[str]

    def torch_function(self) -> Call:
        return Call(self.torch_name, HOLE)

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        return TorchLayer(None, "{x}", activation=self)

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        return self.onnx_apply(graph, name, inputs[0])

    onnx_op: ClassVar[str] = ""

    def onnx_apply(self, graph: OnnxBuilder, name: str, x: str) -> str:
        return graph.op(self.onnx_op, [x], name)


@register
class ReLU(_Activation):
    kind: ClassVar[str] = "relu"
    framework_names: ClassVar[tuple[str, ...]] = ("ReLU",)
    onnx_op: ClassVar[str] = "Relu"
    torch_name: ClassVar[str] = "torch.relu"
    doc: ClassVar[str] = "max(x, 0)."
    keras_string: ClassVar[str | None] = "relu"

    def keras(self) -> list[KerasLayer]:
        return [KerasLayer("", Call("layers.ReLU"))]


@register
class ReLU6(_Activation):
    kind: ClassVar[str] = "relu6"
    framework_names: ClassVar[tuple[str, ...]] = ("ReLU6",)
    torch_name: ClassVar[str] = "F.relu6"
    doc: ClassVar[str] = "min(max(x, 0), 6)."
    keras_string: ClassVar[str | None] = "relu6"

    def keras(self) -> list[KerasLayer]:
        return [KerasLayer("", Call("layers.ReLU", max_value=6.0))]

    def onnx_apply(self, graph: OnnxBuilder, name: str, x: str) -> str:
        low, high = graph.constant(f"{name}_min", [0.0]), graph.constant(f"{name}_max", [6.0])
        return graph.op("Clip", [x, low, high], name)


@register
class LeakyReLU(_Activation):
    kind: ClassVar[str] = "leaky_relu"
    framework_names: ClassVar[tuple[str, ...]] = ("LeakyReLU",)
    torch_name: ClassVar[str] = "F.leaky_relu"
    doc: ClassVar[str] = "x for x > 0, alpha * x otherwise (Keras's default alpha, 0.3)."
    positional: ClassVar[tuple[str, ...]] = ("alpha",)
    alpha: NonNegFloat = 0.3

    def torch_function(self) -> Call:
        return Call(self.torch_name, HOLE, negative_slope=self.alpha)

    def keras(self) -> list[KerasLayer]:
        # Keras's "leaky_relu" string means a slope of 0.2, so the layer always says its alpha.
        return [KerasLayer("", Call("layers.LeakyReLU", negative_slope=self.alpha))]

    def onnx_apply(self, graph: OnnxBuilder, name: str, x: str) -> str:
        return graph.op("LeakyRelu", [x], name, alpha=self.alpha)


@register
class ELU(_Activation):
    kind: ClassVar[str] = "elu"
    framework_names: ClassVar[tuple[str, ...]] = ("ELU",)
    torch_name: ClassVar[str] = "F.elu"
    doc: ClassVar[str] = "x for x > 0, alpha * (exp(x) - 1) otherwise."
    positional: ClassVar[tuple[str, ...]] = ("alpha",)
    alpha: NonNegFloat = 1.0

    def keras_name(self) -> str | None:
        return "elu" if self.alpha == 1.0 else None

    def torch_function(self) -> Call:
        return Call(self.torch_name, HOLE, **({} if self.alpha == 1.0 else {"alpha": self.alpha}))

    def keras(self) -> list[KerasLayer]:
        return [KerasLayer("", Call("layers.ELU", alpha=self.alpha))]

    def onnx_apply(self, graph: OnnxBuilder, name: str, x: str) -> str:
        return graph.op("Elu", [x], name, alpha=self.alpha)


@register
class Sigmoid(_Activation):
    kind: ClassVar[str] = "sigmoid"
    framework_names: ClassVar[tuple[str, ...]] = ("Sigmoid",)
    onnx_op: ClassVar[str] = "Sigmoid"
    torch_name: ClassVar[str] = "torch.sigmoid"
    doc: ClassVar[str] = "1 / (1 + exp(-x)); the output of a binary classifier."
    keras_string: ClassVar[str | None] = "sigmoid"


@register
class Tanh(_Activation):
    kind: ClassVar[str] = "tanh"
    framework_names: ClassVar[tuple[str, ...]] = ("Tanh",)
    onnx_op: ClassVar[str] = "Tanh"
    torch_name: ClassVar[str] = "torch.tanh"
    doc: ClassVar[str] = "Hyperbolic tangent."
    keras_string: ClassVar[str | None] = "tanh"


@register
class Softmax(_Activation):
    kind: ClassVar[str] = "softmax"
    framework_names: ClassVar[tuple[str, ...]] = ("Softmax",)
    torch_name: ClassVar[str] = "torch.softmax"
    doc: ClassVar[str] = "Normalised exponential over the last axis; a multi-class output."
    keras_string: ClassVar[str | None] = "softmax"

    def torch_function(self) -> Call:
        # Keras's last axis is PyTorch's dim 1 for (N, C) and (N, C, H, W) alike.
        return Call(self.torch_name, HOLE, dim=1)

    def keras(self) -> list[KerasLayer]:
        return [KerasLayer("", Call("layers.Softmax"))]

    def onnx_apply(self, graph: OnnxBuilder, name: str, x: str) -> str:
        return graph.op("Softmax", [x], name, axis=1)  # channels: Keras's last axis


@register
class GELU(_Activation):
    kind: ClassVar[str] = "gelu"
    framework_names: ClassVar[tuple[str, ...]] = ("GELU",)
    torch_name: ClassVar[str] = "F.gelu"
    doc: ClassVar[str] = "Gaussian error linear unit; `approximate=true` uses the tanh form."
    approximate: bool = False

    def keras_name(self) -> str | None:
        return None if self.approximate else "gelu"

    def torch_function(self) -> Call:
        return Call(self.torch_name, HOLE, **({"approximate": "tanh"} if self.approximate else {}))

    def keras(self) -> list[KerasLayer]:
        activation = Code("gelu_tanh") if self.approximate else "gelu"
        return [KerasLayer("", Call("layers.Activation", activation))]

    def keras_helpers(self) -> tuple[str, ...]:
        return ("gelu_tanh",) if self.approximate else ()

    def onnx_apply(self, graph: OnnxBuilder, name: str, x: str) -> str:
        # Written out so that any opset from 13 runs it (the Gelu op arrived in opset 20).
        half = graph.constant(f"{name}_half", [0.5])
        one = graph.constant(f"{name}_one", [1.0])
        if self.approximate:
            cube = graph.op("Mul", [x, graph.op("Mul", [x, x], f"{name}_sq")], f"{name}_cube")
            scaled = graph.op("Mul", [cube, graph.constant(f"{name}_c", [0.044715])], f"{name}_sc")
            inner = graph.op("Add", [x, scaled], f"{name}_inner")
            root = graph.constant(f"{name}_root", [0.7978845608028654])  # sqrt(2 / pi)
            core = graph.op("Tanh", [graph.op("Mul", [inner, root], f"{name}_arg")], f"{name}_t")
        else:
            root = graph.constant(f"{name}_root", [0.7071067811865476])  # 1 / sqrt(2)
            core = graph.op("Erf", [graph.op("Mul", [x, root], f"{name}_arg")], f"{name}_erf")
        gate = graph.op("Mul", [graph.op("Add", [core, one], f"{name}_1p"), half], f"{name}_g")
        return graph.op("Mul", [x, gate], name)


@register
class Swish(_Activation):
    kind: ClassVar[str] = "swish"
    framework_names: ClassVar[tuple[str, ...]] = ("SiLU", "Swish")
    torch_name: ClassVar[str] = "F.silu"
    doc: ClassVar[str] = "x * sigmoid(x), also called SiLU."
    keras_string: ClassVar[str | None] = "swish"

    def onnx_apply(self, graph: OnnxBuilder, name: str, x: str) -> str:
        gate = graph.op("Sigmoid", [x], f"{name}_sigmoid")
        return graph.op("Mul", [x, gate], name)
