"""Layers that move values between positions or channels without weights: `upsample` (U-Net
and FPN decoders, NASNet's reduction cells) and ShuffleNet's `channel_shuffle`.

Each entry is the whole of its kind: shape rule, the Keras, PyTorch and ONNX emitters, and the
readers `cnnspec import` uses for Keras files and ONNX models (the inverse of the emitters).
"""

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

from cnnspec import codes
from cnnspec.codegen import Call, literal
from cnnspec.layers.base import scalar_or_pair, spatial
from cnnspec.layers.keras_config import channels_last
from cnnspec.registry import (
    ImportGap,
    KerasLayer,
    LayerArgs,
    OnnxBuilder,
    OnnxNode,
    Pair,
    PositiveInt,
    Shape,
    ShapeError,
    TorchLayer,
    Window,
    register,
)

# Keras's `interpolation` names and ONNX Resize's modes for the same sampling: nearest takes
# the source pixel floor(i / size), bilinear samples at half-pixel centres, clamped at the
# edges (TensorFlow's resize, torch's align_corners=False, ONNX's half_pixel).
_ONNX_MODE = {"nearest": "nearest", "bilinear": "linear"}


@register
class Upsample(LayerArgs):
    kind: ClassVar[str] = "upsample"
    framework_names: ClassVar[tuple[str, ...]] = ("UpSampling2D", "Upsample")
    doc: ClassVar[str] = (
        "Enlarges H and W by `size` (an integer or (h, w)): `nearest` repeats each pixel, "
        "`bilinear` interpolates between pixel centres, as Keras's UpSampling2D and "
        "torch's interpolate(align_corners=False)."
    )
    positional: ClassVar[tuple[str, ...]] = ("size",)
    size: Pair = (2, 2)
    interpolation: Literal["nearest", "bilinear"] = "nearest"

    keras_classes: ClassVar[tuple[str, ...]] = ("UpSampling2D",)
    onnx_patterns: ClassVar[tuple[tuple[str, ...], ...]] = (("Resize",),)

    def output_shape(self, inputs: list[Shape]) -> Shape:
        h, w, c = spatial(inputs[0], self.kind)
        return (h * self.size[0], w * self.size[1], c)

    def window(self) -> Window:
        return Window(zoom=self.size)

    def keras(self) -> list[KerasLayer]:
        options = {} if self.interpolation == "nearest" else {"interpolation": self.interpolation}
        return [KerasLayer("", Call("layers.UpSampling2D", scalar_or_pair(self.size), **options))]

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        size = literal(scalar_or_pair(self.size))
        if self.interpolation == "nearest":
            return TorchLayer(None, f"F.interpolate({{x}}, scale_factor={size})")
        return TorchLayer(
            None,
            f'F.interpolate({{x}}, scale_factor={size}, mode="bilinear", align_corners=False)',
        )

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        scales = graph.constant(f"{name}_scales", [1.0, 1.0, *map(float, self.size)], (4,))
        if self.interpolation == "nearest":
            options = {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
        else:
            options = {"coordinate_transformation_mode": "half_pixel"}
        mode = _ONNX_MODE[self.interpolation]
        return graph.op("Resize", [inputs[0], "", scales], name, mode=mode, **options)

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> dict[str, Any]:
        channels_last(config)
        interpolation = config.get("interpolation", "nearest")
        if interpolation not in _ONNX_MODE:
            raise ImportGap(
                f"interpolation={interpolation}", "cnnspec upsamples nearest or bilinear"
            )
        size = config.get("size", 2)
        size = (size, size) if isinstance(size, int) else tuple(int(v) for v in size)
        return {"size": size, "interpolation": interpolation}

    @classmethod
    def from_onnx(cls, chain: Sequence[OnnxNode]) -> dict[str, Any] | None:
        (node,) = chain
        mode = node.attributes.get("mode", "nearest")
        transform = node.attributes.get("coordinate_transformation_mode", "half_pixel")
        if mode == "nearest":
            # Integer factors pick floor(i / size) under either rule torch and cnnspec write.
            nearest = node.attributes.get("nearest_mode", "round_prefer_floor")
            known = (transform, nearest) in (
                ("asymmetric", "floor"),
                ("half_pixel", "round_prefer_floor"),
            )
        else:
            known = mode == "linear" and transform in ("half_pixel", "pytorch_half_pixel")
        if not known:
            raise ImportGap(
                f"Resize mode={mode} coordinate_transformation_mode={transform}",
                "cnnspec upsamples nearest, or bilinear at half-pixel centres",
            )
        factors = _resize_factors(node)
        if factors is None:
            raise ImportGap("a Resize to a size computed at run time", "cnnspec fixes factors")
        if factors[:2] != (1.0, 1.0) or any(f < 1 or f != int(f) for f in factors[2:]):
            raise ImportGap(
                f"Resize by {list(factors)}", "cnnspec enlarges H and W by whole factors"
            )
        return {
            "size": (int(factors[2]), int(factors[3])),
            "interpolation": "nearest" if mode == "nearest" else "bilinear",
        }


def _resize_factors(node: OnnxNode) -> tuple[float, ...] | None:
    """A Resize's scales, from its `scales` input or from `sizes` and the input's shape."""
    values = [*node.constants, None, None, None, None]
    scales, sizes = values[2], values[3]
    if scales is not None and len(scales.reshape(-1)) == 4:
        return tuple(float(v) for v in scales.reshape(-1))
    shape = node.input_shape
    if sizes is None or shape is None or len(shape) != 4:
        return None
    known = [size for size in shape if size is not None]
    if len(known) != 4:
        return None
    return tuple(float(out) / size for out, size in zip(sizes.reshape(-1), known, strict=True))


@register
class ChannelShuffle(LayerArgs):
    kind: ClassVar[str] = "channel_shuffle"
    framework_names: ClassVar[tuple[str, ...]] = ("ChannelShuffle",)
    doc: ClassVar[str] = (
        "ShuffleNet's channel shuffle: the channels, seen as `groups` groups, are interleaved "
        "(channel j of group g moves to j * groups + g), so that the next grouped convolution "
        "mixes the groups."
    )
    positional: ClassVar[tuple[str, ...]] = ("groups",)
    groups: PositiveInt

    keras_classes: ClassVar[tuple[str, ...]] = ("ChannelShuffle",)
    onnx_patterns: ClassVar[tuple[tuple[str, ...], ...]] = (("Reshape", "Transpose", "Reshape"),)

    def output_shape(self, inputs: list[Shape]) -> Shape:
        c = spatial(inputs[0], self.kind)[2]
        if c % self.groups:
            raise ShapeError(
                codes.SETTINGS_CONFLICT,
                f"channel_shuffle with groups={self.groups} needs channels divisible by "
                f"{self.groups}, but has {c}",
                "each group holds an equal share of the channels",
                field="groups",
            )
        return inputs[0]

    def keras(self) -> list[KerasLayer]:
        return [KerasLayer("", Call("ChannelShuffle", self.groups))]

    def keras_helpers(self) -> tuple[str, ...]:
        return ("ChannelShuffle",)

    def torch(self, inputs: list[Shape]) -> TorchLayer:
        return TorchLayer(
            None, f"{{x}}.unflatten(1, ({self.groups}, -1)).transpose(1, 2).flatten(1, 2)"
        )

    def onnx(self, graph: OnnxBuilder, name: str, inputs: list[str], shapes: list[Shape]) -> str:
        # As torch.onnx.export writes ShuffleNet's shuffle: (N, g, C/g, H, W), swap the two
        # channel axes, and back.
        h, w, c = shapes[0]
        split = graph.constant(
            f"{name}_split_shape", [0, self.groups, c // self.groups, h, w], (5,), dtype="int64"
        )
        x = graph.op("Reshape", [inputs[0], split], f"{name}_split")
        x = graph.op("Transpose", [x], f"{name}_swap", perm=[0, 2, 1, 3, 4])
        joined = graph.constant(f"{name}_shape", [0, c, h, w], (4,), dtype="int64")
        return graph.op("Reshape", [x, joined], name)

    @classmethod
    def from_keras(cls, class_name: str, config: Mapping[str, Any]) -> dict[str, Any]:
        return {"groups": int(config["groups"])}

    @classmethod
    def from_onnx(cls, chain: Sequence[OnnxNode]) -> dict[str, Any] | None:
        split, swap, _ = chain
        if split.input_shape is None or len(split.input_shape) != 4:
            return None
        channels = split.input_shape[1]
        # The target shapes of the two reshapes.
        shapes = [node.constants[1] if len(node.constants) > 1 else None for node in chain]
        if shapes[0] is None or shapes[2] is None:
            return None
        split_shape = [int(v) for v in shapes[0].reshape(-1)]
        if len(split_shape) != 5 or len(shapes[2].reshape(-1)) != 4:
            return None
        if swap.attributes.get("perm") != [0, 2, 1, 3, 4]:
            return None
        groups, share = split_shape[1], split_shape[2]
        if share == -1 and channels is not None and groups > 0:
            share = channels // groups
        if channels is None or groups < 1 or groups * share != channels:
            return None
        return {"groups": groups}
