"""What several layer modules share: shape arithmetic (Keras's rules for windows and
`same` padding) and the emitters' helpers."""

from collections.abc import Mapping

from cnnspec import codes
from cnnspec.codegen import Call
from cnnspec.registry import (
    ACTIVATION_SUFFIX,
    KerasLayer,
    LayerArgs,
    Shape,
    ShapeError,
)
from cnnspec.runtime import rules


def spatial(shape: Shape, kind: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ShapeError(
            codes.NEEDS_SPATIAL,
            f"{kind} needs an (H, W, C) input, but gets {format_shape(shape)}",
            "spatial layers must come before flatten() or global pooling",
        )
    h, w, c = shape
    return h, w, c


def format_shape(shape: Shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def scalar_or_pair(value: tuple[int, int]) -> int | tuple[int, int]:
    """A square kernel or stride as one number, the way people write it."""
    return value[0] if value[0] == value[1] else value


def l2_regularizer(factor: float) -> Call | None:
    return Call("regularizers.L2", factor) if factor else None


def keras_with_activation(
    func: str, args: tuple[object, ...], kwargs: Mapping[str, object], activation: LayerArgs | None
) -> list[KerasLayer]:
    """A Keras layer with its `activation=` (at the `activation` key's place in `kwargs`): the
    activation's Keras name when Keras's named activation means the same, otherwise a separate
    activation layer after it, named `<node>_act`."""
    keras_name = activation.keras_name() if activation is not None else None
    options = {k: v for k, v in {**kwargs, "activation": keras_name}.items() if v is not None}
    layers_ = [KerasLayer("", Call(func, *args, **options))]
    if activation is not None and keras_name is None:
        layers_ += [KerasLayer(ACTIVATION_SUFFIX, a.call) for a in activation.keras()]
    return layers_


def same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's `same` padding along one axis: (before, after), the odd pixel after. The
    rule is cnnspec.runtime.rules', which the generated scripts copy: this gives it types."""
    pads: tuple[int, int] = rules.same_pads(size, kernel, stride, dilation)
    return pads


def onnx_pads(
    shape: Shape,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    padding: str | int,
) -> list[int]:
    """ONNX `pads` ([top, left, bottom, right]) for Keras's padding on an (H, W, C) input."""
    if padding == "same":
        top, bottom = same_pads(shape[0], kernel[0], stride[0], dilation[0])
        left, right = same_pads(shape[1], kernel[1], stride[1], dilation[1])
        return [top, left, bottom, right]
    amount = padding if isinstance(padding, int) else 0
    return [amount] * 4


def window_output_size(
    size: int, kernel: int, stride: int, dilation: int, padding: str | int
) -> int:
    """How many positions a window of `kernel` (dilated) takes along an axis of `size`."""
    if padding == "same":
        return -(-size // stride)
    extent = dilation * (kernel - 1) + 1
    padded = size + (2 * padding if isinstance(padding, int) else 0)
    return (padded - extent) // stride + 1 if padded >= extent else 0


def slide(
    kind: str,
    shape: Shape,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    padding: str | int,
    channels: int,
) -> Shape:
    """The output shape of a sliding window (convolution or pooling), with a located error
    when the map would shrink below 1x1."""
    h, w, _ = spatial(shape, kind)
    out_h = window_output_size(h, kernel[0], stride[0], dilation[0], padding)
    out_w = window_output_size(w, kernel[1], stride[1], dilation[1], padding)
    if out_h < 1 or out_w < 1:
        extent = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True))
        raise ShapeError(
            codes.SHRINKS_BELOW_ONE,
            f"{kind} shrinks the {h}x{w} map below 1x1: its window spans "
            f"{extent[0]}x{extent[1]} with padding={padding}",
            "use padding=same, a smaller kernel or pool, or remove a downsampling layer before it",
        )
    return (out_h, out_w, channels)
