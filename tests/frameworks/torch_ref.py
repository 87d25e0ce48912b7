"""A cnnspec `Graph` as a PyTorch module (NCHW), built layer by layer from the layer arguments.

Test-only reference: it reads `node.kind`, `node.layer` (the layer's arguments) and `node.inputs`
and nothing the checker computed (`output_shape`, `params`). Input channel and feature counts
come from PyTorch itself: the builder pushes a dummy tensor through each module as it creates
it, so every shape is PyTorch's own. The semantic traps are handled on purpose:

- TF-style `padding=same` (also with stride > 1 and even kernels) is explicit asymmetric zero
  padding, the extra pixel at the bottom/right, in front of a padding-free convolution;
  PyTorch's `padding='same'` refuses stride > 1.
- `maxpool(padding=same)` pads with -inf; `avgpool(padding=same)` leaves the padding out of
  the average (Keras semantics, like `count_include_pad=False`) by dividing the window sum of the
  zero-padded input by the window sum of a zero-padded mask of ones.
- BatchNorm takes `eps=epsilon` and `momentum=1 - momentum` (PyTorch's inverse convention).
- `flatten()` flattens in Keras's channels-last order (NHWC), so a following Linear sees the
  same feature order as Keras's Dense; `dense` on an (H, W, C) tensor acts on the channels.
- Softmax runs over the channel axis (dim 1), which is Keras's last axis.

`ReferenceNet.trace(x)` returns every node's output; `node_shapes()` gives them as (H, W, C)
or (C,) tuples, the checker's layout, for comparison.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cnnspec.ir import Graph, Node
from cnnspec.registry import LayerArgs


def same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's SAME padding for one axis: (before, after), the odd pixel after."""
    out = -(-size // stride)
    extent = dilation * (kernel - 1) + 1
    total = max((out - 1) * stride + extent - size, 0)
    return total // 2, total - total // 2


def _pad_same(
    x: torch.Tensor,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    value: float = 0.0,
) -> torch.Tensor:
    top, bottom = same_pads(x.shape[2], kernel[0], stride[0], dilation[0])
    left, right = same_pads(x.shape[3], kernel[1], stride[1], dilation[1])
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


class Conv(nn.Module):
    """conv2d / depthwise_conv2d with Keras padding semantics and an optional activation."""

    def __init__(self, conv: nn.Conv2d, padding: str | int, activation: nn.Module | None):
        super().__init__()
        self.conv = conv
        self.padding = padding
        self.activation = activation if activation is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        if self.padding == "same":
            x = _pad_same(x, c.kernel_size, c.stride, c.dilation)  # type: ignore[arg-type]
        elif isinstance(self.padding, int) and self.padding:
            p = self.padding
            x = F.pad(x, (p, p, p, p))
        return self.activation(c(x))


class Pool(nn.Module):
    """maxpool / avgpool with Keras `same` semantics."""

    def __init__(self, kind: str, pool: tuple[int, int], stride: tuple[int, int], padding: str):
        super().__init__()
        self.kind, self.pool, self.stride, self.padding = kind, pool, stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ones = (1, 1)
        if self.kind == "maxpool":
            if self.padding == "same":
                x = _pad_same(x, self.pool, self.stride, ones, value=float("-inf"))
            return F.max_pool2d(x, self.pool, self.stride)
        if self.padding != "same":
            return F.avg_pool2d(x, self.pool, self.stride)
        mask = torch.ones_like(x[:, :1])
        total = F.avg_pool2d(_pad_same(x, self.pool, self.stride, ones), self.pool, self.stride)
        count = F.avg_pool2d(_pad_same(mask, self.pool, self.stride, ones), self.pool, self.stride)
        return total / count


class GlobalPool(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(2, 3)) if self.kind == "global_max_pool" else x.mean(dim=(2, 3))


class FlattenNHWC(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.permute(0, 2, 3, 1)
        return x.flatten(1)


class Dense(nn.Module):
    """A Linear over the last Keras axis: the channels, also of an NCHW tensor; then the
    activation, which sees channels on dim 1 like every other module here."""

    def __init__(self, linear: nn.Linear, activation: nn.Module | None):
        super().__init__()
        self.linear = linear
        self.activation = activation if activation is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = self.linear(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        else:
            x = self.linear(x)
        return self.activation(x)


class Add(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class Concat(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=1)  # channels, whether (N, C) or (N, C, H, W)


class Multiply(nn.Module):
    """Keras broadcasts a (N, C) gate against an (N, H, W, C) map: here (N, C, 1, 1)."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        rank = max(x.dim() for x in xs)
        out = None
        for x in xs:
            x = x.reshape(*x.shape, *([1] * (rank - x.dim())))
            out = x if out is None else out * x
        assert out is not None
        return out


class PatchEmbed(nn.Module):
    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)  # (B, D, H', W'), the positions row by row
        return y.reshape(y.shape[0], y.shape[1], -1).permute(0, 2, 1)


class ClassToken(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.token = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.token.repeat(x.shape[0], 1, 1), x], dim=1)


class PositionEmbedding(nn.Module):
    def __init__(self, count: int, dim: int):
        super().__init__()
        self.table = nn.Parameter(torch.zeros(1, count, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.table


class SelfAttention(nn.Module):
    """Multi-head self-attention written out: softmax(q k^T / sqrt(d)) v per head."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, count, dim = x.shape
        size = dim // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, count, self.heads, size).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        weights = torch.softmax(q @ k.transpose(-1, -2) / size**0.5, dim=-1)
        context = (weights @ v).transpose(1, 2).reshape(batch, count, dim)
        return self.out(context)


class TokenPool(nn.Module):
    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0] if self.mode == "class" else x.mean(dim=1)


class LayerNormLast(nn.Module):
    """Layer norm over Keras's last axis: the channels of an NCHW map."""

    def __init__(self, norm: nn.LayerNorm):
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.norm(x)


def activation_module(act: LayerArgs | None) -> nn.Module | None:
    if act is None:
        return None
    table: dict[str, Callable[[], nn.Module]] = {
        "relu": nn.ReLU,
        "relu6": nn.ReLU6,
        "leaky_relu": lambda: nn.LeakyReLU(act.alpha),
        "elu": lambda: nn.ELU(act.alpha),
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "softmax": lambda: nn.Softmax(dim=1),
        "gelu": lambda: nn.GELU(approximate="tanh" if act.approximate else "none"),
        "swish": nn.SiLU,
    }
    return table[act.kind]()


def make_module(node: Node, inputs: list[torch.Tensor]) -> nn.Module:
    """The PyTorch module of one node, sized from its actual input tensors (NCHW or NC)."""
    a, kind = node.layer, node.kind
    x = inputs[0]
    if kind == "add":
        return Add()
    if kind == "concat":
        return Concat()
    if kind == "multiply":
        return Multiply()
    if kind == "zero_pad":
        (top, bottom), (left, right) = a.pads(to_hwc(x.shape))
        return nn.ZeroPad2d((left, right, top, bottom))
    if kind in ("conv2d", "depthwise_conv2d"):
        c_in = x.shape[1]
        depthwise = kind == "depthwise_conv2d"
        conv = nn.Conv2d(
            c_in,
            c_in * a.depth_multiplier if depthwise else a.filters,
            kernel_size=a.kernel,
            stride=a.stride,
            dilation=a.dilation,
            groups=c_in if depthwise else 1,
            bias=a.use_bias,
        )
        return Conv(conv, a.padding, activation_module(a.activation))
    if kind == "separable_conv2d":
        # Keras's SeparableConv2D: a depthwise convolution (padded as Keras pads), no bias,
        # then a 1x1 convolution with the bias and the activation.
        c_in = x.shape[1]
        middle = c_in * a.depth_multiplier
        depthwise = nn.Conv2d(
            c_in, middle, a.kernel, a.stride, dilation=a.dilation, groups=c_in, bias=False
        )
        pointwise = nn.Conv2d(middle, a.filters, 1, bias=a.use_bias)
        return nn.Sequential(
            Conv(depthwise, a.padding, None), Conv(pointwise, 0, activation_module(a.activation))
        )
    if kind in ("maxpool", "avgpool"):
        return Pool(kind, a.pool, a.strides, a.padding)
    if kind in ("global_avg_pool", "global_max_pool"):
        return GlobalPool(kind)
    if kind == "batchnorm":
        norm = nn.BatchNorm2d if x.dim() == 4 else nn.BatchNorm1d
        return norm(x.shape[1], eps=a.epsilon, momentum=1 - a.momentum)
    if kind == "dropout":
        return nn.Dropout(a.rate)
    if kind == "spatial_dropout":
        return nn.Dropout2d(a.rate)
    if kind == "flatten":
        return FlattenNHWC()
    if kind == "dense":
        linear = nn.Linear(x.shape[1] if x.dim() == 4 else x.shape[-1], a.units, bias=a.use_bias)
        return Dense(linear, activation_module(a.activation))
    if kind == "patch_embed":
        return PatchEmbed(nn.Conv2d(x.shape[1], a.dim, a.patch, stride=a.patch))
    if kind == "class_token":
        return ClassToken(x.shape[-1])
    if kind == "position_embedding":
        return PositionEmbedding(x.shape[1], x.shape[2])
    if kind == "attention":
        return SelfAttention(x.shape[-1], a.heads)
    if kind == "layer_norm":
        return LayerNormLast(
            nn.LayerNorm(x.shape[1] if x.dim() == 4 else x.shape[-1], eps=a.epsilon)
        )
    if kind == "token_pool":
        return TokenPool(a.mode)
    if a.is_activation:
        act = activation_module(a)
        assert act is not None
        return act
    raise NotImplementedError(f"no PyTorch reference for layer kind {kind!r}")


def to_hwc(shape: torch.Size) -> tuple[int, ...]:
    """A PyTorch activation's shape without the batch axis, in the checker's (H, W, C) order."""
    dims = tuple(shape[1:])
    return (dims[1], dims[2], dims[0]) if len(dims) == 3 else dims


class ReferenceNet(nn.Module):
    def __init__(self, graph: Graph):
        super().__init__()
        assert graph.input_shape is not None and graph.output is not None
        self.input_shape = graph.input_shape
        self.output = graph.output
        self.wiring: list[tuple[str, tuple[str, ...]]] = []
        self.nodes = nn.ModuleDict()
        values = {Graph.INPUT: self.dummy_input()}
        with torch.no_grad():
            for node in graph.nodes:
                args = [values[source] for source in node.inputs]
                module = make_module(node, args).eval()
                self.nodes[node.name] = module
                self.wiring.append((node.name, node.inputs))
                values[node.name] = module(*args)

    def dummy_input(self, batch: int = 2) -> torch.Tensor:
        h, w, c = self.input_shape
        return torch.randn(batch, c, h, w)

    def trace(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every node's output for the NCHW input `x`, keyed by node name."""
        values = {Graph.INPUT: x}
        for name, sources in self.wiring:
            values[name] = self.nodes[name](*(values[s] for s in sources))
        return values

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trace(x)[self.output]

    def node_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each node's output shape on a dummy input, as (H, W, C) or (C,)."""
        self.eval()
        with torch.no_grad():
            values = self.trace(self.dummy_input())
        return {name: to_hwc(values[name].shape) for name, _ in self.wiring}

    def node_params(self, name: str) -> tuple[int, int]:
        """(parameters, buffers) of a node's module; buffers leave out BatchNorm's step counter
        (`num_batches_tracked`), which Keras has no counterpart for."""
        module = self.nodes[name]
        params = sum(p.numel() for p in module.parameters())
        buffers = sum(
            b.numel()
            for key, b in module.named_buffers()
            if not key.endswith("num_batches_tracked")
        )
        return params, buffers


def build_torch(graph: Graph) -> ReferenceNet:
    """The graph as a PyTorch module whose `trace` records every node's output."""
    return ReferenceNet(graph)


def copy_keras_weights(net: ReferenceNet, graph: Graph, model: object) -> None:
    """Load a Keras reference model's weights into `net`, so both compute the same function.

    Keras kernels are (kh, kw, in, out) and PyTorch's (out, in, kh, kw); a depthwise kernel
    (kh, kw, in, multiplier) puts output channel i * multiplier + m where PyTorch's grouped
    convolution does; a Dense kernel is the transpose of a Linear weight.
    """
    for node in graph.nodes:
        weights = [torch.from_numpy(w.numpy()) for w in model.get_layer(node.name).weights]
        if not weights:
            continue
        module = net.nodes[node.name]
        if node.kind == "patch_embed":
            module = module.conv
        if node.kind in ("conv2d", "depthwise_conv2d", "patch_embed"):
            target = module if node.kind == "patch_embed" else module.conv
            kernel = weights[0]
            if node.kind != "depthwise_conv2d":
                kernel = kernel.permute(3, 2, 0, 1)
            else:
                kh, kw = kernel.shape[:2]
                kernel = kernel.reshape(kh, kw, -1).permute(2, 0, 1).unsqueeze(1)
            tensors = [kernel, *weights[1:]]
            slots = [target.weight, target.bias]
        elif node.kind == "separable_conv2d":
            depthwise, pointwise = module[0].conv, module[1].conv
            kh, kw = weights[0].shape[:2]
            tensors = [
                weights[0].reshape(kh, kw, -1).permute(2, 0, 1).unsqueeze(1),
                weights[1].permute(3, 2, 0, 1),
                *weights[2:],
            ]
            slots = [depthwise.weight, pointwise.weight, pointwise.bias]
        elif node.kind == "dense":
            linear = module.linear
            tensors = [weights[0].T, *weights[1:]]
            slots = [linear.weight, linear.bias]
        elif node.kind == "batchnorm":
            tensors = weights
            slots = [module.weight, module.bias, module.running_mean, module.running_var]
        elif node.kind == "layer_norm":
            tensors = weights
            slots = [module.norm.weight, module.norm.bias]
        elif node.kind in ("class_token", "position_embedding"):
            tensors = weights
            slots = [module.token if node.kind == "class_token" else module.table]
        elif node.kind == "attention":
            # Keras's (D, heads, size) and (heads, size, D) kernels are Linear weights
            # transposed; its (heads, size) biases are (D,) vectors.
            dim = weights[0].shape[0]
            tensors = [
                w.reshape(dim, dim).T if i % 2 == 0 and i < 6 else w.reshape(dim)
                for i, w in enumerate(weights[:6])
            ]
            tensors += [weights[6].reshape(dim, dim).T, weights[7]]
            slots = [
                p
                for linear in (module.query, module.key, module.value, module.out)
                for p in (linear.weight, linear.bias)
            ]
        else:
            raise NotImplementedError(f"no weight transfer for layer kind {node.kind!r}")
        present = [slot for slot in slots if slot is not None]
        with torch.no_grad():
            for slot, value in zip(present, tensors, strict=True):
                assert slot.shape == value.shape, node.name
                slot.copy_(value)
