"""Joins of branches: add, concat and multiply, on one merge base as Keras's merge layers."""

from collections.abc import Mapping
from typing import Any, ClassVar

from cnnspec import codes
from cnnspec.codegen import Call
from cnnspec.layers.base import (
    format_shape,
)
from cnnspec.registry import (
    ImportGap,
    KerasLayer,
    KerasReading,
    LayerArgs,
    OnnxBuilder,
    Shape,
    ShapeError,
    TorchLayer,
    register,
)


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
        return ShapeError(codes.CANNOT_JOIN, message, hint, input=index)

    def onnx_map(self, graph: OnnxBuilder, name: str, x: str, shape: Shape, rank: int) -> str:
        """`x`, unsqueezed to (C, 1, 1) when it is a vector joined with maps."""
        if len(shape) == rank:
            return x
        axes = graph.constant(f"{name}_axes", [2, 3], (2,), dtype="int64")
        return graph.op("Unsqueeze", [x, axes], f"{name}_unsqueeze")

    @staticmethod
    def torch_map(index: int, shape: Shape, rank: int) -> str:
        return f"{{inputs[{index}]}}" + ("[:, :, None, None]" if len(shape) < rank else "")

    # Keras's merge layer of the join's name. ONNX's Add, Sum, Mul and Concat are the ONNX
    # reader's own: each is a join, or a scale or offset by a constant, or swish's gate.
    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> KerasReading:
        return {}


@register
class Add(_Merge):
    kind: ClassVar[str] = "add"
    takes_tokens: ClassVar[bool] = True
    elementwise: ClassVar[bool] = True
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

    keras_classes: ClassVar[tuple[str, ...]] = ("Add",)

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

    keras_classes: ClassVar[tuple[str, ...]] = ("Concatenate",)

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> KerasReading:
        if config.get("axis", -1) not in (-1, 3):
            raise ImportGap(
                f"axis={config.get('axis')}", "cnnspec concatenates channels (the last axis)"
            )
        return {}

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        joined = ", ".join(f"{{inputs[{i}]}}" for i in range(len(inputs)))
        return TorchLayer(None, f"torch.cat([{joined}], dim=1)")

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        return graph.op("Concat", inputs, name, axis=1)  # the channels, in NCHW


@register
class Multiply(_Merge):
    kind: ClassVar[str] = "multiply"
    elementwise: ClassVar[bool] = True
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

    keras_classes: ClassVar[tuple[str, ...]] = ("Multiply",)

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
            # `<name>_mul<i>`: never another layer's name (a nested multiply is `<name>_1`).
            out = graph.op("Mul", [out, value], name if last else f"{name}_mul{index}")
        return out
