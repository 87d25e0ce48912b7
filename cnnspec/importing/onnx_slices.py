"""Reading an ONNX Split of the channels (torch.split(x, sizes, dim=1), and `x.chunk(n, 1)`
where the exporter writes it as one Split) as channel_slice layers: each output that is used
is one channel_slice of the Split's input, so that the language writes the parts as branches of
the joins that read them (`concat { branch { channel_slice(0, 58) } branch { ... } }`).

A Slice of the channels (x[:, a:b], and `chunk` as torch.onnx writes it at opset 13 on, one
Slice per part) is read by the channel_slice entry's own pattern (cnnspec.layers.slicing)."""

from __future__ import annotations

from typing import Any, Protocol

from cnnspec.layers.slicing import ChannelSlice


class SliceReader(Protocol):
    """What this module needs of the ONNX reader (cnnspec.importing.onnx_file._Reader)."""

    aliases: dict[str, str]
    users: dict[str, int]

    def constant(self, name: str) -> Any: ...

    def nchw(self, value: str) -> tuple[int | None, ...] | None: ...

    def name_for(self, node: Any, weight: str | None = None) -> str: ...

    def unique(self, name: str) -> str: ...

    def gap(self, node: Any, what: str, why: str) -> None: ...

    def add(
        self,
        node: Any,
        kind: str,
        args: dict[str, Any],
        sources: list[str],
        name: str | None = None,
    ) -> Any: ...


_WHY = (
    "cnnspec splits the channels of a map (or the features of a vector) into parts of sizes "
    "fixed for the input: one channel_slice per part"
)


def split_sizes(attrs: dict[str, Any], sizes: Any, outputs: int, channels: int) -> list[int] | None:
    """The sizes of a Split's parts along its axis: from its `split` input (or the attribute
    of opsets before 13), or equal parts (the last one smaller, as `num_outputs` of opset 18
    gives them); None where they do not add up to the channels."""
    if sizes is not None:
        parts = [int(v) for v in sizes.reshape(-1).tolist()]
    elif attrs.get("split") is not None:
        parts = [int(v) for v in attrs["split"]]
    else:
        count = int(attrs.get("num_outputs", outputs))
        if count < 1:
            return None
        share = -(-channels // count)
        parts = [min(share, max(0, channels - share * i)) for i in range(count)]
    if len(parts) != outputs or sum(parts) != channels or any(p <= 0 for p in parts):
        return None
    return parts


def read_split(reader: SliceReader, node: Any, attrs: dict[str, Any], source: str) -> None:
    """A Split on axis 1 of a map (NCHW) or a vector: a channel_slice per output used."""
    shape = reader.nchw(node.input[0])
    axis = int(attrs.get("axis", 0))
    if shape is None or len(shape) not in (2, 4) or axis % len(shape) != 1:
        where = f"rank {len(shape)}" if shape is not None else "unknown shape"
        reader.gap(node, f"Split on axis {axis} ({where})", _WHY)
        return
    channels = shape[1]
    sizes = reader.constant(node.input[1]) if len(node.input) > 1 and node.input[1] else None
    if len(node.input) > 1 and node.input[1] and sizes is None:
        reader.gap(node, "Split by sizes computed at run time", _WHY)
        return
    parts = split_sizes(attrs, sizes, len(node.output), channels) if channels else None
    if parts is None:
        reader.gap(node, f"Split of {channels} channels into {len(node.output)} parts", _WHY)
        return
    base = reader.name_for(node)
    start = 0
    named: dict[str, str] = {}
    for index, (output, size) in enumerate(zip(node.output, parts, strict=True)):
        args = {"start": start, "stop": start + size}
        start += size
        if output and reader.users.get(output):
            name = reader.unique(f"{base}_{index + 1}")
            named[output] = reader.add(node, ChannelSlice.kind, args, [source], name).name
    # `add` names the first output after each layer it adds: each output is its own layer's.
    reader.aliases.pop(node.output[0], None)
    reader.aliases.update(named)
