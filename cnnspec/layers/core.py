"""Dropout, flatten and dense; the element-wise rescaling, layer_scale and stochastic_depth;
reshape."""

from collections.abc import Mapping
from math import prod
from typing import Annotated, Any, ClassVar

from cnnspec import codes
from cnnspec.codegen import Call, literal
from cnnspec.layers import keras_config
from cnnspec.layers.base import (
    format_shape,
    keras_with_activation,
    l2_regularizer,
    spatial,
)
from cnnspec.layers.normalization import (
    PerChannel,
    channel_constant,
    channel_shape,
    check_per_channel,
    per_channel_literal,
)
from cnnspec.registry import (
    ACTIVATION_SUFFIX,
    Activation,
    ImportGap,
    KerasLayer,
    KerasReading,
    KerasWeight,
    LayerArgs,
    NonNegFloat,
    OnnxBuilder,
    OnnxNode,
    OnnxSteps,
    Params,
    PositiveInt,
    Rate,
    Shape,
    ShapeError,
    TorchLayer,
    Window,
    register,
)
from cnnspec.schema import Before, Problem


@register
class Dropout(LayerArgs):
    kind: ClassVar[str] = "dropout"
    elementwise: ClassVar[bool] = True
    takes_tokens: ClassVar[bool] = True
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

    keras_classes: ClassVar[tuple[str, ...]] = ("Dropout",)

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> KerasReading:
        # One draw per example is stochastic_depth, as its emitter writes it.
        noise = config.get("noise_shape")
        if noise is not None and list(noise)[1:] == [1, 1, 1]:
            return "stochastic_depth", {"rate": float(config["rate"])}
        if noise is not None:
            raise ImportGap(
                f"noise_shape={noise}",
                "cnnspec drops units, channels (spatial_dropout) or examples",
            )
        return {"rate": float(config["rate"])}


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

    keras_classes: ClassVar[tuple[str, ...]] = ("SpatialDropout2D",)

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> KerasReading:
        return {"rate": float(config["rate"])}

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        return TorchLayer(Call("nn.Dropout2d", self.rate))

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        return inputs[0]  # inference: no-op


@register
class Flatten(LayerArgs):
    kind: ClassVar[str] = "flatten"
    takes_tokens: ClassVar[bool] = True  # (N, D) to (N * D,), token by token everywhere
    framework_names: ClassVar[tuple[str, ...]] = ("Flatten",)
    doc: ClassVar[str] = "Flattens (H, W, C) to (H*W*C,), in Keras's channels-last order."

    def output_shape(self, inputs: list[Shape]) -> Shape:
        return (prod(inputs[0]),)

    def window(self) -> Window:
        return Window(global_=True)

    def keras(self) -> list[KerasLayer]:
        return [KerasLayer("", Call("layers.Flatten"))]

    keras_classes: ClassVar[tuple[str, ...]] = ("Flatten",)

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> KerasReading:
        keras_config.channels_last(config)
        return {}

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        # NCHW order: the canonical weight layout stores the next layer's rows to match.
        return TorchLayer(None, "torch.flatten({x}, 1)")

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        return graph.op("Flatten", inputs, name, axis=1)  # NCHW order, as the weights


@register
class Dense(LayerArgs):
    kind: ClassVar[str] = "dense"
    takes_tokens: ClassVar[bool] = True
    aliases: ClassVar[dict[str, str]] = {"kernel_regularizer": "l2", "bias": "use_bias"}
    framework_names: ClassVar[tuple[str, ...]] = ("Dense", "Linear")
    doc: ClassVar[str] = "Fully connected layer over the last axis."
    positional: ClassVar[tuple[str, ...]] = ("units",)
    units: PositiveInt
    activation: Activation = None
    l2: NonNegFloat = 0.0
    use_bias: bool = True

    def fused_activation(self) -> LayerArgs | None:
        return self.activation

    def output_shape(self, inputs: list[Shape]) -> Shape:
        return (*inputs[0][:-1], self.units)

    def params(self, inputs: list[Shape], output: Shape) -> Params:
        return Params(inputs[0][-1] * self.units + (self.units if self.use_bias else 0))

    def macs(self, inputs: list[Shape], output: Shape) -> int:
        return prod(output) * inputs[0][-1]

    def keras(self) -> list[KerasLayer]:
        kwargs = {
            "activation": None,
            "kernel_regularizer": l2_regularizer(self.l2),
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
        shapes: dict[str, tuple[int, ...]] = {"weight": (self.units, inputs[0][-1])}
        return {**shapes, "bias": (self.units,)} if self.use_bias else shapes

    def keras_weights(self) -> tuple[KerasWeight, ...]:
        kernel = KerasWeight("kernel", "weight", "dense")
        return (kernel, KerasWeight("bias", "bias")) if self.use_bias else (kernel,)

    def initial_value(self, suffix: str) -> float | None:
        return None if suffix == "weight" else 0.0

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        weight = graph.weight(f"{name}.weight")
        bias = [graph.weight(f"{name}.bias")] if self.use_bias else []
        if len(shapes[0]) == 1:
            y = graph.op("Gemm", [inputs[0], weight, *bias], name, transB=1)
        elif len(shapes[0]) == 2:
            # Tokens (batch, N, D): the last axis already, as in every framework.
            kernel = graph.op("Transpose", [weight], f"{name}_kernel", perm=[1, 0])
            y = graph.op("MatMul", [inputs[0], kernel], f"{name}_matmul")
            y = graph.op("Add" if bias else "Identity", [y, *bias], name)
        else:
            # On an (H, W, C) map Keras's Dense acts on the channels at every position.
            last = graph.op("Transpose", inputs, f"{name}_nhwc", perm=[0, 2, 3, 1])
            kernel = graph.op("Transpose", [weight], f"{name}_kernel", perm=[1, 0])
            y = graph.op("MatMul", [last, kernel], f"{name}_matmul")
            if bias:
                y = graph.op("Add", [y, *bias], f"{name}_bias")
            y = graph.op("Transpose", [y], name, perm=[0, 3, 1, 2])
        return (
            self.activation.onnx_apply(graph, name + ACTIVATION_SUFFIX, y) if self.activation else y
        )

    # On a map or tokens (on a vector, a Gemm, which the ONNX reader reads with its weights).
    onnx_steps: ClassVar[OnnxSteps | None] = OnnxSteps(
        every=("nhwc", "kernel", "matmul", "bias"),
        signatures=(("matmul",),),
        inputs=("nhwc", "matmul"),
    )

    @classmethod
    def from_onnx_steps(cls, steps: Mapping[str, OnnxNode]) -> dict[str, Any] | None:
        kernel = steps.get("kernel")
        weight = kernel.constants[0] if kernel is not None else None
        if weight is None:
            return None
        return {
            "units": int(weight.shape[0]),
            "activation": None,
            "use_bias": "bias" in steps or steps[""].op_type == "Add",
        }

    keras_classes: ClassVar[tuple[str, ...]] = ("Dense",)

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> KerasReading:
        args: dict[str, Any] = {
            "units": int(config["units"]),
            "activation": keras_config.activation(config.get("activation")),
            "use_bias": bool(config.get("use_bias", True)),
        }
        if config.get("kernel_regularizer"):
            args["l2"] = keras_config.l2(config, "kernel_regularizer")
        return args


@register
class Rescaling(LayerArgs):
    kind: ClassVar[str] = "rescaling"
    elementwise: ClassVar[bool] = True
    framework_names: ClassVar[tuple[str, ...]] = ("Rescaling",)
    doc: ClassVar[str] = (
        "x * scale + offset, with one number for all channels or one per channel: a model's "
        "own preprocessing (`rescaling(1/127.5, offset=-1)`), or a residual branch scaled "
        "before an add, as InceptionResNetV2's scaled residuals."
    )
    positional: ClassVar[tuple[str, ...]] = ("scale",)
    scale: PerChannel
    offset: PerChannel = (0.0,)

    def output_shape(self, inputs: list[Shape]) -> Shape:
        check_per_channel(self.kind, "scale", self.scale, inputs[0])
        check_per_channel(self.kind, "offset", self.offset, inputs[0])
        return inputs[0]

    def keras(self) -> list[KerasLayer]:
        options = {} if self.offset == (0.0,) else {"offset": per_channel_literal(self.offset)}
        call = Call("layers.Rescaling", per_channel_literal(self.scale), **options)
        return [KerasLayer("", call)]

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        if len(self.scale) == 1 and len(self.offset) == 1:
            apply = f"{{x}} * {literal(self.scale[0])}"
            if self.offset != (0.0,):
                apply += f" + {literal(self.offset[0])}"
            return TorchLayer(None, apply)
        arguments = f"{literal(self.scale)}, {literal(self.offset)}"
        return TorchLayer(
            None, f"rescale_channels({{x}}, {arguments})", helpers=("rescale_channels",)
        )

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        scale = channel_constant(graph, f"{name}_scale", self.scale, shapes[0])
        if self.offset == (0.0,):
            return graph.op("Mul", [inputs[0], scale], name)
        scaled = graph.op("Mul", [inputs[0], scale], f"{name}_scaled")
        offset = channel_constant(graph, f"{name}_offset", self.offset, shapes[0])
        return graph.op("Add", [scaled, offset], name)

    keras_classes: ClassVar[tuple[str, ...]] = ("Rescaling",)

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> KerasReading:
        scale, offset = config.get("scale", 1.0), config.get("offset", 0.0)
        return {"scale": keras_config.scalars(scale), "offset": keras_config.scalars(offset)}


@register
class StochasticDepth(LayerArgs):
    kind: ClassVar[str] = "stochastic_depth"
    elementwise: ClassVar[bool] = True  # the whole example, kept or dropped
    aliases: ClassVar[dict[str, str]] = {"drop_rate": "rate", "drop_path": "rate"}
    framework_names: ClassVar[tuple[str, ...]] = ("StochasticDepth", "DropPath")
    doc: ClassVar[str] = (
        "Drop path: in training, zeroes a residual branch's whole output for a fraction `rate` "
        "of the samples (scaling the rest by 1 / (1 - rate)); the identity at inference."
    )
    positional: ClassVar[tuple[str, ...]] = ("rate",)
    rate: Rate

    def output_shape(self, inputs: list[Shape]) -> Shape:
        spatial(inputs[0], self.kind)
        return inputs[0]

    def keras(self) -> list[KerasLayer]:
        # What keras.applications' EfficientNet does: one draw per sample.
        call = Call("layers.Dropout", self.rate, noise_shape=(None, 1, 1, 1))
        return [KerasLayer("", call)]

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        return TorchLayer(Call("DropPath", self.rate), helpers=("DropPath",))

    # Its Keras emitter's Dropout is read by dropout's entry; this is the layer of that name
    # (KerasCV's and others').
    keras_classes: ClassVar[tuple[str, ...]] = ("StochasticDepth",)

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> KerasReading:
        return {"rate": float(config.get("drop_path_rate", 0.0))}

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        return inputs[0]  # inference: no-op


@register
class LayerScale(LayerArgs):
    kind: ClassVar[str] = "layer_scale"
    elementwise: ClassVar[bool] = True
    takes_tokens: ClassVar[bool] = True  # DeiT III's and CaiT's, on each token's features
    aliases: ClassVar[dict[str, str]] = {"init_values": "init"}
    framework_names: ClassVar[tuple[str, ...]] = ("LayerScale",)
    doc: ClassVar[str] = (
        "ConvNeXt's layer scale: the input times a learnt scale per channel, which starts at "
        "`init`."
    )
    positional: ClassVar[tuple[str, ...]] = ("init",)
    init: float = 1e-6

    def params(self, inputs: list[Shape], output: Shape) -> Params:
        return Params(trainable=output[-1])

    def keras(self) -> list[KerasLayer]:
        options = {} if self.init == 1e-6 else {"init_values": self.init}
        return [KerasLayer("", Call("LayerScale", **options))]

    def keras_helpers(self) -> tuple[str, ...]:
        return ("LayerScale",)

    # The Keras script's own layer, and keras.applications' ConvNeXt's.
    keras_classes: ClassVar[tuple[str, ...]] = ("LayerScale",)

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> KerasReading:
        return {"init": float(config.get("init_values", 1e-6))}

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        call = Call("LayerScale", inputs[0][-1], self.init)
        if len(inputs[0]) == 2:  # tokens (batch, N, D): the features are the last axis
            return TorchLayer(call, "{x} * {module}.weight", helpers=("LayerScale",))
        return TorchLayer(call, helpers=("LayerScale",))

    def weight_shapes(self, inputs: list[Shape]) -> dict[str, tuple[int, ...]]:
        return {"weight": (inputs[0][-1],)}

    def keras_weights(self) -> tuple[KerasWeight, ...]:
        return (KerasWeight("gamma", "weight", "features"),)

    def initial_value(self, suffix: str) -> float | None:
        return self.init

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        scale = channel_shape(graph, f"{name}_scale", graph.weight(f"{name}.weight"), shapes[0])
        return graph.op("Mul", [inputs[0], scale], name)


def _target(value: Any) -> Any:
    """`8`, `(1, 1, 8)`, `(-1, 64)` or `1x1x8`: a vector's length, tokens' (N, D) or a
    map's (H, W, C), -1 for one axis to infer."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    if not (
        isinstance(value, tuple)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise Problem("must be a shape such as (1, 1, 64), 4x4x8 or 256")
    if len(value) not in (1, 2, 3):
        raise Problem(
            f"must have 1, 2 or 3 axes, not {len(value)}",
            hint="a vector (C,), tokens (N, D) or a map (H, W, C), without the batch axis",
        )
    if any(v < 1 and v != -1 for v in value) or list(value).count(-1) > 1:
        raise Problem(
            "must hold positive sizes and at most one -1",
            hint="-1 stands for the one size that makes the element counts equal",
        )
    return value


@register
class Reshape(LayerArgs):
    kind: ClassVar[str] = "reshape"
    takes_tokens: ClassVar[bool] = True
    elementwise: ClassVar[bool] = True  # keeping the shape, it is the identity
    framework_names: ClassVar[tuple[str, ...]] = ("Reshape",)
    doc: ClassVar[str] = (
        "Gives the elements (in Keras's channels-last order) a new shape: a vector (C,), "
        "tokens (N, D) or a map (H, W, C), with -1 for one size to infer, as "
        "`reshape((1, 1, 64))` after global pooling or `reshape((-1, 64))` for a map's "
        "positions as tokens."
    )
    positional: ClassVar[tuple[str, ...]] = ("target",)
    aliases: ClassVar[dict[str, str]] = {"target_shape": "target"}
    target: Annotated[tuple[int, ...], Before(_target)]

    def output_shape(self, inputs: list[Shape]) -> Shape:
        total = prod(inputs[0])
        known = prod(v for v in self.target if v != -1)
        if -1 in self.target:
            if total % known:
                raise ShapeError(
                    codes.SETTINGS_CONFLICT,
                    f"reshape cannot fit the {total} elements of {format_shape(inputs[0])} "
                    f"into {format_shape(self.target)}: {total} is not a multiple of {known}",
                    "the sizes other than -1 must divide the element count",
                    field="target",
                )
            return tuple(total // known if v == -1 else v for v in self.target)
        if known != total:
            raise ShapeError(
                codes.SETTINGS_CONFLICT,
                f"reshape cannot make {format_shape(inputs[0])} ({total} elements) into "
                f"{format_shape(self.target)} ({known} elements)",
                "the element counts must be equal; write -1 for one size to infer it",
                field="target",
            )
        return self.target

    def keras(self) -> list[KerasLayer]:
        return [KerasLayer("", Call("layers.Reshape", self.target))]

    keras_classes: ClassVar[tuple[str, ...]] = ("Reshape",)

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> KerasReading:
        return {"target": tuple(int(v) for v in config["target_shape"])}

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        # Keras's order is channels-last: go through NHWC on both sides of a map.
        source = "{x}.permute(0, 2, 3, 1)" if len(inputs[0]) == 3 else "{x}"
        sizes = ", ".join(str(v) for v in self.target)
        apply = f"{source}.reshape({{x}}.shape[0], {sizes})"
        if len(self.target) == 3:
            apply += ".permute(0, 3, 1, 2)"
        return TorchLayer(None, apply)

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        x = inputs[0]
        if len(shapes[0]) == 3:
            x = graph.op("Transpose", [x], f"{name}_nhwc", perm=[0, 2, 3, 1])
        # 0 keeps the batch axis.
        target = graph.constant(
            f"{name}_shape", [0, *self.target], (len(self.target) + 1,), dtype="int64"
        )
        if len(self.target) < 3:
            return graph.op("Reshape", [x, target], name)
        y = graph.op("Reshape", [x, target], f"{name}_nhwc_out")
        return graph.op("Transpose", [y], name, perm=[0, 3, 1, 2])

    # Through NHWC on the side of a map (a vector to a vector is one Reshape, which the ONNX
    # reader reads by the shapes around it).
    onnx_steps: ClassVar[OnnxSteps | None] = OnnxSteps(
        every=("nhwc", "nhwc_out"),
        signatures=(("nhwc_out",), ("nhwc",)),
        inputs=("nhwc", "nhwc_out", ""),
    )

    @classmethod
    def from_onnx_steps(cls, steps: Mapping[str, OnnxNode]) -> dict[str, Any] | None:
        reshape = steps.get("nhwc_out") or steps[""]
        if reshape.op_type != "Reshape" or steps[""].op_type not in ("Reshape", "Transpose"):
            return None
        shape = reshape.constants[1] if len(reshape.constants) > 1 else None
        if shape is None:
            return None
        return {"target": tuple(int(v) for v in shape.reshape(-1)[1:])}
