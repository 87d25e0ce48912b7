"""What every reader makes of a model file: a DAG of layers in cnnspec's kinds and arguments,
with the weights the file holds. The structure pass and the writer read only this."""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field
from typing import Any

from cnnspec.registry import ACTIVATION_SUFFIX
from cnnspec.spelling import Spelled, call_text

INPUT = "input"


@dataclass
class Layer:
    name: str
    kind: str
    args: dict[str, Any]
    inputs: tuple[str, ...]
    # Where the layer is in the source, for messages: "layer 'conv1' (Conv2D)".
    origin: str = ""
    # Not trained (Keras's trainable=False, or inside a frozen nested model): the spec freezes it.
    frozen: bool = False


@dataclass
class Network:
    name: str
    input_shape: tuple[int, int, int]
    layers: list[Layer]
    output: str
    # The file's weights: canonical tensors by key (ONNX), or each Keras layer's variables in
    # the file's order with their names where the file gives them (Keras), converted once the
    # spec is compiled (cnnspec.importing.weights).
    tensors: dict[str, Any] = field(default_factory=dict)
    keras_variables: dict[str, list[tuple[str | None, Any]]] = field(default_factory=dict)
    # What the source framework counts, to compare the spec's counts with.
    trainable: int | None = None
    non_trainable: int | None = None
    source: str = ""

    def producer(self) -> dict[str, Layer]:
        return {layer.name: layer for layer in self.layers}

    def weighted(self) -> set[str]:
        """The layers the file holds weights for."""
        return set(self.keras_variables) | {key.split(".", 1)[0] for key in self.tensors}

    def consumers(self) -> dict[str, list[Layer]]:
        result: dict[str, list[Layer]] = {}
        for layer in self.layers:
            for value in layer.inputs:
                result.setdefault(value, []).append(layer)
        return result


@dataclass(frozen=True, slots=True)
class Gap:
    """One thing in the source the language cannot express: what, where, why."""

    where: str
    what: str
    why: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}: {self.why}"


class ImportFailure(Exception):
    """The model cannot be imported. `gaps` lists every unsupported item (one line each);
    otherwise the message says what is wrong with the file."""

    def __init__(self, message: str, gaps: list[Gap] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.gaps = gaps or []


def identifier(text: str) -> str:
    """A source's name as a cnnspec layer or model name: `layer1.0.conv1` is layer1_0_conv1,
    and a name the generated scripts could not hold (a keyword, `training`) gets `_1`."""
    cleaned = re.sub(r"\W+", "_", text).strip("_")
    if not cleaned:
        return ""
    if cleaned[0].isdigit():
        cleaned = f"m_{cleaned}"
    if keyword.iskeyword(cleaned) or cleaned in (INPUT, "training"):
        cleaned = f"{cleaned}_1"
    return cleaned


def fold_activations(network: Network) -> None:
    """A separate activation that cnnspec's own Keras and ONNX emitters made from a layer's
    `activation=` (named `<layer>_act`, the layer's only consumer) goes back into the layer,
    and so does the `<layer>_pad` zero padding they put before a convolution padded by an
    explicit amount: an exported spec imports as it was written."""
    consumers = network.consumers()
    producer = network.producer()
    dropped: set[str] = set()
    for layer in network.layers:
        owner = producer.get(layer.inputs[0]) if len(layer.inputs) == 1 else None
        if (
            owner is not None
            and layer.name == owner.name + ACTIVATION_SUFFIX
            and layer.kind in ACTIVATION_OWNERS
            and "activation" in owner.args
            and owner.args["activation"] is None
            and len(consumers.get(owner.name, [])) == 1
            and network.output != owner.name
        ):
            owner.args["activation"] = activation_value(layer)
            _rename(network, layer.name, owner.name)
            dropped.add(layer.name)
    for layer in network.layers:
        pad = producer.get(layer.inputs[0]) if len(layer.inputs) == 1 else None
        if (
            pad is not None
            and pad.kind == "zero_pad"
            and pad.name == f"{layer.name}_pad"
            and layer.kind in ("conv2d", "depthwise_conv2d", "separable_conv2d")
            and layer.args.get("padding", "valid") == "valid"
            and len(consumers.get(pad.name, [])) == 1
        ):
            amount = _symmetric(pad.args.get("padding"))
            if amount is not None:
                layer.args["padding"] = amount
                layer.inputs = pad.inputs
                dropped.add(pad.name)
    network.layers = [layer for layer in network.layers if layer.name not in dropped]
    _fold_patch_embeddings(network)
    _fold_hard_sigmoids(network)


def _fold_patch_embeddings(network: Network) -> None:
    """cnnspec's Keras patch_embed: a Conv2D with kernel and stride the patch, then a Reshape
    of its positions into tokens named `<conv>_tokens`: one patch_embed, named as the conv."""
    consumers = network.consumers()
    producer = network.producer()
    dropped: set[str] = set()
    for layer in network.layers:
        conv = producer.get(layer.inputs[0]) if len(layer.inputs) == 1 else None
        target = layer.args.get("target", ())
        if (
            conv is None
            or layer.kind != "reshape"
            or layer.name != f"{conv.name}_tokens"
            or conv.kind != "conv2d"
            or len(target) != 2
            or len(consumers.get(conv.name, [])) != 1
        ):
            continue
        args = conv.args
        kernel = args.get("kernel")
        plain = (
            args.get("stride") == kernel
            and args.get("padding", "valid") == "valid"
            and args.get("activation") is None
            and args.get("dilation", (1, 1)) in (1, (1, 1))
            and args.get("groups", 1) == 1
            and args.get("use_bias", True)
            and not args.get("l2")
        )
        if not plain or target[-1] not in (-1, args.get("filters")):
            continue
        conv.kind = "patch_embed"
        conv.args = {"dim": args["filters"], "patch": kernel}
        _rename(network, layer.name, conv.name)
        dropped.add(layer.name)
    network.layers = [layer for layer in network.layers if layer.name not in dropped]


def _fold_hard_sigmoids(network: Network) -> None:
    """Keras's MobileNetV3 gate, ReLU(6)(x + 3) * (1 / 6), where only the ReLU is a layer
    (the two operations on constants read as rescalings): one hard_sigmoid, named as the
    ReLU, as the library spec names it."""
    consumers = network.consumers()
    producer = network.producer()
    dropped: set[str] = set()
    for relu in network.layers:
        if relu.kind != "relu6" or len(relu.inputs) != 1:
            continue
        before = producer.get(relu.inputs[0])
        after = consumers.get(relu.name, [])
        if (
            before is None
            or len(after) != 1
            or not _is_rescaling(before, 1.0, 3.0)
            or not _is_rescaling(after[0], 1 / 6, 0.0)
            or len(consumers.get(before.name, [])) != 1
            or network.output in (before.name, relu.name)
        ):
            continue
        relu.kind, relu.args, relu.inputs = "hard_sigmoid", {}, before.inputs
        dropped |= {before.name, after[0].name}
        _rename(network, after[0].name, relu.name)
    network.layers = [layer for layer in network.layers if layer.name not in dropped]


def _is_rescaling(layer: Layer, scale: float, offset: float) -> bool:
    if layer.kind != "rescaling":
        return False
    found = (layer.args.get("scale", 1.0), layer.args.get("offset", 0.0))
    return all(
        isinstance(v, int | float) and abs(v - want) < 1e-6
        for v, want in zip(found, (scale, offset), strict=True)
    )


ACTIVATION_OWNERS: set[str] = set()  # filled by activation kinds below


def activation_value(layer: Layer) -> Any:
    """An activation layer as the value of another layer's `activation=`."""
    return Spelled(call_text(layer.kind, layer.args)) if layer.args else layer.kind


def _rename(network: Network, old: str, new: str) -> None:
    for other in network.layers:
        other.inputs = tuple(new if i == old else i for i in other.inputs)
    if network.output == old:
        network.output = new


def _symmetric(padding: Any) -> int | None:
    if isinstance(padding, int):
        return padding
    if (
        isinstance(padding, tuple)
        and len({tuple(p) if isinstance(p, tuple) else p for p in padding}) == 1
    ):
        first = padding[0]
        if isinstance(first, tuple) and first[0] == first[1]:
            return int(first[0])
        if isinstance(first, int):
            return first
    return None


def _activation_kinds() -> None:
    import cnnspec.layers  # noqa: F401  (registers the kinds)
    from cnnspec.registry import REGISTRY

    ACTIVATION_OWNERS.update(k for k, cls in REGISTRY.items() if cls.is_activation)


_activation_kinds()
