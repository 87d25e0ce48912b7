"""The spec text of an imported network."""

from __future__ import annotations

from cnnspec.importing.network import Network
from cnnspec.importing.render import call_text
from cnnspec.importing.structure import Item, Join, Layer, Residual


def write(network: Network, items: list[Item]) -> str:
    h, w, c = network.input_shape
    lines = [f"model {network.name} {{", f"  input {h}x{w}x{c}"]
    lines += _items(items, 1)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _items(items: list[Item], depth: int) -> list[str]:
    pad = "  " * depth
    lines: list[str] = []
    for item in items:
        if isinstance(item, Layer):
            lines.append(pad + call_text(item.kind, item.args, item.name))
        elif isinstance(item, Residual):
            lines.append(pad + "residual {")
            lines.append(pad + f"  name {item.layer.name}")
            lines += _items(item.body, depth + 1)
            if item.shortcut is not None:
                lines.append(pad + "  shortcut {")
                lines += _items(item.shortcut, depth + 2)
                lines.append(pad + "  }")
            lines.append(pad + "}")
        elif isinstance(item, Join):
            lines.append(pad + f"{item.layer.kind} {{")
            lines.append(pad + f"  name {item.layer.name}")
            for branch in item.branches:
                lines.append(pad + "  branch {")
                lines += _items(branch, depth + 2)
                lines.append(pad + "  }")
            lines.append(pad + "}")
    return lines
