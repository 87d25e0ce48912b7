"""Convolutions: conv2d (grouped too), depthwise_conv2d and separable_conv2d."""

from collections.abc import Mapping
from math import prod
from typing import Any, ClassVar, Literal

from cnnspec import codes
from cnnspec.codegen import Call
from cnnspec.layers import keras_config
from cnnspec.layers.base import (
    keras_with_activation,
    l2_regularizer,
    onnx_pads,
    scalar_or_pair,
    slide,
    spatial,
)
from cnnspec.registry import (
    ACTIVATION_SUFFIX,
    KERAS_INPUT,
    PADDING_SUFFIX,
    Activation,
    ImportGap,
    KerasLayer,
    KerasReading,
    KerasWeight,
    LayerArgs,
    NonNegFloat,
    OnnxBuilder,
    Padding,
    Pair,
    Params,
    PositiveInt,
    Shape,
    ShapeError,
    TorchLayer,
    Window,
    register,
)
from cnnspec.schema import Problem, field_validator


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

    def fused_activation(self) -> LayerArgs | None:
        return self.activation

    def _check_stride_dilation(self) -> None:
        if max(self.stride) > 1 and max(self.dilation) > 1:
            raise ShapeError(
                codes.SETTINGS_CONFLICT,
                f"{self.kind} cannot have both stride > 1 and dilation > 1",
                "Keras refuses the combination; downsample in a separate layer",
                field="dilation",
            )

    def window(self) -> Window:
        return Window(self.kernel, self.stride, self.dilation)

    kernel_layout: ClassVar[Literal["conv", "depthwise"]] = "conv"

    def keras_weights(self) -> tuple[KerasWeight, ...]:
        kernel = KerasWeight("kernel", "weight", self.kernel_layout)
        return (kernel, KerasWeight("bias", "bias")) if self.use_bias else (kernel,)

    def initial_value(self, suffix: str) -> float | None:
        return None if suffix == "weight" else 0.0

    def l2_factor(self) -> float:
        return self.l2

    def keras_helpers(self) -> tuple[str, ...]:
        return self.activation.keras_helpers() if self.activation is not None else ()

    def _torch_conv(self, in_channels: int, out_channels: int, groups: int) -> TorchLayer:
        kwargs: dict[str, object] = {}
        if self.stride != (1, 1):
            kwargs["stride"] = scalar_or_pair(self.stride)
        helpers: tuple[str, ...] = ()
        func = "nn.Conv2d"
        if self.padding == "same":
            totals = [d * (k - 1) for k, d in zip(self.kernel, self.dilation, strict=True)]
            if self.stride == (1, 1) and all(t % 2 == 0 for t in totals):
                if any(totals):
                    kwargs["padding"] = scalar_or_pair((totals[0] // 2, totals[1] // 2))
            else:
                # TensorFlow puts the odd pixel of `same` padding at the bottom and right, and
                # with a stride the amount depends on the input size: pad in forward.
                func, helpers = "Conv2dSame", ("Conv2dSame",)
        elif isinstance(self.padding, int) and self.padding:
            kwargs["padding"] = self.padding
        if self.dilation != (1, 1):
            kwargs["dilation"] = scalar_or_pair(self.dilation)
        if groups > 1:
            kwargs["groups"] = groups
        if not self.use_bias:
            kwargs["bias"] = False
        call = Call(func, in_channels, out_channels, scalar_or_pair(self.kernel), **kwargs)
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
        return (
            self.activation.onnx_apply(graph, name + ACTIVATION_SUFFIX, y) if self.activation else y
        )

    def _keras_conv(self, func: str, args: tuple[object, ...], **extra: object) -> list[KerasLayer]:
        # Keras convolutions pad only `same` or `valid`: an explicit amount is a ZeroPadding2D.
        explicit = isinstance(self.padding, int) and self.padding > 0
        kwargs = {
            "strides": scalar_or_pair(self.stride) if self.stride != (1, 1) else None,
            "padding": "same" if self.padding == "same" else None,
            "dilation_rate": scalar_or_pair(self.dilation) if self.dilation != (1, 1) else None,
            "activation": None,
            **extra,
            "use_bias": False if not self.use_bias else None,
        }
        conv = keras_with_activation(func, args, kwargs, self.activation)
        if explicit:
            return [KerasLayer(PADDING_SUFFIX, Call("layers.ZeroPadding2D", self.padding)), *conv]
        return conv


@register
class Conv2D(_Conv):
    kind: ClassVar[str] = "conv2d"
    framework_names: ClassVar[tuple[str, ...]] = ("Conv2D", "Conv2d", "Convolution2D")
    doc: ClassVar[str] = (
        "2-D convolution over (H, W, C) with `filters` output channels; `groups` splits the "
        "input and output channels into that many independent convolutions (ResNeXt, RegNet)."
    )
    positional: ClassVar[tuple[str, ...]] = ("filters", "kernel")
    filters: PositiveInt
    groups: PositiveInt = 1

    def output_shape(self, inputs: list[Shape]) -> Shape:
        self._check_stride_dilation()
        channels = spatial(inputs[0], self.kind)[2]
        for what, count in (("filters", self.filters), ("input channels", channels)):
            if count % self.groups:
                raise ShapeError(
                    codes.SETTINGS_CONFLICT,
                    f"conv2d with groups={self.groups} needs {what} divisible by "
                    f"{self.groups}, but has {count}",
                    "each group convolves an equal share of the input and output channels",
                    field="groups",
                )
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
        c_in = inputs[0][-1] // self.groups
        weights = self.kernel[0] * self.kernel[1] * c_in * self.filters
        return Params(weights + (self.filters if self.use_bias else 0))

    def macs(self, inputs: list[Shape], output: Shape) -> int:
        return prod(output) * self.kernel[0] * self.kernel[1] * (inputs[0][-1] // self.groups)

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        return self._torch_conv(inputs[0][-1], self.filters, self.groups)

    def weight_shapes(self, inputs: list[Shape]) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {
            "weight": (self.filters, inputs[0][-1] // self.groups, *self.kernel)
        }
        return {**shapes, "bias": (self.filters,)} if self.use_bias else shapes

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        return self._onnx_conv(graph, name, inputs[0], shapes[0], self.groups)

    def keras(self) -> list[KerasLayer]:
        return self._keras_conv(
            "layers.Conv2D",
            (self.filters, scalar_or_pair(self.kernel)),
            groups=self.groups if self.groups != 1 else None,
            kernel_regularizer=l2_regularizer(self.l2),
        )

    keras_classes: ClassVar[tuple[str, ...]] = ("Conv2D",)

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> KerasReading:
        args = {"filters": int(config["filters"]), **keras_config.conv_args(config)}
        if config.get("groups", 1) != 1:
            args["groups"] = int(config["groups"])
        return args


@register
class DepthwiseConv2D(_Conv):
    kind: ClassVar[str] = "depthwise_conv2d"
    framework_names: ClassVar[tuple[str, ...]] = ("DepthwiseConv2D",)
    doc: ClassVar[str] = "Depthwise convolution: one spatial filter per input channel."
    positional: ClassVar[tuple[str, ...]] = ("kernel",)
    kernel_layout: ClassVar[Literal["conv", "depthwise"]] = "depthwise"
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
        shapes: dict[str, tuple[int, ...]] = {"weight": (out, 1, *self.kernel)}
        return {**shapes, "bias": (out,)} if self.use_bias else shapes

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        return self._onnx_conv(graph, name, inputs[0], shapes[0], shapes[0][-1])

    def keras(self) -> list[KerasLayer]:
        options: dict[str, object] = {
            "depth_multiplier": self.depth_multiplier if self.depth_multiplier != 1 else None,
            "depthwise_regularizer": l2_regularizer(self.l2),
        }
        if not self._unequal_strides:
            return self._keras_conv(
                "layers.DepthwiseConv2D", (scalar_or_pair(self.kernel),), **options
            )
        # TensorFlow's CPU kernel refuses unequal strides (oneDNN, where it runs, accepts them).
        # The stride-1 convolution sampled at every stride-th row and column is the same
        # numbers on every device; `same` padding is then the strided window's, in front.
        conv = keras_with_activation(
            "StridedDepthwiseConv2D",
            (scalar_or_pair(self.kernel),),
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
            return [KerasLayer(PADDING_SUFFIX, Call("layers.ZeroPadding2D", pads)), *conv]
        if isinstance(self.padding, int) and self.padding:
            return [KerasLayer(PADDING_SUFFIX, Call("layers.ZeroPadding2D", self.padding)), *conv]
        return conv

    @property
    def _unequal_strides(self) -> bool:
        return self.stride[0] != self.stride[1]

    def keras_helpers(self) -> tuple[str, ...]:
        if not self._unequal_strides:
            return super().keras_helpers()
        extra = ("same_padding",) if self.padding == "same" else ()
        return (*super().keras_helpers(), "StridedDepthwiseConv2D", *extra)

    keras_classes: ClassVar[tuple[str, ...]] = ("DepthwiseConv2D", "StridedDepthwiseConv2D")

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> KerasReading:
        args = keras_config.conv_args(config)
        args["depth_multiplier"] = int(config.get("depth_multiplier", 1))
        if class_name == "StridedDepthwiseConv2D":
            # The Keras script's unequal strides: a stride-1 convolution, subsampled.
            if args["stride"] != (1, 1):
                raise ImportGap(
                    f"StridedDepthwiseConv2D with strides={config.get('strides')}",
                    "the script's own layer strides by its subsample alone",
                )
            args["stride"] = keras_config.pair(config.get("subsample", 1))
        return args


@register
class SeparableConv2D(_Conv):
    kind: ClassVar[str] = "separable_conv2d"
    framework_names: ClassVar[tuple[str, ...]] = ("SeparableConv2D", "SeparableConvolution2D")
    doc: ClassVar[str] = (
        "Depthwise-separable convolution (Xception, NASNet): a depthwise convolution with "
        "`depth_multiplier` filters per input channel and no bias, then a 1x1 convolution to "
        "`filters` channels (with the bias)."
    )
    positional: ClassVar[tuple[str, ...]] = ("filters", "kernel")
    filters: PositiveInt
    depth_multiplier: PositiveInt = 1

    @field_validator("l2")
    @classmethod
    def _no_l2(cls, value: float) -> float:
        if value:
            raise Problem(
                "must be 0: Keras's SeparableConv2D would need a penalty for each of its kernels",
                hint="leave l2 out, or write depthwise_conv2d() and conv2d(kernel=1, l2=...)",
            )
        return value

    def output_shape(self, inputs: list[Shape]) -> Shape:
        self._check_stride_dilation()
        if self.stride[0] != self.stride[1]:
            raise ShapeError(
                codes.SETTINGS_CONFLICT,
                "separable_conv2d needs equal strides: TensorFlow's kernel refuses "
                f"stride={self.stride}",
                "use depthwise_conv2d(stride=...) and conv2d(kernel=1) instead",
                field="stride",
            )
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
        middle = inputs[0][-1] * self.depth_multiplier
        depthwise = self.kernel[0] * self.kernel[1] * middle
        pointwise = middle * self.filters + (self.filters if self.use_bias else 0)
        return Params(depthwise + pointwise)

    def macs(self, inputs: list[Shape], output: Shape) -> int:
        middle = inputs[0][-1] * self.depth_multiplier
        positions = output[0] * output[1]
        return positions * middle * (self.kernel[0] * self.kernel[1] + self.filters)

    def weight_shapes(self, inputs: list[Shape]) -> dict[str, tuple[int, ...]]:
        middle = inputs[0][-1] * self.depth_multiplier
        shapes: dict[str, tuple[int, ...]] = {
            "depthwise.weight": (middle, 1, *self.kernel),
            "pointwise.weight": (self.filters, middle, 1, 1),
        }
        return {**shapes, "pointwise.bias": (self.filters,)} if self.use_bias else shapes

    def keras_weights(self) -> tuple[KerasWeight, ...]:
        kernels = (
            KerasWeight("depthwise_kernel", "depthwise.weight", "depthwise"),
            KerasWeight("pointwise_kernel", "pointwise.weight", "conv"),
        )
        return (*kernels, KerasWeight("bias", "pointwise.bias")) if self.use_bias else kernels

    def initial_value(self, suffix: str) -> float | None:
        return None if suffix.endswith("weight") else 0.0

    def keras(self) -> list[KerasLayer]:
        return self._keras_conv(
            "layers.SeparableConv2D",
            (self.filters, scalar_or_pair(self.kernel)),
            depth_multiplier=self.depth_multiplier if self.depth_multiplier != 1 else None,
        )

    keras_classes: ClassVar[tuple[str, ...]] = ("SeparableConv2D",)

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> KerasReading:
        args = {"filters": int(config["filters"]), **keras_config.conv_args(config)}
        args["depth_multiplier"] = int(config.get("depth_multiplier", 1))
        return args

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        kwargs: dict[str, object] = {}
        if self.stride != (1, 1):
            kwargs["stride"] = scalar_or_pair(self.stride)
        if self.padding == "same" or (isinstance(self.padding, int) and self.padding):
            kwargs["padding"] = self.padding
        if self.dilation != (1, 1):
            kwargs["dilation"] = scalar_or_pair(self.dilation)
        if self.depth_multiplier != 1:
            kwargs["depth_multiplier"] = self.depth_multiplier
        if not self.use_bias:
            kwargs["bias"] = False
        call = Call(
            "SeparableConv2d", inputs[0][-1], self.filters, scalar_or_pair(self.kernel), **kwargs
        )
        return TorchLayer(call, activation=self.activation, helpers=("SeparableConv2d",))

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        depthwise = graph.op(
            "Conv",
            [inputs[0], graph.weight(f"{name}.depthwise.weight")],
            f"{name}_depthwise",
            kernel_shape=list(self.kernel),
            strides=list(self.stride),
            dilations=list(self.dilation),
            pads=onnx_pads(shapes[0], self.kernel, self.stride, self.dilation, self.padding),
            group=shapes[0][-1],
        )
        pointwise = [graph.weight(f"{name}.pointwise.weight")]
        if self.use_bias:
            pointwise.append(graph.weight(f"{name}.pointwise.bias"))
        y = graph.op("Conv", [depthwise, *pointwise], name, kernel_shape=[1, 1])
        return (
            self.activation.onnx_apply(graph, name + ACTIVATION_SUFFIX, y) if self.activation else y
        )
