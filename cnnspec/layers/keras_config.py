"""What the entries' Keras readers (`from_keras`) share: a saved Keras layer's config, the JSON
of `layer.get_config()`, read into a kind's arguments. Framework-free (the importer reads the
file without Keras); each helper raises ImportGap for a setting cnnspec cannot express."""

from collections.abc import Mapping
from functools import cache
from typing import Any

from cnnspec.registry import REGISTRY, ImportGap, LayerArgs


def pair(value: Any) -> tuple[int, ...]:
    """A kernel, stride or dilation: one number or one per axis."""
    if isinstance(value, list | tuple):
        return tuple(int(v) for v in value)
    return (int(value), int(value))


def flat(value: Any) -> list[Any]:
    """The numbers of a nested list (a Normalization's mean, shaped (1, 1, 1, C))."""
    if isinstance(value, list | tuple):
        return [v for item in value for v in flat(item)]
    return [value]


def scalars(value: Any) -> Any:
    """One number, or a tuple of them (one per channel)."""
    values = [float(v) for v in flat(value)]
    return values[0] if len(values) == 1 else tuple(values)


def pads(value: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    """ZeroPadding2D's and Cropping2D's amounts as ((top, bottom), (left, right))."""
    if isinstance(value, int):
        return ((value, value), (value, value))
    first, second = value
    first = (first, first) if isinstance(first, int) else tuple(first)
    second = (second, second) if isinstance(second, int) else tuple(second)
    return ((int(first[0]), int(first[1])), (int(second[0]), int(second[1])))


def channels_last(config: Mapping[str, Any]) -> None:
    if config.get("data_format", "channels_last") not in ("channels_last", None):
        raise ImportGap("data_format=channels_first", "a Keras model in cnnspec is channels-last")


def last_axis(config: Mapping[str, Any], why: str) -> None:
    """A normalization over the channels (Keras's last axis), or a gap saying `why`."""
    axis = config.get("axis", -1)
    if isinstance(axis, list):
        axis = axis[0] if len(axis) == 1 else None
    if axis not in (-1, 3):
        raise ImportGap(f"axis={config.get('axis')}", why)


def l2(config: Mapping[str, Any], key: str) -> float:
    """The factor of the L2 regularizer at `key` (`kernel_regularizer`); 0 for none."""
    regularizer = config.get(key)
    if not regularizer:
        return 0.0
    inner = regularizer.get("config", {})
    if regularizer.get("class_name") in ("L2", "l2") or set(inner) == {"l2"}:
        return float(inner.get("l2", 0.0))
    raise ImportGap(
        f"{regularizer.get('class_name')} regularizer", "cnnspec has L2 kernel regularization only"
    )


@cache
def keras_activations() -> dict[str, str]:
    """Keras's `activation=` strings: each entry's own Keras name (with its default arguments),
    and the other names Keras gives two of them."""
    names = {}
    for kind, cls in REGISTRY.items():
        if cls.is_activation and not any(f.is_required() for f in cls.model_fields.values()):
            name = cls().keras_name()
            if name is not None:
                names[name] = kind
    return {**names, "silu": "swish", "hard_silu": "hard_swish"}


def activation(value: Any) -> str | LayerArgs | None:
    """A Keras `activation=` (a name, or a serialized function) as a kind's name, an activation
    entry's instance where it has arguments, or None for linear."""
    if isinstance(value, dict):  # a serialized function
        value = value.get("config", value.get("class_name"))
    if value in (None, "linear"):
        return None
    if value == "leaky_relu":  # keras.activations.leaky_relu's slope is 0.2
        return REGISTRY["leaky_relu"](alpha=0.2)
    if value in ("cnnspec>gelu_tanh", "gelu_tanh"):  # the Keras script's gelu(approximate=true)
        return REGISTRY["gelu"](approximate=True)
    if isinstance(value, str) and value in keras_activations():
        return keras_activations()[value]
    raise ImportGap(f"activation '{value}'", "cnnspec has no such activation")


def conv_args(config: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments every convolution shares, from Conv2D's, DepthwiseConv2D's and
    SeparableConv2D's config."""
    channels_last(config)
    args = {
        "kernel": pair(config["kernel_size"]),
        "stride": pair(config.get("strides", 1)),
        "padding": config.get("padding", "valid"),
        "dilation": pair(config.get("dilation_rate", 1)),
        "activation": activation(config.get("activation")),
        "use_bias": bool(config.get("use_bias", True)),
    }
    for key in ("kernel_regularizer", "depthwise_regularizer", "pointwise_regularizer"):
        if config.get(key):
            args["l2"] = l2(config, key)
    if args["padding"] not in ("same", "valid"):
        raise ImportGap(f"padding={args['padding']}", "Keras pads same or valid")
    return args
