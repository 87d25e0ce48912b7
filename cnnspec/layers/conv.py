"""Convolutions: conv2d and depthwise_conv2d."""

from math import prod
from typing import ClassVar, Literal

from cnnspec.codegen import Call
from cnnspec.layers.base import (
    keras_with_activation,
    l2_regularizer,
    onnx_pads,
    scalar_or_pair,
    slide,
    spatial,
)
from cnnspec.registry import (
    KERAS_INPUT,
    Activation,
    KerasLayer,
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
        return self.activation.onnx_apply(graph, f"{name}_act", y) if self.activation else y

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
            (self.filters, scalar_or_pair(self.kernel)),
            kernel_regularizer=l2_regularizer(self.l2),
        )


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
        shapes = {"weight": (out, 1, *self.kernel)}
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
