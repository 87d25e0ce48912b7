"""A cnnspec `Graph` as a Keras functional model, built layer by layer from the layer arguments.

Test-only reference: it reads `node.kind`, `node.layer` (the layer's arguments) and `node.inputs`
and nothing the checker computed (`output_shape`, `params`), so Keras infers every shape and
creates every weight itself. Each node becomes one Keras layer named `node.name`; an integer
padding p on a convolution adds a `ZeroPadding2D(p)` layer named `<node>_pad` in front of a
`valid` convolution, so the named layer's output is still the node's output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import layers

from cnnspec.ir import Graph, Node
from cnnspec.registry import LayerArgs


def activation_fn(act: LayerArgs | None) -> Callable[[Any], Any] | None:
    """The Keras activation function for an `activation=` argument (None for linear)."""
    if act is None:
        return None
    ops = keras.activations
    table: dict[str, Callable[[Any], Any]] = {
        "relu": ops.relu,
        "relu6": ops.relu6,
        "leaky_relu": lambda x: ops.leaky_relu(x, negative_slope=act.alpha),
        "elu": lambda x: ops.elu(x, alpha=act.alpha),
        "sigmoid": ops.sigmoid,
        "tanh": ops.tanh,
        "softmax": ops.softmax,
        "gelu": lambda x: ops.gelu(x, approximate=act.approximate),
        "swish": ops.silu,
    }
    return table[act.kind]


def activation_layer(act: LayerArgs, name: str) -> layers.Layer:
    """An activation used as a layer, `relu()`, as its Keras layer."""
    kind = act.kind
    if kind == "relu":
        return layers.ReLU(name=name)
    if kind == "relu6":
        return layers.ReLU(max_value=6.0, name=name)
    if kind == "leaky_relu":
        return layers.LeakyReLU(negative_slope=act.alpha, name=name)
    if kind == "elu":
        return layers.ELU(alpha=act.alpha, name=name)
    if kind == "softmax":
        return layers.Softmax(name=name)
    fn = activation_fn(act)
    assert fn is not None
    return layers.Activation(fn, name=name)


def _regularizer(l2: float) -> keras.regularizers.Regularizer | None:
    return keras.regularizers.L2(l2) if l2 else None


def _conv(node: Node, x: Any) -> Any:
    a = node.layer
    padding = a.padding
    if isinstance(padding, int):
        if padding:
            x = layers.ZeroPadding2D(padding, name=f"{node.name}_pad")(x)
        padding = "valid"
    common: dict[str, Any] = {
        "kernel_size": a.kernel,
        "strides": a.stride,
        "padding": padding,
        "dilation_rate": a.dilation,
        "activation": activation_fn(a.activation),
        "use_bias": a.use_bias,
        "name": node.name,
    }
    if node.kind == "conv2d":
        return layers.Conv2D(a.filters, kernel_regularizer=_regularizer(a.l2), **common)(x)
    if node.kind == "separable_conv2d":
        return layers.SeparableConv2D(a.filters, depth_multiplier=a.depth_multiplier, **common)(x)
    if a.stride[0] != a.stride[1]:
        # TensorFlow's CPU kernel (without oneDNN) refuses unequal depthwise strides: pad for
        # the strided window, convolve with stride 1, keep every stride-th row and column.
        if padding == "same":
            pads = [
                same_pads(int(size), k, s, 1)
                for size, k, s in zip(x.shape[1:3], a.kernel, a.stride, strict=True)
            ]
            x = layers.ZeroPadding2D(tuple(pads), name=f"{node.name}_pad")(x)
        common = {**common, "strides": (1, 1), "padding": "valid"}
        return _Subsampled(a.stride, depth_multiplier=a.depth_multiplier, **common)(x)
    return layers.DepthwiseConv2D(
        depth_multiplier=a.depth_multiplier,
        depthwise_regularizer=_regularizer(a.l2),
        **common,
    )(x)


def same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's `same` padding along one axis, (before, after), written out anew here."""
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


class _Subsampled(layers.DepthwiseConv2D):
    """A stride-1 depthwise convolution keeping every `step`-th row and column."""

    def __init__(self, step: tuple[int, int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.step = step

    def call(self, inputs: Any) -> Any:
        return super().call(inputs)[:, :: self.step[0], :: self.step[1], :]

    def compute_output_shape(self, input_shape: Any) -> Any:
        batch, height, width, channels = super().compute_output_shape(input_shape)
        return (batch, -(-height // self.step[0]), -(-width // self.step[1]), channels)


class _ClassToken(layers.Layer):
    """A learnt token before the others (random from the start, so that it shows)."""

    def build(self, input_shape: Any) -> None:
        self.token = self.add_weight(shape=(1, 1, input_shape[-1]), initializer="random_normal")

    def call(self, inputs: Any) -> Any:
        batch = keras.ops.shape(inputs)[0]
        return keras.ops.concatenate([keras.ops.tile(self.token, (batch, 1, 1)), inputs], axis=1)


class _PositionEmbedding(layers.Layer):
    def build(self, input_shape: Any) -> None:
        self.table = self.add_weight(shape=(1, *input_shape[1:]), initializer="random_normal")

    def call(self, inputs: Any) -> Any:
        return inputs + self.table


class _SelfAttention(layers.Layer):
    """Keras's own MultiHeadAttention, as self-attention (query, key and value the input),
    its biases random from the start."""

    def __init__(self, heads: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.heads = heads

    def build(self, input_shape: Any) -> None:
        self.attention = layers.MultiHeadAttention(
            self.heads, input_shape[-1] // self.heads, bias_initializer="random_normal"
        )
        self.attention.build(input_shape, input_shape)

    def call(self, inputs: Any) -> Any:
        return self.attention(inputs, inputs)


class _FirstToken(layers.Layer):
    def call(self, inputs: Any) -> Any:
        return inputs[:, 0, :]


def _layer(node: Node) -> layers.Layer:
    """The Keras layer of a single-input node other than a convolution."""
    a, name = node.layer, node.name
    kind = node.kind
    if kind in ("maxpool", "avgpool"):
        pool = layers.MaxPooling2D if kind == "maxpool" else layers.AveragePooling2D
        return pool(pool_size=a.pool, strides=a.strides, padding=a.padding, name=name)
    if kind == "global_avg_pool":
        return layers.GlobalAveragePooling2D(name=name)
    if kind == "global_max_pool":
        return layers.GlobalMaxPooling2D(name=name)
    if kind == "batchnorm":
        return layers.BatchNormalization(epsilon=a.epsilon, momentum=a.momentum, name=name)
    if kind == "dropout":
        return layers.Dropout(a.rate, name=name)
    if kind == "spatial_dropout":
        return layers.SpatialDropout2D(a.rate, name=name)
    if kind == "flatten":
        return layers.Flatten(name=name)
    if kind == "dense":
        return layers.Dense(
            a.units,
            activation=activation_fn(a.activation),
            use_bias=a.use_bias,
            kernel_regularizer=_regularizer(a.l2),
            name=name,
        )
    if kind == "layer_norm":
        return layers.LayerNormalization(epsilon=a.epsilon, name=name)
    if kind == "class_token":
        return _ClassToken(name=name)
    if kind == "position_embedding":
        return _PositionEmbedding(name=name)
    if kind == "attention":
        return _SelfAttention(a.heads, name=name)
    if kind == "token_pool":
        if a.mode == "mean":
            return layers.GlobalAveragePooling1D(name=name)
        return _FirstToken(name=name)
    if a.is_activation:
        return activation_layer(a, name)
    raise NotImplementedError(f"no Keras reference for layer kind {kind!r}")


def build_keras(graph: Graph) -> keras.Model:
    """The graph as a Keras functional model; layer `node.name` computes node `node.name`."""
    assert graph.input_shape is not None and graph.output is not None
    inputs = keras.Input(shape=graph.input_shape, name=Graph.INPUT)
    tensors: dict[str, Any] = {Graph.INPUT: inputs}
    for node in graph.nodes:
        args = [tensors[source] for source in node.inputs]
        if node.kind == "add":
            out = layers.Add(name=node.name)(args)
        elif node.kind == "concat":
            out = layers.Concatenate(name=node.name)(args)
        elif node.kind == "multiply":
            out = layers.Multiply(name=node.name)(args)
        elif node.kind == "zero_pad":
            (x,) = args
            pads = node.layer.pads(tuple(x.shape[1:]))
            out = layers.ZeroPadding2D(pads, name=node.name)(x)
        elif node.kind in ("conv2d", "depthwise_conv2d", "separable_conv2d"):
            (x,) = args
            out = _conv(node, x)
        elif node.kind == "patch_embed":
            # As the Keras script writes it: the convolution carries the node's name and its
            # weights, and `<node>_tokens` gives its output (see output_name).
            (x,) = args
            a = node.layer
            conv = layers.Conv2D(a.dim, a.patch, strides=a.patch, name=node.name)(x)
            out = layers.Reshape((-1, a.dim), name=f"{node.name}_tokens")(conv)
        else:
            (x,) = args
            out = _layer(node)(x)
        tensors[node.name] = out
    return keras.Model(inputs, tensors[graph.output], name=graph.name)


def weight_counts(weights: list[Any]) -> int:
    """The number of scalars in a list of Keras variables."""
    total = 0
    for w in weights:
        size = 1
        for d in w.shape:
            size *= int(d)
        total += size
    return total


def multi_head_weights(fused: list[Any], heads: int) -> list[Any]:
    """The Keras script's SelfAttention weights (nn.MultiheadAttention's: a (D, 3D) kernel
    to queries, keys and values, its bias, a (D, D) kernel out of the heads, its bias) as
    keras.layers.MultiHeadAttention holds the same function: (D, heads, size) kernels and
    (heads, size) biases for the query, the key and the value, then (heads, size, D)."""
    in_kernel, in_bias, out_kernel, out_bias = fused
    dim = out_bias.shape[0]
    size = dim // heads
    weights = []
    for part in range(3):
        columns = slice(part * dim, (part + 1) * dim)
        weights.append(in_kernel[:, columns].reshape(dim, heads, size))
        weights.append(in_bias[columns].reshape(heads, size))
    return [*weights, out_kernel.reshape(heads, size, dim), out_bias]


def output_name(model: keras.Model, name: str) -> str:
    """The layer that gives node `name`'s output: the node's own, or `<node>_tokens` after
    patch_embed's convolution (in the reference and in the Keras script alike)."""
    known = {layer.name for layer in model.layers}
    return f"{name}_tokens" if f"{name}_tokens" in known else name


def node_shape(model: keras.Model, name: str) -> tuple[int, ...]:
    """Keras's symbolic output shape of node `name`, without the batch axis."""
    return tuple(int(d) for d in model.get_layer(output_name(model, name)).output.shape[1:])


def node_outputs(model: keras.Model, graph: Graph, x: Any) -> dict[str, Any]:
    """Every node's output (numpy, inference mode) for the NHWC batch `x`, keyed by name."""
    names = [node.name for node in graph.nodes]
    probe = keras.Model(model.input, [model.get_layer(output_name(model, n)).output for n in names])
    outputs = probe(x, training=False)
    return {n: keras.ops.convert_to_numpy(out) for n, out in zip(names, outputs, strict=True)}
