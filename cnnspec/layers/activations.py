"""Activations: usable as layers, `relu()`, and as arguments, `activation=relu`."""

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from cnnspec.codegen import Call, Code
from cnnspec.layers import keras_config
from cnnspec.registry import (
    HOLE,
    IDENTITY,
    ImportGap,
    KerasLayer,
    KerasReading,
    LayerArgs,
    NonNegFloat,
    OnnxBuilder,
    OnnxNode,
    OnnxSteps,
    Shape,
    TorchLayer,
    float32,
    register,
)


class _Activation(LayerArgs):
    is_activation: ClassVar[bool] = True
    takes_tokens: ClassVar[bool] = True
    elementwise: ClassVar[bool] = True  # softmax: statistics over the last axis
    # Keras's name for this activation as an `activation=` string, when it means the same.
    keras_string: ClassVar[str | None] = None

    def keras_name(self) -> str | None:
        return self.keras_string

    def keras(self) -> list[KerasLayer]:
        # layers.Activation(None) is the identity: an activation without a Keras name must
        # say how Keras computes it.
        if self.keras_string is None:
            raise NotImplementedError(f"activation {self.kind!r} has no Keras emitter")
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

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> KerasReading:
        # Keras's Activation layer (declared by sigmoid: a Keras class has one reader) is the
        # activation it names, whichever kind that is; linear is none.
        named = keras_config.activation(config.get("activation"))
        if named is None:
            return IDENTITY
        if isinstance(named, LayerArgs):
            return named.kind, named.explicit()
        return named, {}

    @classmethod
    def from_onnx(cls, chain: Sequence[OnnxNode]) -> dict[str, Any] | None:
        return {}  # the op alone, without arguments


@register
class ReLU(_Activation):
    kind: ClassVar[str] = "relu"
    framework_names: ClassVar[tuple[str, ...]] = ("ReLU",)
    onnx_op: ClassVar[str] = "Relu"
    torch_name: ClassVar[str] = "torch.relu"
    doc: ClassVar[str] = "max(x, 0)."
    keras_string: ClassVar[str | None] = "relu"
    keras_classes: ClassVar[tuple[str, ...]] = ("ReLU",)
    onnx_patterns: ClassVar[tuple[tuple[str, ...], ...]] = (("Relu",),)

    def keras(self) -> list[KerasLayer]:
        return [KerasLayer("", Call("layers.ReLU"))]

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> KerasReading:
        # Keras's ReLU is also relu6 (max_value=6, as relu6's emitter writes it) and leaky_relu.
        top = config.get("max_value")
        slope = float(config.get("negative_slope", 0.0) or 0.0)
        if float(config.get("threshold", 0.0) or 0.0) != 0.0:
            raise ImportGap("ReLU threshold", "cnnspec's relu has no threshold")
        if top is not None and float(top) == 6.0 and slope == 0.0:
            return "relu6", {}
        if top is not None:
            raise ImportGap(f"ReLU max_value={top}", "cnnspec caps at 6 only")
        if slope:
            return "leaky_relu", {"alpha": slope}
        return {}


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

    # Keras: layers.ReLU(max_value=6), which relu's entry reads.
    onnx_patterns: ClassVar[tuple[tuple[str, ...], ...]] = (("Clip",),)

    @classmethod
    def from_onnx(cls, chain: Sequence[OnnxNode]) -> dict[str, Any] | None:
        (clip,) = chain
        # The bounds: inputs from opset 11, attributes before.
        bounds = [*clip.constants[1:3], None, None]
        low = float32(bounds[0].reshape(-1)[0]) if bounds[0] is not None else None
        high = float32(bounds[1].reshape(-1)[0]) if bounds[1] is not None else None
        low = clip.attributes.get("min") if low is None else low
        high = clip.attributes.get("max") if high is None else high
        if low == 0.0 and high == 6.0:
            return {}
        raise ImportGap(f"Clip({low}, {high})", "cnnspec clips only as relu6")


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

    keras_classes: ClassVar[tuple[str, ...]] = ("LeakyReLU",)
    onnx_patterns: ClassVar[tuple[tuple[str, ...], ...]] = (("LeakyRelu",),)

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> KerasReading:
        # Keras 3 says negative_slope, Keras 2 alpha.
        return {"alpha": float(config.get("negative_slope", config.get("alpha", 0.3)))}

    @classmethod
    def from_onnx(cls, chain: Sequence[OnnxNode]) -> dict[str, Any] | None:
        return {"alpha": chain[0].attributes.get("alpha", 0.01)}


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

    keras_classes: ClassVar[tuple[str, ...]] = ("ELU",)
    onnx_patterns: ClassVar[tuple[tuple[str, ...], ...]] = (("Elu",),)

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> KerasReading:
        return {"alpha": float(config.get("alpha", 1.0))}

    @classmethod
    def from_onnx(cls, chain: Sequence[OnnxNode]) -> dict[str, Any] | None:
        return {"alpha": chain[0].attributes.get("alpha", 1.0)}


@register
class Sigmoid(_Activation):
    kind: ClassVar[str] = "sigmoid"
    framework_names: ClassVar[tuple[str, ...]] = ("Sigmoid",)
    onnx_op: ClassVar[str] = "Sigmoid"
    torch_name: ClassVar[str] = "torch.sigmoid"
    doc: ClassVar[str] = "1 / (1 + exp(-x)); the output of a binary classifier."
    keras_string: ClassVar[str | None] = "sigmoid"
    # The Activation layer the base's `keras` writes, for every activation (see `from_keras`).
    keras_classes: ClassVar[tuple[str, ...]] = ("Activation",)
    onnx_patterns: ClassVar[tuple[tuple[str, ...], ...]] = (("Sigmoid",),)


@register
class Tanh(_Activation):
    kind: ClassVar[str] = "tanh"
    framework_names: ClassVar[tuple[str, ...]] = ("Tanh",)
    onnx_op: ClassVar[str] = "Tanh"
    torch_name: ClassVar[str] = "torch.tanh"
    doc: ClassVar[str] = "Hyperbolic tangent."
    keras_string: ClassVar[str | None] = "tanh"
    onnx_patterns: ClassVar[tuple[tuple[str, ...], ...]] = (("Tanh",),)


@register
class Softmax(_Activation):
    kind: ClassVar[str] = "softmax"
    takes_tokens: ClassVar[bool] = False  # over dim 1: the channels of NCHW
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

    keras_classes: ClassVar[tuple[str, ...]] = ("Softmax",)
    onnx_patterns: ClassVar[tuple[tuple[str, ...], ...]] = (("Softmax",),)

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> KerasReading:
        if config.get("axis", -1) not in (-1, [-1]):
            raise ImportGap(
                f"softmax axis={config.get('axis')}", "cnnspec's softmax is over the last axis"
            )
        return {}


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

    # The names of the nodes `onnx_apply` writes, by which the reader finds a gelu again.
    onnx_steps: ClassVar[OnnxSteps | None] = OnnxSteps(
        every=("sq", "cube", "sc", "inner", "arg", "t", "erf", "1p", "g"),
        signatures=(("g", "1p"),),
        inputs=("sq", "arg"),
    )

    @classmethod
    def from_onnx_steps(cls, steps: Mapping[str, OnnxNode]) -> dict[str, Any] | None:
        return {"approximate": "t" in steps}

    # ONNX's own Gelu op (opset 20), which torch's exporter writes for nn.GELU from opset 20.
    onnx_patterns: ClassVar[tuple[tuple[str, ...], ...]] = (("Gelu",),)

    @classmethod
    def from_onnx(cls, chain: Sequence[OnnxNode]) -> dict[str, Any] | None:
        approximate = chain[0].attributes.get("approximate", "none")
        if isinstance(approximate, bytes):
            approximate = approximate.decode()
        return {"approximate": approximate == "tanh"}


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


@register
class HardSigmoid(_Activation):
    kind: ClassVar[str] = "hard_sigmoid"
    framework_names: ClassVar[tuple[str, ...]] = ("HardSigmoid", "Hardsigmoid")
    torch_name: ClassVar[str] = "F.hardsigmoid"
    doc: ClassVar[str] = (
        "relu6(x + 3) / 6: MobileNetV3's gate (Keras 3's hard_sigmoid is the same function)."
    )
    keras_string: ClassVar[str | None] = "hard_sigmoid"

    def onnx_apply(self, graph: OnnxBuilder, name: str, x: str) -> str:
        return graph.op("HardSigmoid", [x], name, alpha=1.0 / 6.0, beta=0.5)

    onnx_patterns: ClassVar[tuple[tuple[str, ...], ...]] = (("HardSigmoid",),)

    @classmethod
    def from_onnx(cls, chain: Sequence[OnnxNode]) -> dict[str, Any] | None:
        alpha = chain[0].attributes.get("alpha", 0.2)
        beta = chain[0].attributes.get("beta", 0.5)
        if abs(alpha - 1 / 6) > 1e-6 or abs(beta - 0.5) > 1e-6:
            raise ImportGap(
                f"HardSigmoid alpha={alpha:g} beta={beta:g}",
                "cnnspec's hard_sigmoid is relu6(x + 3) / 6",
            )
        return {}


@register
class HardSwish(_Activation):
    kind: ClassVar[str] = "hard_swish"
    framework_names: ClassVar[tuple[str, ...]] = ("HardSwish", "Hardswish", "HardSiLU")
    torch_name: ClassVar[str] = "F.hardswish"
    doc: ClassVar[str] = "x * relu6(x + 3) / 6: MobileNetV3's activation (hard SiLU)."
    keras_string: ClassVar[str | None] = "hard_swish"

    def onnx_apply(self, graph: OnnxBuilder, name: str, x: str) -> str:
        # Written out (the HardSwish op needs opset 14).
        gate = graph.op("HardSigmoid", [x], f"{name}_gate", alpha=1.0 / 6.0, beta=0.5)
        return graph.op("Mul", [x, gate], name)

    # PyTorch's Hardswish, from opset 14 (the HardSigmoid and Mul above are read as one by the
    # ONNX reader's Mul, as swish's Sigmoid and Mul are).
    onnx_patterns: ClassVar[tuple[tuple[str, ...], ...]] = (("HardSwish",),)
