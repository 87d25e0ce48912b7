"""Property test: on random valid specs, the checker's shapes and counts match real frameworks.

Hypothesis writes random model specs as text: stacks of conv2d (kernel 1-5, rectangular too,
stride 1-2, padding same/valid/integer, dilation), depthwise_conv2d, max and average pooling
(same/valid, strides other than the pool), batchnorm with non-default epsilon and momentum,
dropout and spatial_dropout, every activation both as a layer and as `activation=`, residual
blocks (some change width or stride, so the checker inserts a projection shortcut), `repeat`,
named blocks, dense on an (H, W, C) tensor, and a head of flatten or global pooling and dense
layers, on inputs from 7x7 to 40x40 including odd and non-square sizes.

The generator tracks the tensor's shape with its own copy of the Keras size rules so that it
writes only specs the checker must accept (every spec is asserted `ok`: an invalid one is a bug
in the generator). Each spec is then compiled by the checker and built as a PyTorch reference
(fast, many examples) and as a Keras reference (slower, fewer examples; there the two frameworks
must also compute the same function once they share weights). The comparisons are those of
tests/test_framework_counts.py, whose docstring says how each number is obtained.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

pytest.importorskip("keras")
pytest.importorskip("torch")
pytest.importorskip("hypothesis")

from hypothesis import given, settings
from hypothesis import strategies as st

from cnnspec.compiler import compile_text
from cnnspec.ir import Graph
from tests.frameworks.keras_ref import build_keras
from tests.frameworks.torch_ref import build_torch
from tests.fuzzing import examples
from tests.test_framework_counts import (
    function_mismatches,
    keras_mismatches,
    torch_mismatches,
)

pytestmark = pytest.mark.frameworks

ACTIVATIONS = [
    "relu",
    "relu6",
    "leaky_relu",
    "leaky_relu(alpha=0.1)",
    "elu",
    "elu(alpha=0.5)",
    "sigmoid",
    "tanh",
    "softmax",
    "gelu",
    "gelu(approximate=true)",
    "swish",
]


Shape = tuple[int, ...]


@dataclass(frozen=True)
class Item:
    """Spec text and its effect on the tensor's shape. The effect of an item drawn with
    `safe=True` holds for any input size, so a `repeat` can apply it again to its own output."""

    text: str
    effect: Callable[[Shape], Shape]


def out_size(size: int, kernel: int, stride: int, dilation: int, padding: str | int) -> int:
    """Keras's output size along one axis; 0 when the window does not fit."""
    if padding == "same":
        return (size + stride - 1) // stride
    padded = size + 2 * padding if isinstance(padding, int) else size
    extent = dilation * (kernel - 1) + 1
    return (padded - extent) // stride + 1 if padded >= extent else 0


def window(
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    padding: str | int,
    channels: Callable[[int], int],
) -> Callable[[Shape], Shape]:
    def effect(shape: Shape) -> Shape:
        h, w, c = shape
        return (
            out_size(h, kernel[0], stride[0], dilation[0], padding),
            out_size(w, kernel[1], stride[1], dilation[1], padding),
            channels(c),
        )

    return effect


def same(shape: Shape) -> Shape:
    return shape


def fmt_pair(pair: tuple[int, int]) -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"({pair[0]}, {pair[1]})"


@st.composite
def pairs(draw: st.DrawFn, low: int, high: int) -> tuple[int, int]:
    first = draw(st.integers(low, high))
    if draw(st.booleans()):
        return first, first
    return first, draw(st.integers(low, high))


@st.composite
def activation_arg(draw: st.DrawFn) -> str:
    choice = draw(st.sampled_from([None, "linear", *ACTIVATIONS]))
    return "" if choice is None else f", activation={choice}"


@st.composite
def conv(draw: st.DrawFn, shape: Shape, safe: bool) -> Item | None:
    """A conv2d or depthwise_conv2d that fits `shape`, or None. With `safe`, only windows that
    any size survives and a residual can project onto: padding=same, or a 1x1 valid window."""
    depthwise = draw(st.integers(0, 3)) == 0
    kernel = draw(pairs(1, 5))
    stride = draw(pairs(1, 2))
    dilation = (1, 1)
    if stride == (1, 1) and draw(st.booleans()):
        dilation = draw(pairs(1, 3))
    padding: str | int
    if safe:
        padding = "same" if kernel != (1, 1) or draw(st.booleans()) else "valid"
    else:
        padding = draw(st.sampled_from(["same", "valid", 0, 1, 2]))
    args = [f"kernel={fmt_pair(kernel)}"]
    if stride != (1, 1) or draw(st.booleans()):
        args.append(f"stride={fmt_pair(stride)}")
    if padding != "valid" or draw(st.booleans()):
        args.append(f"padding={padding}")
    if dilation != (1, 1):
        args.append(f"dilation={fmt_pair(dilation)}")
    if draw(st.booleans()):
        args.append(f"use_bias={'false' if draw(st.booleans()) else 'true'}")
    if draw(st.integers(0, 3)) == 0:
        args.append("l2=1e-4")
    act = draw(activation_arg())
    channels: Callable[[int], int]
    if depthwise:
        # Keep repeated depthwise multipliers from blowing up the width.
        multiplier = draw(st.integers(1, 2)) if shape[2] <= 8 else 1
        if multiplier != 1:
            args.append(f"depth_multiplier={multiplier}")
        text = f"depthwise_conv2d({', '.join(args)}{act})"
        channels = (lambda c: c * 2) if multiplier == 2 else (lambda c: c)
    else:
        filters = draw(st.integers(1, 8))
        text = f"conv2d({filters}, {', '.join(args)}{act})"
        channels = lambda c: filters  # noqa: E731
    item = Item(text, window(kernel, stride, dilation, padding, channels))
    return item if min(item.effect(shape)[:2]) >= 1 else None


@st.composite
def pool(draw: st.DrawFn, shape: Shape, safe: bool) -> Item | None:
    kind = draw(st.sampled_from(["maxpool", "avgpool"]))
    size = draw(pairs(1, 3))
    stride = draw(st.one_of(st.none(), pairs(1, 3)))
    padding = "same" if safe else draw(st.sampled_from(["same", "valid"]))
    args = [fmt_pair(size)]
    if stride is not None:
        args.append(f"stride={fmt_pair(stride)}")
    if padding == "same" or draw(st.booleans()):
        args.append(f"padding={padding}")
    item = Item(f"{kind}({', '.join(args)})", window(size, stride or size, (1, 1), padding, int))
    return item if min(item.effect(shape)[:2]) >= 1 else None


@st.composite
def shape_keeping(draw: st.DrawFn, shape: Shape) -> Item:
    """A layer that keeps the shape: batchnorm, dropout, an activation layer."""
    choice = draw(st.sampled_from(["batchnorm", "dropout", "spatial_dropout", "activation"]))
    if choice == "spatial_dropout" and len(shape) != 3:
        choice = "dropout"
    if choice == "batchnorm":
        args = []
        if draw(st.booleans()):
            args.append(f"epsilon={draw(st.sampled_from(['1e-5', '0.01', '0.1']))}")
        if draw(st.booleans()):
            args.append(f"momentum={draw(st.sampled_from(['0.9', '0.5', '0']))}")
        return Item(f"batchnorm({', '.join(args)})", same)
    if choice in ("dropout", "spatial_dropout"):
        return Item(f"{choice}({draw(st.sampled_from(['0', '0.1', '0.5']))})", same)
    act = draw(st.sampled_from(ACTIVATIONS))
    return Item(act if "(" in act else f"{act}()", same)


@st.composite
def layer(draw: st.DrawFn, shape: Shape, safe: bool) -> Item:
    """One spatial layer that fits `shape` (a shape-keeping one when the drawn one does not)."""
    kind = draw(st.sampled_from(["conv", "conv", "conv", "pool", "keep", "keep", "dense"]))
    item = None
    if kind == "conv":
        item = draw(conv(shape, safe))
    elif kind == "pool":
        item = draw(pool(shape, safe))
    elif kind == "dense" and not safe:
        # dense on an (H, W, C) tensor acts on the channels at every position (warning W201).
        units = draw(st.integers(1, 6))
        item = Item(f"dense({units}{draw(activation_arg())})", lambda s: (*s[:2], units))
    return item if item is not None else draw(shape_keeping(shape))


def chain(items: list[Item]) -> Callable[[Shape], Shape]:
    def effect(shape: Shape) -> Shape:
        for item in items:
            shape = item.effect(shape)
        return shape

    return effect


@st.composite
def sequence(draw: st.DrawFn, shape: Shape, safe: bool, low: int, high: int) -> list[Item]:
    items = []
    for _ in range(draw(st.integers(low, high))):
        item = draw(layer(shape, safe))
        shape = item.effect(shape)
        items.append(item)
    return items


@st.composite
def residual(draw: st.DrawFn, shape: Shape, depth: int = 0) -> Item:
    """A residual whose body may change width and resolution (the shortcut is projected; a
    body with a batchnorm gets a shortcut batchnorm too), and may hold one nested residual.
    Its effect holds for any size."""
    body = draw(sequence(shape, safe=True, low=1, high=3))
    if depth == 0 and draw(st.integers(0, 4)) == 0:
        inner = draw(residual(chain(body)(shape), depth=1))
        body.append(inner)
        body += draw(sequence(chain(body)(shape), safe=True, low=0, high=1))
    if draw(st.booleans()):
        body.append(draw(shape_keeping(shape)))
    text = f"residual {{ {' '.join(item.text for item in body)} }}"
    if draw(st.booleans()):
        text += " " + draw(shape_keeping(shape)).text
    return Item(text, chain(body))


@st.composite
def repeat(draw: st.DrawFn, shape: Shape) -> Item:
    """`repeat N { ... }` of items any size survives, so every copy fits."""
    count = draw(st.integers(1, 3))
    body = []
    probe = shape
    for _ in range(draw(st.integers(1, 2))):
        item = draw(st.one_of(layer(probe, safe=True), residual(probe)))
        probe = item.effect(probe)
        body.append(item)
    text = f"repeat {count} {{ {' '.join(item.text for item in body)} }}"
    return Item(text, chain(body * count))


@dataclass(frozen=True)
class Case:
    """A random spec and the shape the head must receive, by the generator's own reckoning."""

    text: str
    features: Shape

    def __repr__(self) -> str:
        return f"Case(features={self.features}, text=\n{self.text})"


@st.composite
def specs(draw: st.DrawFn) -> Case:
    h, w = draw(st.integers(7, 40)), draw(st.integers(7, 40))
    shape: Shape = (h, w, draw(st.integers(1, 4)))
    lines = ["model random {", "  input {}x{}x{}".format(*shape)]
    for index in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["layer", "layer", "layer", "residual", "repeat", "block"]))
        if kind == "block":
            items = draw(sequence(shape, safe=False, low=1, high=3))
            text = f"block b{index} {{ {' '.join(item.text for item in items)} }}"
            item = Item(text, chain(items))
        elif kind == "residual":
            item = draw(residual(shape))
        elif kind == "repeat":
            item = draw(repeat(shape))
        else:
            item = draw(layer(shape, safe=False))
        shape = item.effect(shape)
        assert min(shape) >= 1, (lines, item.text, shape)
        lines.append("  " + item.text)
    head = draw(st.sampled_from(["flatten", "global_avg_pool", "global_max_pool"]))
    features = shape
    lines.append(f"  head {{ {head}()")
    if draw(st.booleans()):
        lines.append(f"    dense({draw(st.integers(1, 16))}{draw(activation_arg())})")
        if draw(st.booleans()):
            lines.append("    " + draw(shape_keeping((1,))).text)
    classes = draw(st.integers(2, 10))
    if draw(st.booleans()):
        lines.append(f"    dense({classes}, activation=softmax)")
    else:
        lines.append(f"    dense({classes}) softmax()")
    lines += ["  }", "}"]
    return Case("\n".join(lines) + "\n", features)


def checked(case: Case) -> Graph:
    """The checker's graph of a generated spec, which must be accepted and must hand the head
    the shape the generator predicted (this checks the lowering of repeat and residual)."""
    compilation = compile_text(case.text, "random.cnn")
    assert compilation.ok, (case, [(d.code, d.message) for d in compilation.diagnostics])
    assert compilation.spec is not None
    graph = compilation.spec.model
    head = next(node for node in graph.nodes if node.scope[:1] == ("head",))
    source = head.inputs[0]
    features = graph.input_shape if source == Graph.INPUT else graph.node(source).output_shape
    assert features == case.features, case
    return graph


@settings(max_examples=examples(100))
@given(specs())
def test_checker_matches_pytorch(case: Case) -> None:
    graph = checked(case)
    assert torch_mismatches(graph, build_torch(graph)) == [], case


@settings(max_examples=examples(25))
@given(specs())
def test_checker_matches_keras(case: Case) -> None:
    graph = checked(case)
    model = build_keras(graph)
    assert keras_mismatches(graph, model) == [], case
    assert function_mismatches(graph, model, build_torch(graph), seed=0) == [], case
