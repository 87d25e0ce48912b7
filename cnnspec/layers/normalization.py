"""Normalisation layers: batchnorm."""

from typing import ClassVar

from cnnspec.codegen import Call
from cnnspec.registry import (
    KerasLayer,
    KerasWeight,
    LayerArgs,
    OnnxBuilder,
    Params,
    Shape,
    TorchLayer,
    register,
)
from cnnspec.schema import Field


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

    def keras_weights(self) -> tuple[KerasWeight, ...]:
        return (
            KerasWeight("gamma", "weight", "features"),
            KerasWeight("beta", "bias", "features"),
            KerasWeight("moving_mean", "running_mean", "features"),
            KerasWeight("moving_variance", "running_var", "features"),
        )

    def initial_value(self, suffix: str) -> float | None:
        return 1.0 if suffix in ("weight", "running_var") else 0.0

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        keys = ("weight", "bias", "running_mean", "running_var")
        tensors = [graph.weight(f"{name}.{key}") for key in keys]
        return graph.op("BatchNormalization", [inputs[0], *tensors], name, epsilon=self.epsilon)
