"""The semantic campaign: random specs, checked, then built and run in Keras, PyTorch and ONNX.

    python -m tests.campaign --specs 2000 --workers 2 --output runs/campaign

Each spec is drawn from a seeded generator (spec N of seed S is always the same text) that
writes every layer kind in the registry with every form its arguments take (numbers and
(h, w) pairs, dilations, `same`/`valid`/integer padding, activations by name and with
arguments), in blocks, `repeat`s and residuals with and without a written `shortcut`, with
`defaults`, and with library backbones at small sizes. The generator is loose on purpose: it
does not know the shapes, so many specs are refused, and now and then it writes a value out of
range. What must hold:

- the checker never raises, and every error it reports is located in the text;
- a spec it accepts runs in every backend (`cnnspec.verify`): the generated Keras and PyTorch
  models and the exported ONNX model under onnxruntime hold exactly the checker's trainable and
  non-trainable counts, every Keras layer has the checker's shape, and with the same random
  weights (random biases and BatchNorm statistics too) all three give the same outputs within
  1e-4. Nothing may crash.
- and it comes back through `cnnspec export` and `cnnspec import` as the same network: the same
  layer names, kinds, shapes and counts, and the same outputs with the imported weights.

Half the workers run TensorFlow without oneDNN (TF_ENABLE_ONEDNN_OPTS=0), as it runs on CPUs
without AVX-512 VNNI (where its own kernels refuse some things oneDNN accepts), and half with it.
Failures are written to OUTPUT/failures/ as specs with the error in a comment; each bug found
becomes a case in tests/regressions/, which `make test` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

# --------------------------------------------------------------------------------------------
# The generator

# `activation=` values: every activation kind by name (from the registry), with arguments too.
ACTIVATIONS_WITH_ARGUMENTS = ["leaky_relu(alpha=0.05)", "elu(alpha=0.5)", "gelu(approximate=true)"]
BACKBONES = ["vgg16", "vgg19", "resnet50", "mobilenet_v2"]
# The argument forms and constructs the campaign must have covered in accepted specs.
FORMS = {
    "(h, w) kernel or pool": r"(kernel=|pool\(|maxpool\(|avgpool\()\(\d+, \d+\)",
    "unequal strides": r"stride=\((\d+), (?!\1\))\d+\)",
    "dilation": r"dilation=",
    "integer padding": r"padding=\d",
    "zero_pad(same, ...)": r"zero_pad\(same",
    "activation with arguments": r"activation=\w+\(",
    "defaults": r"defaults ",
    "repeat": r"repeat \d",
    "residual without a written shortcut": r"residual[^{]*\{(?![^}]*shortcut)",
    "residual with a written shortcut": r"shortcut \{ conv2d",
    "residual with an identity shortcut": r"shortcut \{ \}",
    "nested residual": r"residual[^{]*\{[^}]*residual",
    "backbone": r"backbone \w+",
    "concat of branches": r"concat[^{]*\{ branch",
    "add of branches": r"add[^{]*\{ branch",
    "multiply of branches": r"multiply[^{]*\{ branch",
    "identity branch": r"branch \{ \}",
    "(C,) gate": r"global_\w+_pool\(\) (sigmoid|tanh)\(\) \}",
    "named layer": r"name=",
    "defined block": r"^define d\d+\(k",
    "expression argument": r"k \* 2|k \+ 1",
    "vision transformer": r"patch_embed\(",
    "attention on tokens": r"patch_embed\([\s\S]*attention\(",
    "class token, read out": r"class_token\(\)[\s\S]*token_pool\(class\)",
    "mean of tokens": r"token_pool\(mean\)",
    "value read past its join (from)": r"branch \{ from v\d+",
    "max pooling padded with -inf": r"maxpool\([^()]*(\([^()]*\)[^()]*)*padding=(1|\(\()",
}


class Writer:
    """Random spec text from one seeded `random.Random`."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.names = 0
        # `define` sections written for the spec, placed before its model.
        self.defines: list[str] = []

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def pair(self, low: int, high: int) -> str:
        """An int, or now and then an (h, w) pair of ints."""
        first = self.rng.randint(low, high)
        if self.chance(0.3):
            return f"({first}, {self.rng.randint(low, high)})"
        return str(first)

    def bad(self) -> bool:
        """Whether to write a value out of range this time (refused: a located error)."""
        return self.chance(0.01)

    def call(self, name: str, positional: list[str], options: dict[str, str | None]) -> str:
        args = positional + [f"{k}={v}" for k, v in options.items() if v is not None]
        if self.chance(0.05):
            self.names += 1
            args.append(f"name=n{self.names}")
        return f"{name}({', '.join(args)})"

    def maybe(self, p: float, value: Callable[[], str]) -> str | None:
        return value() if self.chance(p) else None

    def activation(self) -> str:
        from cnnspec.registry import activation_kinds

        return self.rng.choice([*activation_kinds(), *ACTIVATIONS_WITH_ARGUMENTS, "linear"])

    def padding(self) -> str:
        return self.rng.choice(["same", "same", "valid", "0", "1", "2", "3"])

    def window(self, strided: bool = True) -> dict[str, str | None]:
        """Kernel, stride, padding and dilation of a convolution (stride or dilation)."""
        stride = self.pair(1, 3) if strided and self.chance(0.4) else None
        dilation = self.pair(1, 3) if stride is None and self.chance(0.25) else None
        return {
            "kernel": self.pair(0 if self.bad() else 1, 5) if self.chance(0.8) else None,
            "stride": stride,
            "padding": self.padding() if self.chance(0.8) else None,
            "dilation": dilation,
        }

    def conv_extras(self) -> dict[str, str | None]:
        return {
            "activation": self.maybe(0.5, self.activation),
            "l2": self.maybe(0.2, lambda: self.rng.choice(["1e-4", "0", "0.01"])),
            "use_bias": self.maybe(0.3, lambda: self.rng.choice(["true", "false"])),
        }

    # ---- one generator per layer kind, by registry name

    def conv2d(self) -> str:
        filters = str(self.rng.randint(0 if self.bad() else 1, 8))
        # Grouped now and then: refused (a located E205) unless both channel counts divide.
        groups = self.maybe(0.15, lambda: self.rng.choice(["1", "2", "3"]))
        options = {**self.window(), **self.conv_extras(), "groups": groups}
        return self.call("conv2d", [filters], options)

    def separable_conv2d(self) -> str:
        filters = str(self.rng.randint(0 if self.bad() else 1, 8))
        multiplier = self.maybe(0.3, lambda: str(self.rng.randint(1, 3)))
        extras = {**self.conv_extras(), "l2": None}  # it takes no l2
        options = {**self.window(), **extras, "depth_multiplier": multiplier}
        return self.call("separable_conv2d", [filters], options)

    def depthwise_conv2d(self) -> str:
        multiplier = self.maybe(0.3, lambda: str(self.rng.randint(1, 3)))
        options = {**self.window(), **self.conv_extras(), "depth_multiplier": multiplier}
        return self.call("depthwise_conv2d", [], options)

    def _pool(self, kind: str) -> str:
        # A max pooling also takes amounts padded with -inf (PyTorch's padding, ceil_mode's).
        paddings = ["same", "valid", *(["1", "((0, 1), (1, 0))"] if kind == "maxpool" else [])]
        options = {
            "stride": self.maybe(0.4, lambda: self.pair(1, 3)),
            "padding": self.maybe(0.6, lambda: self.rng.choice(paddings)),
        }
        return self.call(kind, [self.pair(1, 4)] if self.chance(0.8) else [], options)

    def maxpool(self) -> str:
        return self._pool("maxpool")

    def avgpool(self) -> str:
        return self._pool("avgpool")

    def zero_pad(self) -> str:
        form = self.rng.randrange(5)
        if form == 0:
            return self.call("zero_pad", [], {})
        if form == 1:
            return self.call("zero_pad", [str(self.rng.randint(0, 3))], {})
        if form == 2:
            return self.call(
                "zero_pad", [f"({self.rng.randint(0, 2)}, {self.rng.randint(0, 2)})"], {}
            )
        if form == 3:
            pads = [self.rng.randint(0, 2) for _ in range(4)]
            return self.call("zero_pad", [f"(({pads[0]}, {pads[1]}), ({pads[2]}, {pads[3]}))"], {})
        options = {"kernel": self.pair(1, 5), "stride": self.maybe(0.7, lambda: self.pair(1, 3))}
        return self.call("zero_pad", ["same"], options)

    def crop(self) -> str:
        form = self.rng.randrange(3)
        if form == 0:
            return self.call("crop", [str(self.rng.randint(0, 2))], {})
        if form == 1:
            return self.call("crop", [f"({self.rng.randint(0, 2)}, {self.rng.randint(0, 2)})"], {})
        crops = [self.rng.randint(0, 2) for _ in range(4)]
        return self.call("crop", [f"(({crops[0]}, {crops[1]}), ({crops[2]}, {crops[3]}))"], {})

    def upsample(self) -> str:
        size = "0" if self.bad() else self.pair(1, 3)
        interpolation = self.maybe(0.5, lambda: self.rng.choice(["nearest", "bilinear"]))
        return self.call("upsample", [size], {"interpolation": interpolation})

    def channel_shuffle(self) -> str:
        # Often a divisor of the channels, sometimes not (E205).
        return self.call("channel_shuffle", [str(self.rng.choice([1, 2, 2, 3, 4, 8]))], {})

    def channel_slice(self) -> str:
        # Channels [start, stop): often within the input's, sometimes beyond them or empty
        # (E205 at stop).
        start = self.rng.randint(0, 3)
        stop = start + self.rng.randint(0 if self.bad() else 1, 4)
        return self.call("channel_slice", [str(start), str(stop)], {})

    def global_avg_pool(self) -> str:
        return self.call("global_avg_pool", [], {"keepdims": self.maybe(0.2, lambda: "true")})

    def global_max_pool(self) -> str:
        return self.call("global_max_pool", [], {"keepdims": self.maybe(0.2, lambda: "true")})

    def batchnorm(self) -> str:
        options = {
            "epsilon": self.maybe(0.3, lambda: self.rng.choice(["1e-5", "0.01", "0.1"])),
            "momentum": self.maybe(0.3, lambda: self.rng.choice(["0.9", "0.5", "0", "0.999"])),
            "center": self.maybe(0.15, lambda: "false"),
            "scale": self.maybe(0.15, lambda: "false"),
        }
        return self.call("batchnorm", [], options)

    def layer_norm(self) -> str:
        return self.call("layer_norm", [], {"epsilon": self.maybe(0.3, lambda: "1e-6")})

    def normalization(self) -> str:
        if self.chance(0.5):
            return "normalization()"
        # One value for all channels (a list per channel is refused unless it fits).
        values = self.rng.choice(["mean=0.5, variance=2", "mean=[0.1, 0.2], variance=[1, 4]"])
        return f"normalization({values})"

    def rescaling(self) -> str:
        scale = self.rng.choice(["1/255", "0.17", "2", "[1, 2, 3]"])
        return self.call("rescaling", [scale], {"offset": self.maybe(0.3, lambda: "-1")})

    def stochastic_depth(self) -> str:
        return self.call("stochastic_depth", [self.rng.choice(["0", "0.2"])], {})

    def layer_scale(self) -> str:
        return self.call("layer_scale", [], {"init": self.maybe(0.5, lambda: "0.5")})

    def reshape(self) -> str:
        """Often refused (the generator does not know the element count): a located E205."""
        return self.call("reshape", [self.rng.choice(["-1", "(1, 1, -1)", "(2, -1, 1)"])], {})

    def dropout(self) -> str:
        rate = "1.5" if self.bad() else self.rng.choice(["0", "0.1", "0.5"])
        return self.call("dropout", [rate], {})

    def spatial_dropout(self) -> str:
        return self.call("spatial_dropout", [self.rng.choice(["0", "0.2"])], {})

    def flatten(self) -> str:
        return "flatten()"

    def dense(self) -> str:
        return self.call("dense", [str(self.rng.randint(1, 12))], self.conv_extras())

    # ---- tokens (a ViT's kinds): shape-unaware here as everywhere; `vit` writes them in order.

    def patch_embed(self, dim: int | None = None, patch: str | None = None) -> str:
        size = str(dim or self.rng.randint(1, 12))
        return self.call("patch_embed", [size], {"patch": patch or self.pair(1, 4)})

    def class_token(self) -> str:
        return "class_token()"

    def position_embedding(self) -> str:
        return "position_embedding()"

    def attention(self, dim: int | None = None) -> str:
        heads = [h for h in range(1, 5) if dim and dim % h == 0] or [self.rng.randint(1, 4)]
        return self.call("attention", [str(self.rng.choice(heads))], {})

    def window_attention(self) -> str:
        # Heads that often divide the channels (E205 where not), small windows, a shift now
        # and then (E205 where it reaches a whole window), and Swin V2's form now and then
        # (E205 where a window is one position along an axis).
        heads = self.rng.choice(["1", "1", "2", "3"])
        options = {
            "size": self.maybe(0.8, lambda: self.pair(1, 4)),
            "shift": self.maybe(0.5, lambda: self.pair(0, 2)),
            "version": self.maybe(0.3, lambda: "2"),
        }
        return self.call("window_attention", [heads], options)

    def patch_merge(self) -> str:
        return "patch_merge()"

    def partition_attention(self) -> str:
        # MaxViT's attention: heads that often divide the channels (E205 where not), small
        # partitions (E205 where they do not divide the map), windows or a grid.
        heads = self.rng.choice(["1", "1", "2", "3"])
        options = {
            "size": self.maybe(0.8, lambda: self.pair(1, 3)),
            "grid": self.maybe(0.5, lambda: "true"),
        }
        return self.call("partition_attention", [heads], options)

    def token_pool(self) -> str:
        return self.call("token_pool", [self.rng.choice(["class", "mean"])], {})

    def vit(self, h: int, w: int) -> list[str]:
        """A small Vision Transformer's body: patches of a size that divides the input, a class
        token and position embeddings now and then, pre-norm residuals of attention and of a
        dense MLP, and the tokens pooled (or flattened) at the end."""
        dim = self.rng.randint(1, 6) * self.rng.choice([1, 2, 4])
        patch = (
            self.rng.choice([p for p in range(1, 5) if h % p == 0]),
            self.rng.choice([p for p in range(1, 5) if w % p == 0]),
        )
        written = str(patch[0]) if patch[0] == patch[1] else f"({patch[0]}, {patch[1]})"
        body = [self.patch_embed(dim, written)]
        classed = self.chance(0.6)
        if classed:
            body.append(self.class_token())
        if self.chance(0.7):
            body.append(self.position_embedding())
        for _ in range(self.rng.randint(1, 3)):
            roll = self.rng.random()
            norm = self.layer_norm() if self.chance(0.8) else ""
            if roll < 0.4:
                body.append(f"residual {{ {norm} {self.attention(dim)} }}")
            elif roll < 0.7:
                act = self.rng.choice(["gelu", "relu", "swish", "gelu(approximate=true)"])
                hidden = self.rng.randint(1, 16)
                mlp = f"dense({hidden}, activation={act}) {self.dropout()} dense({dim})"
                body.append(f"residual {{ {norm} {mlp} }}")
            else:
                body.append(
                    self.rng.choice(
                        [self.dense(), self.dropout(), self.layer_norm(), self.attention(dim)]
                    )
                )
                dim = int(re.findall(r"\d+", body[-1])[0]) if body[-1].startswith("dense") else dim
        if self.chance(0.85):
            body.append(f"token_pool({self.rng.choice(['class'] * classed + ['mean'])})")
        return body

    def relu(self) -> str:
        return "relu()"

    def relu6(self) -> str:
        return "relu6()"

    def leaky_relu(self) -> str:
        return self.call("leaky_relu", [], {"alpha": self.maybe(0.5, lambda: "0.1")})

    def elu(self) -> str:
        return self.call("elu", [], {"alpha": self.maybe(0.5, lambda: "0.7")})

    def sigmoid(self) -> str:
        return "sigmoid()"

    def tanh(self) -> str:
        return "tanh()"

    def softmax(self) -> str:
        return "softmax()"

    def gelu(self) -> str:
        return self.call("gelu", [], {"approximate": self.maybe(0.5, lambda: "true")})

    def swish(self) -> str:
        return "swish()"

    def hard_sigmoid(self) -> str:
        return "hard_sigmoid()"

    def hard_swish(self) -> str:
        return "hard_swish()"

    # ---- structure

    SPATIAL_WEIGHTS: ClassVar[dict[str, int]] = {
        "conv2d": 8,
        "depthwise_conv2d": 4,
        "maxpool": 2,
        "avgpool": 2,
        "zero_pad": 1,
        "batchnorm": 3,
        "separable_conv2d": 2,
        "crop": 1,
        "layer_norm": 1,
        "normalization": 1,
        "rescaling": 1,
        "stochastic_depth": 1,
        "layer_scale": 1,
        "reshape": 1,
        "dropout": 1,
        "spatial_dropout": 1,
        "dense": 1,
        "window_attention": 1,
        "patch_merge": 1,
        "partition_attention": 1,
    }

    def layer(self, kinds: list[str]) -> str:
        """A spatial layer (weighted as above) or an activation."""
        if self.chance(0.2):
            return getattr(self, self.rng.choice(kinds))()
        weights = self.SPATIAL_WEIGHTS
        kind = self.rng.choices(list(weights), weights=list(weights.values()))[0]
        return getattr(self, kind)()

    def items(self, kinds: list[str], depth: int, low: int, high: int) -> list[str]:
        result = []
        for _ in range(self.rng.randint(low, high)):
            roll = self.rng.random()
            if depth < 2 and roll < 0.12:
                result.append(self.residual(kinds, depth + 1))
            elif depth < 2 and roll < 0.18:
                body = " ".join(self.items(kinds, depth + 1, 1, 3))
                result.append(f"repeat {self.rng.randint(1, 3)} {{ {body} }}")
            elif depth < 2 and roll < 0.25:
                self.names += 1
                body = " ".join(self.items(kinds, depth + 1, 1, 3))
                result.append(f"block b{self.names} {{ {body} }}")
            elif depth < 2 and roll < 0.33:
                result.append(self.join(kinds, depth + 1))
            elif depth < 2 and roll < 0.37:
                result.append(self.defined(kinds, depth + 1))
            elif depth < 2 and roll < 0.41:
                result.append(self.named_value(kinds, depth + 1))
            else:
                result.append(self.layer(kinds))
        return result

    def defined(self, kinds: list[str], depth: int) -> str:
        """A block defined with a parameter and called once or twice (each call a block of its
        own name, so explicit names inside stay unique), its body using the parameter in
        expressions."""
        self.names += 1
        name = f"d{self.names}"
        body = " ".join(self.items(kinds, depth + 1, 0, 2))
        first = self.rng.choice(["conv2d(k, padding=same)", "conv2d(k * 2, kernel=1)"])
        last = self.rng.choice(["", "if k > 2 { relu() } else { tanh() }", "dense(k + 1)"])
        self.defines.append(f"define {name}(k, unused=1) {{ {first} {body} {last} }}")
        calls = []
        for _ in range(self.rng.randint(1, 2)):
            self.names += 1
            calls.append(f"{name}({self.rng.randint(1, 8)}, name=i{self.names})")
        return " ".join(calls)

    def named_value(self, kinds: list[str], depth: int) -> str:
        """A value read again past the join that ends its branch, with `from`: a named layer
        (or block), some layers, then a join of the chain and a branch from that value (often
        a refused E203 when the layers between changed the size). Now and then a `from` that
        leaves the layer before it unread (a refused E119)."""
        self.names += 1
        value = f"v{self.names}"
        if self.chance(0.3):
            first = f"block {value} {{ {self.concat_branch()} }}"
        else:
            first = f"conv2d({self.rng.randint(1, 6)}, kernel=1, name={value})"
        between = " ".join(self.items(kinds, depth, 0, 2))
        if self.chance(0.05):
            return f"{first} {between} relu() from {value}"
        kind = self.rng.choice(["concat", "concat", "add"])
        other = self.concat_branch() if kind == "concat" else self.add_branch()
        reader = f"branch {{ from {value} {other if self.chance(0.6) else ''} }}"
        return f"{first} {between} {kind} {{ branch {{ }} {reader} }}"

    def residual(self, kinds: list[str], depth: int) -> str:
        label = ""
        if self.chance(0.3):
            self.names += 1
            label = f" r{self.names}"
        if self.chance(0.35):
            # A basic block with the projection written out, or an identity shortcut.
            filters = self.rng.randint(1, 8)
            stride = self.rng.choice([1, 1, 2])
            body = (
                f"conv2d({filters}, stride={stride}, padding=same) batchnorm() relu() "
                f"conv2d({filters}, padding=same)"
            )
            if self.chance(0.7):
                shortcut = f"shortcut {{ conv2d({filters}, kernel=1, stride={stride}) }}"
            else:
                shortcut = "shortcut { }"
            return f"residual{label} {{ {body} {shortcut} }}"
        body = " ".join(self.items(kinds, depth, 1, 3))
        return f"residual{label} {{ {body} }}"

    def join(self, kinds: list[str], depth: int) -> str:
        """A join of two or three branches: some empty (the input itself), some written to fit
        the join (`<kind>_branch`), some random (often refused: a located E203)."""
        from cnnspec.registry import join_kinds

        kind = self.rng.choice(join_kinds())
        label = ""
        if self.chance(0.3):
            self.names += 1
            label = f" j{self.names}"
        branches = []
        for _ in range(self.rng.randint(2, 3)):
            roll = self.rng.random()
            if roll < 0.25:
                body = ""
            elif roll < 0.75:
                body = getattr(self, f"{kind}_branch")()
            else:
                body = " ".join(self.items(kinds, depth, 1, 2))
            branches.append(f"branch {{ {body} }}" if body else "branch { }")
        return f"{kind}{label} {{ {' '.join(branches)} }}"

    def add_branch(self) -> str:
        """Layers that keep the shape, so the branch can be added to the input."""
        return self.rng.choice(
            [
                "depthwise_conv2d(3, padding=same) batchnorm()",
                "maxpool(3, stride=1, padding=same)",
                "relu() depthwise_conv2d((1, 3), padding=same)",
            ]
        )

    def concat_branch(self) -> str:
        """Layers that keep the map's size, whatever their channels."""
        filters = self.rng.randint(1, 6)
        return self.rng.choice(
            [
                f"conv2d({filters}, kernel={self.pair(1, 5)}, padding=same)",
                f"avgpool(3, stride=1, padding=same) conv2d({filters}, kernel=1)",
                f"conv2d({filters}, kernel=1) relu() depthwise_conv2d(3, padding=same)",
                f"channel_slice(0, 1) conv2d({filters}, kernel=1)",  # a channel split's part
            ]
        )

    def multiply_branch(self) -> str:
        """A gate: a (C,) vector or a map of the input's shape."""
        return self.rng.choice(
            [
                "global_avg_pool() sigmoid()",
                "global_max_pool() tanh()",
                "depthwise_conv2d(3, padding=same) sigmoid()",
            ]
        )

    def head(self) -> tuple[str, str | None]:
        """The head, and the data section it needs (binary labels for one sigmoid unit)."""
        parts = [self.rng.choice(["flatten()", "global_avg_pool()", "global_max_pool()"])]
        if self.chance(0.4):
            parts.append(self.dense())
            if self.chance(0.5):
                parts.append(self.rng.choice([self.batchnorm(), self.dropout(), self.relu()]))
        classes = self.rng.randint(2, 10)
        ending = self.rng.randrange(4)
        data = None
        if ending == 0:
            parts.append(f"dense({classes}) softmax()")
        elif ending == 1:
            parts.append("dense(1, activation=sigmoid)")
            data = "data { labels binary }"
        else:
            parts.append(f"dense({classes}, activation=softmax)")
        return f"head {{ {' '.join(parts)} }}", data

    def spec(self, index: int, kinds: list[str]) -> str:
        lines = [f"model fuzz_{index} {{"]
        backbone = self.chance(0.025)
        if backbone:
            size = self.rng.choice([32, 48, 64])
            lines.append(f"  input {size}x{size}x3")
        else:
            h = self.rng.randint(1, 40) if self.chance(0.1) else self.rng.randint(8, 40)
            w = h if self.chance(0.6) else self.rng.randint(4, 40)
            lines.append(f"  input {h}x{w}x{self.rng.randint(1, 5)}")
        if self.chance(0.2):
            kind = self.rng.choice(["conv2d", "depthwise_conv2d", "batchnorm", "maxpool"])
            options = {
                "conv2d": "kernel=3, padding=same",
                "depthwise_conv2d": "padding=same, use_bias=false",
                "batchnorm": "epsilon=1e-5, momentum=0.9",
                "maxpool": "padding=same",
            }[kind]
            lines.append(f"  defaults {kind}({options})")
        if backbone:
            name = self.rng.choice(BACKBONES)
            pooling = self.rng.choice(["none", "avg", "max"])
            lines.append(f"  backbone {name}(weights=none, pooling={pooling})")
            if pooling == "none" and self.chance(0.5):
                lines.append("  " + self.layer(kinds))
        elif self.chance(0.06):
            lines += ["  " + item for item in self.vit(h, w)]
        else:
            lines += ["  " + item for item in self.items(kinds, 0, 1, 6)]
        head, data = self.head()
        lines.append("  " + head)
        lines.append("}")
        if data:
            lines.append(data)
        return "\n".join([*self.defines, *lines]) + "\n"


def layer_kinds() -> list[str]:
    """Every layer kind a spec may call; the generator has a method for each."""
    import cnnspec.layers  # noqa: F401  (registers the kinds)
    from cnnspec.registry import join_kinds, user_kinds

    kinds = user_kinds()
    missing = [kind for kind in kinds if not hasattr(Writer, kind)]
    missing += [kind for kind in join_kinds() if not hasattr(Writer, f"{kind}_branch")]
    assert not missing, f"the campaign has no generator for layer kinds {missing}"
    return kinds


def spec_text(seed: str, index: int) -> str:
    """Spec `index` of campaign `seed`: always the same text."""
    return Writer(random.Random(f"{seed}/{index}")).spec(index, layer_kinds())


# --------------------------------------------------------------------------------------------
# Examining one spec


def random_weights(spec: Any, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random tensors in the canonical layout: kernels at Glorot's scale, biases and BatchNorm
    statistics random too, so that a bias or a statistic dropped anywhere shows."""
    shapes = spec.model.value_shapes()
    weights: dict[str, np.ndarray] = {}
    for node in spec.model.nodes:
        for suffix, shape in node.layer.weight_shapes([shapes[i] for i in node.inputs]).items():
            key = f"{node.name}.{suffix}"
            if len(shape) < 2:
                # Vectors: scales and variances positive, the rest either way.
                low, high = {
                    "weight": (0.5, 1.5),
                    "running_var": (0.5, 2.0),
                    "variance": (0.5, 2.0),
                }.get(suffix, (-0.5, 0.5))
                values = rng.uniform(low, high, shape)
                if suffix == "count":
                    values = np.round(100 * values + 100)  # Keras holds an integer
                elif suffix.endswith("bias"):
                    values = rng.normal(0.0, 0.1, shape)
            else:
                receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
                limit = np.sqrt(6.0 / (shape[1] * receptive + shape[0] * receptive))
                values = rng.uniform(-limit, limit, shape)
            weights[key] = values.astype(np.float32)
    return weights


# Layers that do nothing at inference, which an ONNX model holds no node for.
INFERENCE_IDENTITIES = ("dropout", "spatial_dropout", "stochastic_depth")


def network_differences(original: Any, imported: Any) -> list[str]:
    """How an imported graph differs from the original: the layers (names, kinds, shapes,
    counts) and what each one takes in. The order in which independent branches are written
    may differ (an add of two branches may come back as a residual with a shortcut)."""
    skipped = {n.name: n.inputs[0] for n in original.nodes if n.kind in INFERENCE_IDENTITIES}

    def source(name: str) -> str:
        while name in skipped:
            name = skipped[name]
        return name

    mine = {n.name: n for n in original.nodes if n.name not in skipped}
    theirs = {n.name: n for n in imported.nodes}
    if set(mine) != set(theirs):
        return [f"layers {sorted(set(theirs) ^ set(mine))[:6]} differ"]
    problems = []
    for name, node in mine.items():
        other = theirs[name]
        if (other.kind, other.output_shape, other.params) != (
            node.kind,
            node.output_shape,
            node.params,
        ):
            problems.append(f"{name} is {other.kind} {other.output_shape} {other.params}")
        if sorted(source(i) for i in node.inputs) != sorted(other.inputs):
            problems.append(f"{name} takes {other.inputs}, not {node.inputs}")
    return problems


def import_round_trip(spec: Any, weights: dict, tolerance: float, seed: int) -> list[str]:
    """`cnnspec export` then `cnnspec import`: the same layers (names, kinds, shapes, counts)
    and, with the imported weights, the same outputs."""
    import onnxruntime as ort

    from cnnspec.export import export
    from cnnspec.importing import ImportFailure, import_network
    from cnnspec.importing.onnx_file import network_from_model

    model = export(spec, weights, keep_batchnorms=True)
    try:
        imported = import_network(network_from_model(model, "campaign.onnx"))
    except ImportFailure as failure:
        return [f"import: {failure.message}; " + "; ".join(str(g) for g in failure.gaps[:3])]
    problems = [f"import: {p}" for p in network_differences(spec.model, imported.spec.model)]
    h, w, c = spec.model.input_shape
    x = np.random.default_rng(seed).standard_normal((2, c, h, w)).astype(np.float32)
    outputs = []
    for onnx_model in (model, export(imported.spec, imported.tensors)):
        session = ort.InferenceSession(
            onnx_model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        outputs.append(session.run(None, {"image": x})[0])
    error = float(np.abs(outputs[0] - outputs[1]).max())
    if not error <= tolerance:
        problems.append(f"import: outputs {error:.3g} apart")
    return problems


@dataclass
class Outcome:
    index: int
    text: str
    accepted: bool = False
    codes: list[str] = field(default_factory=list)  # refused: the error codes
    kinds: list[str] = field(default_factory=list)  # accepted: the layer kinds it holds
    failure: str | None = None  # what went wrong, if anything
    seconds: float = 0.0


def examine(text: str, index: int = 0, tolerance: float = 1e-4) -> Outcome:
    """Check one spec; if the checker accepts it, verify it across the three frameworks."""
    from cnnspec.compiler import compile_text
    from cnnspec.verify import run_verify

    started = time.perf_counter()
    outcome = Outcome(index, text)
    try:
        compilation = compile_text(text, "fuzz.cnn")
        lines = text.count("\n") + 1
        for diagnostic in compilation.diagnostics:
            if not (1 <= diagnostic.span.line <= lines):
                outcome.failure = f"diagnostic outside the text: {diagnostic}"
        if not compilation.ok or compilation.spec is None:
            outcome.codes = sorted({d.code for d in compilation.diagnostics.errors})
            if not outcome.codes and outcome.failure is None:
                outcome.failure = "refused without an error"
            return outcome
        spec = compilation.spec
        outcome.accepted = True
        outcome.kinds = sorted({node.kind for node in spec.model.nodes})
        weights = random_weights(spec, np.random.default_rng(index))
        report = run_verify(spec, weights, tolerance, batch=2, seed=index)
        problems = []
        if report.skipped:
            problems.append(f"skipped {report.skipped}")
        for c in report.comparisons:
            if not c.max_abs <= tolerance:
                where = f" from {c.first_divergence[0]}" if c.first_divergence else ""
                problems.append(f"{c.first} vs {c.second}: {c.max_abs:.3g}{where}")
        if not report.counts_agree:
            problems.append(f"counts {report.counts}, checker {report.expected}")
        problems += report.shape_mismatches
        problems += import_round_trip(spec, weights, tolerance, index)
        if problems:
            outcome.failure = "; ".join(problems)
    except Exception:
        outcome.failure = traceback.format_exc(limit=8)
    finally:
        outcome.seconds = time.perf_counter() - started
    return outcome


# --------------------------------------------------------------------------------------------
# Workers


def _start_worker(onednn: bool) -> None:
    """Before TensorFlow loads: oneDNN on or off, and one thread per framework, since the
    campaign runs a worker per core."""
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if onednn else "0"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ["OMP_NUM_THREADS"] = "1"
    import warnings

    warnings.filterwarnings("ignore", message="You are using a softmax over axis")
    import tensorflow as tf
    import torch

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    torch.set_num_threads(1)


def _run_one(seed: str, index: int, onednn: bool) -> dict[str, Any]:
    import keras

    keras.backend.clear_session()
    outcome = examine(spec_text(seed, index), index)
    return {**outcome.__dict__, "onednn": onednn}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--specs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", default=None, help="the campaign's seed (default: random)")
    parser.add_argument("--output", default="runs/campaign")
    parser.add_argument("--first", type=int, default=0, help="start at spec N (to replay)")
    args = parser.parse_args(argv)
    seed = args.seed or str(random.SystemRandom().randrange(2**32))
    output = Path(args.output)
    (output / "failures").mkdir(parents=True, exist_ok=True)
    print(f"campaign seed {seed}: {args.specs} specs on {args.workers} workers", flush=True)
    layer_kinds()

    # multiprocessing.Pool rather than concurrent.futures: Python 3.11's ProcessPoolExecutor
    # can hang when workers retire (max_tasks_per_child), and workers are retired here to give
    # back what TensorFlow keeps between models.
    context = get_context("spawn")
    halves = [False, True] if args.workers > 1 else [False]
    pools = {
        onednn: context.Pool(
            max(1, args.workers // len(halves)),
            initializer=_start_worker,
            initargs=(onednn,),
            maxtasksperchild=100,
        )
        for onednn in halves
    }
    started = time.perf_counter()
    pending = []
    for index in range(args.first, args.first + args.specs):
        onednn = halves[index % len(halves)]
        pending.append(pools[onednn].apply_async(_run_one, (seed, index, onednn)))
    results = []
    tried = accepted = refused = failed = 0
    codes: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    forms: Counter[str] = Counter()
    for task in pending:
        try:
            result = task.get(timeout=600)
        except Exception as error:  # a hang, or a crash in native code
            result = {"index": -1, "text": "", "accepted": False, "failure": repr(error)}
        results.append(result)
        tried += 1
        if result.get("accepted"):
            accepted += 1
            kinds.update(result["kinds"])
            forms.update(f for f, pattern in FORMS.items() if re.search(pattern, result["text"]))
        else:
            refused += 1
            codes.update(result.get("codes", []))
        if result.get("failure"):
            failed += 1
            path = output / "failures" / f"{result['index']:05d}.cnn"
            comment = "".join(f"# {line}\n" for line in str(result["failure"]).splitlines())
            onednn_note = f"# oneDNN {'on' if result.get('onednn') else 'off'}\n"
            path.write_text(comment + onednn_note + result["text"], encoding="utf-8")
            print(f"FAILED spec {result['index']}: {str(result['failure'])[:300]}", flush=True)
        if tried % 100 == 0:
            print(
                f"{tried} tried, {accepted} accepted, {refused} refused, {failed} failed "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    for pool in pools.values():
        pool.close()
        pool.join()
    elapsed = time.perf_counter() - started
    from cnnspec.registry import join_kinds

    all_kinds = sorted({*layer_kinds(), *join_kinds()})
    summary = {
        "seed": seed,
        "tried": tried,
        "accepted": accepted,
        "refused": refused,
        "failures": failed,
        "seconds": round(elapsed, 1),
        "refusal_codes": dict(codes.most_common()),
        "accepted_specs_per_kind": {k: kinds[k] for k in all_kinds},
        "kinds_never_accepted": [k for k in all_kinds if not kinds[k]],
        "accepted_specs_per_form": {f: forms[f] for f in FORMS},
        "forms_never_accepted": [f for f in FORMS if not forms[f]],
    }
    (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (output / "results.json").write_text(json.dumps(results) + "\n")
    print(json.dumps(summary, indent=2))
    uncovered = summary["kinds_never_accepted"] or summary["forms_never_accepted"]
    return 1 if failed or uncovered else 0


if __name__ == "__main__":
    sys.exit(main())
