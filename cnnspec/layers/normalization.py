"""Normalisation layers: batchnorm, layer_norm, and normalization (fixed or adaptable
per-channel statistics, as a model's own preprocessing)."""

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar

from cnnspec import codes
from cnnspec.codegen import Call, Code
from cnnspec.layers import keras_config
from cnnspec.layers.base import format_shape
from cnnspec.registry import (
    ImportGap,
    KerasLayer,
    KerasReading,
    KerasWeight,
    LayerArgs,
    OnnxBuilder,
    OnnxNode,
    OnnxSteps,
    Params,
    Shape,
    ShapeError,
    TorchLayer,
    float32,
    register,
)
from cnnspec.schema import Before, Field, Problem, field_validator, model_validator

_CHANNELS = "cnnspec normalizes the channels (the last axis)"


def channel_shape(graph: OnnxBuilder, name: str, vector: str, shape: Shape) -> str:
    """A per-channel vector, made (C, 1, 1) so that it broadcasts over an NCHW map."""
    if len(shape) != 3:
        return vector
    axes = graph.constant(f"{name}_axes", [1, 2], (2,), dtype="int64")
    return graph.op("Unsqueeze", [vector, axes], f"{name}_unsqueeze")


def channel_constant(graph: OnnxBuilder, name: str, values: tuple[float, ...], shape: Shape) -> str:
    """A constant per channel (or one for all), shaped to broadcast over the node's input."""
    if len(values) == 1:
        return graph.constant(name, list(values))
    dims = (len(values), 1, 1) if len(shape) == 3 else (len(values),)
    return graph.constant(name, list(values), dims)


@register
class BatchNorm(LayerArgs):
    kind: ClassVar[str] = "batchnorm"
    elementwise: ClassVar[bool] = True
    framework_names: ClassVar[tuple[str, ...]] = (
        "BatchNormalization",
        "BatchNorm2d",
        "BatchNorm1d",
    )
    doc: ClassVar[str] = (
        "Batch normalisation over the last axis. `momentum` uses the Keras convention "
        "(0.99 keeps 99% of the running average); PyTorch's momentum is 1 - momentum. "
        "`center=false` drops the learnt shift (beta), `scale=false` the learnt scale (gamma)."
    )
    epsilon: float = Field(default=1e-3, gt=0)
    momentum: float = Field(default=0.99, ge=0, lt=1)
    center: bool = True
    scale: bool = True

    @property
    def _affine(self) -> tuple[str, ...]:
        """The learnt tensors: `weight` (gamma) and `bias` (beta), as far as there are."""
        return ("weight",) * self.scale + ("bias",) * self.center

    def params(self, inputs: list[Shape], output: Shape) -> Params:
        channels = output[-1]
        return Params(trainable=len(self._affine) * channels, non_trainable=2 * channels)

    def keras(self) -> list[KerasLayer]:
        options: dict[str, object] = {}
        if self.momentum != 0.99:
            options["momentum"] = self.momentum
        if self.epsilon != 1e-3:
            options["epsilon"] = self.epsilon
        if not self.center:
            options["center"] = False
        if not self.scale:
            options["scale"] = False
        return [KerasLayer("", Call("layers.BatchNormalization", **options))]

    keras_classes: ClassVar[tuple[str, ...]] = ("BatchNormalization",)

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> KerasReading:
        keras_config.last_axis(config, _CHANNELS)
        return {
            "epsilon": float(config.get("epsilon", 1e-3)),
            "momentum": float(config.get("momentum", 0.99)),
            "center": bool(config.get("center", True)),
            "scale": bool(config.get("scale", True)),
        }

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        # PyTorch's momentum weighs the new batch, Keras's the running average.
        func = "nn.BatchNorm2d" if len(inputs[0]) == 3 else "nn.BatchNorm1d"
        momentum = round(1 - self.momentum, 12)
        channels = inputs[0][-1]
        if self.center == self.scale:
            options = {} if self.center else {"affine": False}
            return TorchLayer(Call(func, channels, eps=self.epsilon, momentum=momentum, **options))
        # Only one of gamma and beta: PyTorch's affine flag has both or neither.
        call = Call(
            "partial_batchnorm",
            Code(func),
            channels,
            scale=self.scale,
            center=self.center,
            eps=self.epsilon,
            momentum=momentum,
        )
        return TorchLayer(call, helpers=("partial_batchnorm",))

    def weight_shapes(self, inputs: list[Shape]) -> dict[str, tuple[int, ...]]:
        channels = (inputs[0][-1],)
        return {k: channels for k in (*self._affine, "running_mean", "running_var")}

    def keras_weights(self) -> tuple[KerasWeight, ...]:
        learnt = {"weight": KerasWeight("gamma", "weight", "features")}
        learnt["bias"] = KerasWeight("beta", "bias", "features")
        return (
            *(learnt[key] for key in self._affine),
            KerasWeight("moving_mean", "running_mean", "features"),
            KerasWeight("moving_variance", "running_var", "features"),
        )

    def initial_value(self, suffix: str) -> float | None:
        return 1.0 if suffix in ("weight", "running_var") else 0.0

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        channels = shapes[0][-1]
        tensors = []
        for key, missing in (("weight", 1.0), ("bias", 0.0)):
            if key in self._affine:
                tensors.append(graph.weight(f"{name}.{key}"))
            else:
                tensors.append(graph.constant(f"{name}_{key}", [missing] * channels, (channels,)))
        tensors += [graph.weight(f"{name}.{key}") for key in ("running_mean", "running_var")]
        # ONNX's momentum means what Keras's does (the weight of the running statistic).
        return graph.op(
            "BatchNormalization",
            [inputs[0], *tensors],
            name,
            epsilon=self.epsilon,
            momentum=self.momentum,
        )


@register
class LayerNorm(LayerArgs):
    kind: ClassVar[str] = "layer_norm"
    takes_tokens: ClassVar[bool] = True
    elementwise: ClassVar[bool] = True  # statistics over the last axis
    framework_names: ClassVar[tuple[str, ...]] = ("LayerNormalization", "LayerNorm")
    doc: ClassVar[str] = (
        "Layer normalisation over the last axis (the channels, at every position), with a "
        "learnt scale and shift per channel; Keras's epsilon, 1e-3, by default (ConvNeXt "
        "uses 1e-6)."
    )
    epsilon: float = Field(default=1e-3, gt=0)

    def params(self, inputs: list[Shape], output: Shape) -> Params:
        return Params(trainable=2 * output[-1])

    def keras(self) -> list[KerasLayer]:
        options = {"epsilon": self.epsilon} if self.epsilon != 1e-3 else {}
        return [KerasLayer("", Call("layers.LayerNormalization", **options))]

    keras_classes: ClassVar[tuple[str, ...]] = ("LayerNormalization",)

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> KerasReading:
        keras_config.last_axis(config, "cnnspec's layer_norm normalizes the last axis")
        return {"epsilon": float(config.get("epsilon", 1e-3))}

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        call = Call("nn.LayerNorm", inputs[0][-1], eps=self.epsilon)
        if len(inputs[0]) == 3:
            # PyTorch normalises the trailing axes: bring the channels last and back.
            return TorchLayer(call, "{module}({x}.movedim(1, -1)).movedim(-1, 1)")
        return TorchLayer(call)

    def weight_shapes(self, inputs: list[Shape]) -> dict[str, tuple[int, ...]]:
        return {"weight": (inputs[0][-1],), "bias": (inputs[0][-1],)}

    def keras_weights(self) -> tuple[KerasWeight, ...]:
        return (KerasWeight("gamma", "weight", "features"), KerasWeight("beta", "bias", "features"))

    def initial_value(self, suffix: str) -> float | None:
        return 1.0 if suffix == "weight" else 0.0

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        # Written out (the LayerNormalization op needs opset 17): the channel mean is a
        # product with a (C, 1) column of 1 / C on the channels-last tensor.
        channels = shapes[0][-1]
        spatial_ = len(shapes[0]) == 3
        x = inputs[0]
        if spatial_:
            x = graph.op("Transpose", [x], f"{name}_nhwc", perm=[0, 2, 3, 1])
        column = graph.constant(f"{name}_column", [1.0 / channels] * channels, (channels, 1))
        mean = graph.op("MatMul", [x, column], f"{name}_mean")
        centred = graph.op("Sub", [x, mean], f"{name}_centred")
        square = graph.op("Mul", [centred, centred], f"{name}_square")
        variance = graph.op("MatMul", [square, column], f"{name}_variance")
        epsilon = graph.constant(f"{name}_epsilon", [self.epsilon])
        shifted = graph.op("Add", [variance, epsilon], f"{name}_shifted")
        root = graph.op("Sqrt", [shifted], f"{name}_root")
        normal = graph.op("Div", [centred, root], f"{name}_normal")
        scaled = graph.op("Mul", [normal, graph.weight(f"{name}.weight")], f"{name}_scaled")
        out_name = f"{name}_shift" if spatial_ else name
        y = graph.op("Add", [scaled, graph.weight(f"{name}.bias")], out_name)
        if spatial_:
            y = graph.op("Transpose", [y], name, perm=[0, 3, 1, 2])
        return y

    # The names of the nodes `onnx` writes, by which the reader finds a layer_norm again.
    onnx_steps: ClassVar[OnnxSteps | None] = OnnxSteps(
        every=(
            "nhwc",
            "mean",
            "centred",
            "square",
            "variance",
            "shifted",
            "root",
            "normal",
            "scaled",
            "shift",
        ),
        signatures=(("normal", "shifted"),),
        inputs=("nhwc", "mean"),
    )

    @classmethod
    def from_onnx_steps(cls, steps: Mapping[str, OnnxNode]) -> dict[str, Any] | None:
        epsilon = steps["shifted"].constants[1]  # variance + epsilon
        return {"epsilon": float32(epsilon.reshape(-1)[0])} if epsilon is not None else None

    # torch.onnx.export writes nn.LayerNorm as ONNX's LayerNormalization op (opset 17 on). The
    # ONNX reader reads that op itself (onnx_file.READER_OPS), since its Scale and B are the
    # layer's tensors and its input must hold the channels last (a vector, or a map permuted
    # channels-last), and asks this for the arguments: no `onnx_patterns`, so that no chain
    # reads the op without its tensors.
    @classmethod
    def from_onnx(cls, chain: Sequence[OnnxNode]) -> dict[str, Any] | None:
        """The arguments of one LayerNormalization node: its epsilon, where it normalizes
        one axis, the last (nn.LayerNorm(C)); several (nn.LayerNorm((C, H, W))) are a gap."""
        node = chain[-1]
        if node.op_type != "LayerNormalization":
            return None
        axis = int(node.attributes.get("axis", -1))
        rank = len(node.input_shape) if node.input_shape else None
        last = axis == -1 or (rank is not None and axis % rank == rank - 1)
        if not last:
            count = f"{rank - axis % rank} axes" if rank else "the trailing axes"
            raise ImportGap(
                f"LayerNormalization over {count} (axis={axis})",
                "cnnspec's layer_norm normalizes one axis, the last (the channels): "
                "nn.LayerNorm(C) of a vector or of a map permuted channels-last",
            )
        return {"epsilon": float32(node.attributes.get("epsilon", 1e-5))}


def _numbers(value: Any) -> Any:
    """One number, or a tuple of them (one per channel)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (float(value),)
    if isinstance(value, tuple) and value:
        return value
    raise Problem("must be a number or a list of numbers, one per channel")


PerChannel = Annotated[tuple[float, ...], Before(_numbers)]
"""A number for every channel, or one for all: normalised to a tuple (of one, for all)."""


def check_per_channel(kind: str, field: str, values: tuple[float, ...], shape: Shape) -> None:
    if len(values) not in (1, shape[-1]):
        raise ShapeError(
            codes.SETTINGS_CONFLICT,
            f"{kind} has {len(values)} values of {field}, but its input "
            f"{format_shape(shape)} has {shape[-1]} channels",
            "give one value for every channel, or a single value for all",
            field=field,
        )


def per_channel_literal(values: tuple[float, ...]) -> object:
    return values[0] if len(values) == 1 else list(values)


@register
class Normalization(LayerArgs):
    kind: ClassVar[str] = "normalization"
    elementwise: ClassVar[bool] = True
    framework_names: ClassVar[tuple[str, ...]] = ("Normalization",)
    doc: ClassVar[str] = (
        "(x - mean) / sqrt(variance) per channel, as Keras's Normalization layer. With `mean` "
        "and `variance` given they are constants; without, the layer holds them (mean 0, "
        "variance 1 until set, as Keras's adapt() sets them) as non-trainable weights, with "
        "Keras's sample count (EfficientNet's first layers)."
    )
    mean: PerChannel | None = None
    variance: PerChannel | None = None

    @field_validator("variance")
    @classmethod
    def _not_negative(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is not None and min(value) < 0:
            raise Problem("must not be negative", hint="a variance is a squared deviation")
        return value

    @model_validator(mode="after")
    def _both_or_neither(self) -> "Normalization":
        if (self.mean is None) != (self.variance is None):
            raise ValueError("mean and variance go together: give both, or neither")
        return self

    @property
    def _held(self) -> bool:
        return self.mean is None

    def output_shape(self, inputs: list[Shape]) -> Shape:
        for field in ("mean", "variance"):
            values = getattr(self, field)
            if values is not None:
                check_per_channel(self.kind, field, values, inputs[0])
        return inputs[0]

    def params(self, inputs: list[Shape], output: Shape) -> Params:
        return Params(non_trainable=2 * output[-1] + 1) if self._held else Params()

    def keras(self) -> list[KerasLayer]:
        if self.mean is None or self.variance is None:
            return [KerasLayer("", Call("layers.Normalization"))]
        mean, variance = per_channel_literal(self.mean), per_channel_literal(self.variance)
        return [KerasLayer("", Call("layers.Normalization", mean=mean, variance=variance))]

    keras_classes: ClassVar[tuple[str, ...]] = ("Normalization",)

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> KerasReading:
        keras_config.last_axis(config, _CHANNELS)
        args = {}
        for key in ("mean", "variance"):
            value = config.get(key)
            if value is not None:
                args[key] = tuple(float(v) for v in keras_config.flat(value))
        return args

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        options = {}
        if self.mean is not None and self.variance is not None:
            options = {"mean": self.mean, "variance": self.variance}
        call = Call("Normalization", inputs[0][-1], **options)
        return TorchLayer(call, helpers=("Normalization",))

    def weight_shapes(self, inputs: list[Shape]) -> dict[str, tuple[int, ...]]:
        if not self._held:
            return {}
        channels = (inputs[0][-1],)
        return {"mean": channels, "variance": channels, "count": (1,)}

    def keras_weights(self) -> tuple[KerasWeight, ...]:
        if not self._held:
            return ()
        return (
            KerasWeight("mean", "mean", "features"),
            KerasWeight("variance", "variance", "features"),
            KerasWeight("count", "count", "scalar"),
        )

    def initial_value(self, suffix: str) -> float | None:
        return 1.0 if suffix == "variance" else 0.0

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        shape = shapes[0]
        if self.mean is None or self.variance is None:
            graph.weight(f"{name}.count")  # carried along, as in the other frameworks
            mean = channel_shape(graph, f"{name}_mean", graph.weight(f"{name}.mean"), shape)
            variance = graph.weight(f"{name}.variance")
            variance = channel_shape(graph, f"{name}_variance", variance, shape)
        else:
            mean = channel_constant(graph, f"{name}_mean", self.mean, shape)
            variance = channel_constant(graph, f"{name}_variance", self.variance, shape)
        root = graph.op("Sqrt", [variance], f"{name}_root")
        # Keras divides by max(sqrt(variance), epsilon), its backend's 1e-7.
        floor = graph.op("Max", [root, graph.constant(f"{name}_floor", [1e-7])], f"{name}_std")
        centred = graph.op("Sub", [inputs[0], mean], f"{name}_centred")
        return graph.op("Div", [centred, floor], name)

    # The names of the nodes `onnx` writes, by which the reader finds a normalization again.
    onnx_steps: ClassVar[OnnxSteps | None] = OnnxSteps(
        every=("root", "std", "centred", "mean_unsqueeze", "variance_unsqueeze"),
        signatures=(("std",),),
        inputs=("centred",),
    )

    @classmethod
    def from_onnx_steps(cls, steps: Mapping[str, OnnxNode]) -> dict[str, Any] | None:
        centred, root = steps.get("centred"), steps.get("root")
        if centred is None or root is None:
            return None
        mean, variance = centred.constants[1], root.constants[0]
        # Held statistics are the layer's tensors (`.mean`, `.variance`, `.count`), made
        # (C, 1, 1) on a map by an Unsqueeze; fixed ones are constants (`<layer>_mean`).
        held = "mean_unsqueeze" in steps or centred.inputs[1].endswith(".mean")
        if held or mean is None or variance is None:
            return {}
        return {
            "mean": tuple(float32(v) for v in mean.reshape(-1)),
            "variance": tuple(float32(v) for v in variance.reshape(-1)),
        }
