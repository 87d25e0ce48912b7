"""Dropout, flatten and dense."""

from math import prod
from typing import ClassVar

from cnnspec.codegen import Call
from cnnspec.layers.base import (
    keras_with_activation,
    l2_regularizer,
    spatial,
)
from cnnspec.registry import (
    Activation,
    KerasLayer,
    KerasWeight,
    LayerArgs,
    NonNegFloat,
    OnnxBuilder,
    Params,
    PositiveInt,
    Rate,
    Shape,
    TorchLayer,
    Window,
    register,
)


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
        shapes = {"weight": (self.units, inputs[0][-1])}
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
        else:
            # On an (H, W, C) map Keras's Dense acts on the channels at every position.
            last = graph.op("Transpose", inputs, f"{name}_nhwc", perm=[0, 2, 3, 1])
            kernel = graph.op("Transpose", [weight], f"{name}_kernel", perm=[1, 0])
            y = graph.op("MatMul", [last, kernel], f"{name}_matmul")
            if bias:
                y = graph.op("Add", [y, *bias], f"{name}_bias")
            y = graph.op("Transpose", [y], name, perm=[0, 3, 1, 2])
        return self.activation.onnx_apply(graph, f"{name}_act", y) if self.activation else y
