"""`channel_slice`: a range of a map's channels (or of a vector's features), the part of a
channel split (ShuffleNetV2's `x.chunk(2, dim=1)`, GhostNet's and CSPNet's partial paths,
`torch.split`) that a spec writes as one branch of a join of slices of one input:

    concat { branch { channel_slice(0, 58) } branch { channel_slice(58, 116) conv2d(58, 1) } }

The entry is the whole of its kind: shape rule, the Keras (a small runtime layer), PyTorch and
ONNX (a Slice on axis 1) emitters, and the readers `cnnspec import` uses. A Split of the
channels into several outputs, as torch.onnx writes `chunk` and `split`, is read by
cnnspec.importing.onnx_slices as one channel_slice per output used.
"""

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar

from cnnspec import codes
from cnnspec.codegen import Call
from cnnspec.layers.base import format_shape
from cnnspec.registry import (
    KerasLayer,
    KerasReading,
    LayerArgs,
    OnnxBuilder,
    OnnxNode,
    Shape,
    ShapeError,
    TorchLayer,
    register,
)
from cnnspec.schema import Field

NonNegInt = Annotated[int, Field(ge=0)]


@register
class ChannelSlice(LayerArgs):
    kind: ClassVar[str] = "channel_slice"
    framework_names: ClassVar[tuple[str, ...]] = ("ChannelSlice", "chunk", "split")
    doc: ClassVar[str] = (
        "Keeps channels [start, stop) of a map (H, W, C), or features [start, stop) of a "
        "vector (C,): one part of a channel split (ShuffleNetV2's chunk, GhostNet's and "
        "CSPNet's partial paths), written as a branch of a join of slices of one input."
    )
    positional: ClassVar[tuple[str, ...]] = ("start", "stop")
    start: NonNegInt
    stop: NonNegInt

    keras_classes: ClassVar[tuple[str, ...]] = ("ChannelSlice",)
    # A Slice of the channels; a Slice of another axis (a crop's) the reader reads itself.
    onnx_patterns: ClassVar[tuple[tuple[str, ...], ...]] = (("Slice",),)

    def output_shape(self, inputs: list[Shape]) -> Shape:
        shape = inputs[0]
        if len(shape) not in (1, 3):
            raise ShapeError(
                codes.NEEDS_SPATIAL,
                f"channel_slice needs a map (H, W, C) or a vector (C,), but gets "
                f"{format_shape(shape)}",
                "it slices the channels of a map or the features of a vector",
            )
        channels = shape[-1]
        if self.stop <= self.start:
            raise ShapeError(
                codes.SETTINGS_CONFLICT,
                f"channel_slice({self.start}, {self.stop}) keeps no channels",
                f"stop must be above start: it keeps channels start to stop - 1 of the {channels}",
                field="stop",
            )
        if self.stop > channels:
            raise ShapeError(
                codes.SETTINGS_CONFLICT,
                f"channel_slice({self.start}, {self.stop}) goes beyond the input's "
                f"{channels} channels",
                f"stop can be at most {channels} (the input is {format_shape(shape)})",
                field="stop",
            )
        return (*shape[:-1], self.stop - self.start)

    def keras(self) -> list[KerasLayer]:
        return [KerasLayer("", Call("ChannelSlice", self.start, self.stop))]

    def keras_helpers(self) -> tuple[str, ...]:
        return ("ChannelSlice",)

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        # Channels are axis 1 in NCHW, and so are a vector's features.
        return TorchLayer(None, f"{{x}}[:, {self.start!r}:{self.stop!r}]")

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        starts = graph.constant(f"{name}_starts", [self.start], (1,), dtype="int64")
        ends = graph.constant(f"{name}_ends", [self.stop], (1,), dtype="int64")
        axes = graph.constant(f"{name}_axes", [1], (1,), dtype="int64")
        return graph.op("Slice", [inputs[0], starts, ends, axes], name)

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> KerasReading:
        return {"start": int(config["start"]), "stop": int(config["stop"])}

    @classmethod
    def from_onnx(cls, chain: Sequence[OnnxNode]) -> dict[str, Any] | None:
        """A Slice of axis 1 (the channels of an NCHW map, the features of a vector) with
        constant bounds and a unit step; None for any other Slice (a crop's)."""
        (node,) = chain
        return channel_range(node)


def channel_range(node: OnnxNode) -> dict[str, Any] | None:
    """The channel_slice arguments of an ONNX Slice, where it slices axis 1 alone, by
    constants, with unit steps, of an input whose shape is known (rank 2 or 4); else None."""
    shape = node.input_shape
    if node.op_type != "Slice" or shape is None or len(shape) not in (2, 4):
        return None
    values = [*node.constants[1:], None, None, None, None][:4]
    if values[0] is None or values[1] is None:
        return None
    starts, ends = (v.reshape(-1).tolist() for v in values[:2])
    axes = values[2].reshape(-1).tolist() if values[2] is not None else list(range(len(starts)))
    steps = values[3].reshape(-1).tolist() if values[3] is not None else [1] * len(starts)
    if len(starts) != 1 or len(ends) != 1 or len(axes) != 1 or steps != [1]:
        return None
    if int(axes[0]) % len(shape) != 1:
        return None
    channels = shape[1]
    if channels is None:
        return None
    start, stop = int(starts[0]), int(ends[0])
    start = max(0, start + channels if start < 0 else min(start, channels))
    stop = max(0, stop + channels if stop < 0 else min(stop, channels))
    if stop <= start:
        return None
    return {"start": start, "stop": stop}
