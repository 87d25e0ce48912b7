"""The Keras-specific code of the generated Keras scripts: layer helpers, the image
folder reader, the tf.data pipelines, training phase by phase with a resume point,
evaluation, the weights in cnnspec's layout, a backbone's weights, tracking, the
distribution strategies and main(). Copied into the scripts by name (see
cnnspec.backends.runtime), never imported by cnnspec: the imports, the script's
constants and the stand-ins below are for the linter, the type checker and the unit
tests (tests/runtime/test_keras.py).

What the script generates from the spec (build_model, build_augmentation, load_data) and
the variables that slots make stand in here as `Any`. Keras's private API is used in one
part only, "Private API" below, behind a check of the installed versions."""

from __future__ import annotations

import collections
import json
import os
import pickle
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers
from safetensors.numpy import load_file, save_file
from sklearn.metrics import accuracy_score, classification_report

from cnnspec.runtime.common import (
    DataError,
    Interrupted,
    check_not_empty,
    discard_unstarted,
    interrupted,
    mlflow_run,
    parse_args,
    read_image,
    run_folder,
    saved_readable,
    subset,
    torchvision_tensors,
    weights_to_load,
)
from cnnspec.runtime.rules import (
    from_keras,
    learning_rate,
    same_pads,
    to_keras,
    window_coords,
    window_index,
    window_mask,
    window_shift,
)
from cnnspec.runtime.script import (
    BACKBONE,
    BACKBONE_LAYERS,
    BACKBONE_TOP,
    BATCH_SIZE,
    CLASS_NAMES,
    DEFAULT_OUTPUT_DIR,
    FIXED_INPUT_SIZE,
    FLATTENED_FROM,
    INPUT_SHAPE,
    PHASES,
    RESCALE,
    RESUME,
    SEED,
    SPEC_NAME,
    TORCHVISION_URL,
    WEIGHT_LAYOUT,
)

# What the script generates from the spec (cnnspec.backends.keras): stand-ins.
build_model: Any = None
build_augmentation: Any = None
load_data: Any = None


# --- Layer helpers, copied where a layer of the spec needs them (HELPERS)


@keras.saving.register_keras_serializable(package="cnnspec")
def gelu_tanh(x):
    """GELU with the tanh approximation (Keras's "gelu" string is the exact form)."""
    return keras.activations.gelu(x, approximate=True)


@keras.saving.register_keras_serializable(package="cnnspec")
class StridedDepthwiseConv2D(layers.DepthwiseConv2D):
    """A depthwise convolution with unequal strides, which TensorFlow's CPU kernel
    refuses: the stride-1 convolution sampled at every `subsample`-th row and column,
    which is the same numbers."""

    def __init__(self, kernel_size, subsample=(1, 1), **kwargs):
        super().__init__(kernel_size, **kwargs)
        self.subsample = tuple(subsample)

    def call(self, inputs):
        rows, columns = self.subsample
        return super().call(inputs)[:, ::rows, ::columns, :]

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = super().compute_output_shape(input_shape)
        rows, columns = self.subsample
        height = None if height is None else -(-height // rows)
        width = None if width is None else -(-width // columns)
        return (batch, height, width, channels)

    def get_config(self):
        return {**super().get_config(), "subsample": self.subsample}


@keras.saving.register_keras_serializable(package="cnnspec")
class PaddedMaxPooling2D(layers.MaxPooling2D):
    """Max pooling over the input padded with -inf by `pads`, ((top, bottom), (left,
    right)): PyTorch's max_pool2d padding and ceil_mode, which Keras's `same` and
    `valid` cannot express. The padding never wins the max."""

    def __init__(self, pool_size, pads=((0, 0), (0, 0)), **kwargs):
        super().__init__(pool_size, **kwargs)
        self.pads = tuple(tuple(int(p) for p in pair) for pair in pads)

    def call(self, inputs):
        (top, bottom), (left, right) = self.pads
        padded = keras.ops.pad(
            inputs,
            ((0, 0), (top, bottom), (left, right), (0, 0)),
            constant_values=float("-inf"),
        )
        return super().call(padded)

    def compute_output_shape(self, input_shape):
        (top, bottom), (left, right) = self.pads
        batch, height, width, channels = input_shape
        height = None if height is None else height + top + bottom
        width = None if width is None else width + left + right
        return super().compute_output_shape((batch, height, width, channels))

    def get_config(self):
        return {**super().get_config(), "pads": self.pads}


@keras.saving.register_keras_serializable(package="cnnspec")
class LayerScale(layers.Layer):
    """ConvNeXt's layer scale: the input times a learnt scale per channel (`gamma`),
    which starts at `init_values`."""

    def __init__(self, init_values=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.init_values = init_values

    def build(self, input_shape):
        self.gamma = self.add_weight(
            name="gamma",
            shape=(input_shape[-1],),
            initializer=keras.initializers.Constant(self.init_values),
        )

    def call(self, inputs):
        return inputs * self.gamma

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "init_values": self.init_values}


@keras.saving.register_keras_serializable(package="cnnspec")
class ChannelShuffle(layers.Layer):
    """ShuffleNet's channel shuffle: the channels, seen as `groups` groups, are
    interleaved (channel j of group g moves to j * groups + g)."""

    def __init__(self, groups, **kwargs):
        super().__init__(**kwargs)
        self.groups = groups

    def call(self, inputs):
        shape = keras.ops.shape(inputs)
        x = keras.ops.reshape(
            inputs, (-1, self.groups, inputs.shape[-1] // self.groups)
        )
        return keras.ops.reshape(keras.ops.transpose(x, (0, 2, 1)), shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


@keras.saving.register_keras_serializable(package="cnnspec")
class ChannelSlice(layers.Layer):
    """Channels [start, stop) of a map, or features [start, stop) of a vector: one part
    of a channel split (ShuffleNetV2's, GhostNet's)."""

    def __init__(self, start, stop, **kwargs):
        super().__init__(**kwargs)
        self.start = start
        self.stop = stop

    def call(self, inputs):
        return inputs[..., self.start : self.stop]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.stop - self.start)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}


@keras.saving.register_keras_serializable(package="cnnspec")
class ClassToken(layers.Layer):
    """A ViT's class token: a learnt vector put before the tokens of each example."""

    def build(self, input_shape):
        self.token = self.add_weight(
            name="token", shape=(1, 1, input_shape[-1]), initializer="zeros"
        )

    def call(self, inputs):
        shape = (keras.ops.shape(inputs)[0], 1, inputs.shape[-1])
        token = keras.ops.broadcast_to(keras.ops.cast(self.token, inputs.dtype), shape)
        return keras.ops.concatenate([token, inputs], axis=1)

    def compute_output_shape(self, input_shape):
        count = None if input_shape[1] is None else input_shape[1] + 1
        return (input_shape[0], count, input_shape[2])


@keras.saving.register_keras_serializable(package="cnnspec")
class PositionEmbedding(layers.Layer):
    """A ViT's learnt position embeddings, added to the tokens."""

    def build(self, input_shape):
        self.embedding = self.add_weight(
            name="embedding",
            shape=(1, *input_shape[1:]),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )

    def call(self, inputs):
        return inputs + keras.ops.cast(self.embedding, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="cnnspec")
class SelfAttention(layers.Layer):
    """Multi-head self-attention over tokens, with torch.nn.MultiheadAttention's
    weights: one projection to the queries, keys and values of every head (in_proj),
    one out of the heads (out_proj)."""

    def __init__(self, num_heads, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads

    def build(self, input_shape):
        dim = input_shape[-1]
        self.in_proj_kernel = self.add_weight(
            name="in_proj_kernel", shape=(dim, 3 * dim)
        )
        self.in_proj_bias = self.add_weight(
            name="in_proj_bias", shape=(3 * dim,), initializer="zeros"
        )
        self.out_proj_kernel = self.add_weight(name="out_proj_kernel", shape=(dim, dim))
        self.out_proj_bias = self.add_weight(
            name="out_proj_bias", shape=(dim,), initializer="zeros"
        )

    def call(self, inputs):
        count, dim = keras.ops.shape(inputs)[1], inputs.shape[-1]
        qkv = keras.ops.matmul(inputs, self.in_proj_kernel) + self.in_proj_bias
        # (batch, N, 3, heads, size): the layout dot_product_attention takes per part.
        qkv = keras.ops.reshape(
            qkv, (-1, count, 3, self.num_heads, dim // self.num_heads)
        )
        query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        context = keras.ops.dot_product_attention(query, key, value)
        context = keras.ops.reshape(context, (-1, count, dim))
        return keras.ops.matmul(context, self.out_proj_kernel) + self.out_proj_bias

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads}


@keras.saving.register_keras_serializable(package="cnnspec")
class FirstToken(layers.Layer):
    """The first token of each example: a ViT's class token, which its head reads."""

    def call(self, inputs):
        return inputs[:, 0]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


@keras.saving.register_keras_serializable(package="cnnspec")
class WindowAttention(layers.Layer):
    """A Swin Transformer's shifted-window attention on an (H, W, C) map, with
    torchvision's ShiftedWindowAttention's tensors (qkv, proj, the relative-position
    bias table) and computation: the map padded to whole windows and rolled by the
    shift, attention within each window with a learnt bias per relative position
    (masked across the roll's seams), rolled back. The relative-position index and
    the mask are fixed tables (cnnspec.runtime.rules), built for the input's size.
    Version 2 is ShiftedWindowAttentionV2: cosine attention scaled by
    exp(logit_scale) (clamped at 100), the bias 16 * sigmoid of an MLP (cpb_mlp) on
    each offset's log-spaced coordinates (window_coords), and the key's third of
    qkv_bias zeroed as it computes."""

    def __init__(self, num_heads, size, shift, version=1, **kwargs):
        super().__init__(**kwargs)
        self.num_heads, self.size, self.shift = num_heads, tuple(size), tuple(shift)
        self.version = version

    def build(self, input_shape):
        height, width, dim = input_shape[1:]
        (wh, ww), count = self.size, self.size[0] * self.size[1]
        rows = (2 * wh - 1) * (2 * ww - 1)
        self.padded = (-(-height // wh) * wh, -(-width // ww) * ww)
        self.applied = window_shift((height, width), self.size, self.shift)
        self.qkv_kernel = self.add_weight(name="qkv_kernel", shape=(dim, 3 * dim))
        self.qkv_bias = self.add_weight(
            name="qkv_bias", shape=(3 * dim,), initializer="zeros"
        )
        self.proj_kernel = self.add_weight(name="proj_kernel", shape=(dim, dim))
        self.proj_bias = self.add_weight(
            name="proj_bias", shape=(dim,), initializer="zeros"
        )
        if self.version == 2:
            self.logit_scale = self.add_weight(
                name="logit_scale",
                shape=(self.num_heads, 1, 1),
                initializer=keras.initializers.Constant(np.log(10.0)),
            )
            self.cpb_mlp_0_kernel = self.add_weight(
                name="cpb_mlp_0_kernel", shape=(2, 512)
            )
            self.cpb_mlp_0_bias = self.add_weight(
                name="cpb_mlp_0_bias", shape=(512,), initializer="zeros"
            )
            self.cpb_mlp_2_kernel = self.add_weight(
                name="cpb_mlp_2_kernel", shape=(512, self.num_heads)
            )
            coords = np.array(window_coords(self.size), "float32").reshape(rows, 2)
            self.coords = keras.ops.convert_to_tensor(coords)
            # The key's third of qkv_bias is never used.
            keep = np.ones(3 * dim, "float32")
            keep[dim : 2 * dim] = 0
            self.keep = keras.ops.convert_to_tensor(keep)
        else:
            self.relative_position_bias_table = self.add_weight(
                name="relative_position_bias_table",
                shape=(rows, self.num_heads),
                initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            )
        # Constant tensors, not arrays: Keras converts an array again at every call.
        self.bias_index = keras.ops.convert_to_tensor(window_index(self.size), "int32")
        self.shift_mask = None
        if any(self.applied):
            mask = window_mask(self.padded, self.size, self.applied)
            mask = np.array(mask, "float32").reshape(1, -1, 1, count, count)
            self.shift_mask = keras.ops.convert_to_tensor(mask)

    def call(self, inputs):
        ops = keras.ops
        height, width, dim = inputs.shape[1:]
        (wh, ww), (ph, pw), (sh, sw) = self.size, self.padded, self.applied
        count, head, heads = wh * ww, dim // self.num_heads, self.num_heads
        x = ops.pad(inputs, ((0, 0), (0, ph - height), (0, pw - width), (0, 0)))
        if sh:
            x = ops.roll(x, -sh, axis=1)
        if sw:
            x = ops.roll(x, -sw, axis=2)
        x = ops.reshape(x, (-1, ph // wh, wh, pw // ww, ww, dim))
        x = ops.reshape(ops.transpose(x, (0, 1, 3, 2, 4, 5)), (-1, count, dim))
        qkv_bias = self.qkv_bias * self.keep if self.version == 2 else self.qkv_bias
        qkv = ops.matmul(x, self.qkv_kernel) + qkv_bias
        qkv = ops.transpose(
            ops.reshape(qkv, (-1, count, 3, heads, head)), (2, 0, 3, 1, 4)
        )
        query, key, value = qkv[0], qkv[1], qkv[2]
        if self.version == 2:
            query, key = self.unit_length(query), self.unit_length(key)
            scores = ops.matmul(query, ops.transpose(key, (0, 1, 3, 2)))
            scale = ops.exp(ops.minimum(self.logit_scale, float(np.log(100.0))))
            scores = scores * scale
            hidden = ops.matmul(self.coords, self.cpb_mlp_0_kernel)
            hidden = ops.relu(hidden + self.cpb_mlp_0_bias)
            table = ops.matmul(hidden, self.cpb_mlp_2_kernel)
        else:
            query = query * head**-0.5
            scores = ops.matmul(query, ops.transpose(key, (0, 1, 3, 2)))
            table = self.relative_position_bias_table
        bias = ops.take(table, self.bias_index, axis=0)
        bias = ops.transpose(ops.reshape(bias, (count, count, heads)), (2, 0, 1))
        if self.version == 2:
            bias = 16 * ops.sigmoid(bias)
        scores = scores + bias
        if self.shift_mask is not None:
            windows = self.shift_mask.shape[1]
            scores = ops.reshape(scores, (-1, windows, heads, count, count))
            scores = ops.reshape(scores + self.shift_mask, (-1, heads, count, count))
        x = ops.matmul(ops.softmax(scores, axis=-1), value)
        x = ops.reshape(ops.transpose(x, (0, 2, 1, 3)), (-1, count, dim))
        x = ops.matmul(x, self.proj_kernel) + self.proj_bias
        x = ops.reshape(x, (-1, ph // wh, pw // ww, wh, ww, dim))
        x = ops.reshape(ops.transpose(x, (0, 1, 3, 2, 4, 5)), (-1, ph, pw, dim))
        if sh:
            x = ops.roll(x, sh, axis=1)
        if sw:
            x = ops.roll(x, sw, axis=2)
        return x[:, :height, :width]

    def compute_output_shape(self, input_shape):
        return input_shape

    @staticmethod
    def unit_length(x):
        """x over its length along the last axis (at least 1e-12): F.normalize."""
        length = keras.ops.sqrt(keras.ops.sum(x * x, axis=-1, keepdims=True))
        return x / keras.ops.maximum(length, 1e-12)

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "size": self.size,
            "shift": self.shift,
            "version": self.version,
        }


@keras.saving.register_keras_serializable(package="cnnspec")
class PartitionAttention(layers.Layer):
    """MaxViT's partitioned attention on an (H, W, C) map, with torchvision's
    RelativePositionalMultiHeadAttention's tensors (to_qkv, merge, the
    relative-position bias table) and computation: the map cut into windows of
    `size` (or, as a grid, into size[0] x size[1] positions at a stride of H/size),
    attention within each with a learnt bias per relative position, the scores
    scaled by C^-0.5 (the whole channel count, as torchvision scales them), put back
    in place. The relative-position index is a fixed table (cnnspec.runtime.rules)."""

    def __init__(self, num_heads, size, grid=False, **kwargs):
        super().__init__(**kwargs)
        self.num_heads, self.size, self.grid = num_heads, tuple(size), grid

    def build(self, input_shape):
        dim = input_shape[-1]
        rows = (2 * self.size[0] - 1) * (2 * self.size[1] - 1)
        self.to_qkv_kernel = self.add_weight(name="to_qkv_kernel", shape=(dim, 3 * dim))
        self.to_qkv_bias = self.add_weight(
            name="to_qkv_bias", shape=(3 * dim,), initializer="zeros"
        )
        self.merge_kernel = self.add_weight(name="merge_kernel", shape=(dim, dim))
        self.merge_bias = self.add_weight(
            name="merge_bias", shape=(dim,), initializer="zeros"
        )
        self.relative_position_bias_table = self.add_weight(
            name="relative_position_bias_table",
            shape=(rows, self.num_heads),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        )
        # A constant tensor, not an array: Keras converts an array again at every call.
        self.bias_index = keras.ops.convert_to_tensor(window_index(self.size), "int32")

    def call(self, inputs):
        ops = keras.ops
        height, width, dim = inputs.shape[1:]
        (ph, pw), count, heads = self.size, self.size[0] * self.size[1], self.num_heads
        head, (gh, gw) = dim // heads, (height // ph, width // pw)
        # Windows split each axis into (groups, P), a grid into (P, groups); either way
        # the partitions come out as (B, groups, groups, P, P, C).
        if self.grid:
            split, perm, back = (ph, gh, pw, gw), (0, 2, 4, 1, 3, 5), (0, 3, 1, 4, 2, 5)
        else:
            split, perm, back = (gh, ph, gw, pw), (0, 1, 3, 2, 4, 5), (0, 1, 3, 2, 4, 5)
        x = ops.transpose(ops.reshape(inputs, (-1, *split, dim)), perm)
        x = ops.reshape(x, (-1, count, dim))
        qkv = ops.matmul(x, self.to_qkv_kernel) + self.to_qkv_bias
        qkv = ops.transpose(
            ops.reshape(qkv, (-1, count, 3, heads, head)), (2, 0, 3, 1, 4)
        )
        query, key, value = qkv[0], qkv[1], qkv[2]
        key = key * dim**-0.5
        scores = ops.matmul(query, ops.transpose(key, (0, 1, 3, 2)))
        bias = ops.take(self.relative_position_bias_table, self.bias_index, axis=0)
        bias = ops.transpose(ops.reshape(bias, (count, count, heads)), (2, 0, 1))
        x = ops.matmul(ops.softmax(scores + bias, axis=-1), value)
        x = ops.reshape(ops.transpose(x, (0, 2, 1, 3)), (-1, count, dim))
        x = ops.matmul(x, self.merge_kernel) + self.merge_bias
        x = ops.reshape(x, (-1, gh, gw, ph, pw, dim))
        return ops.reshape(ops.transpose(x, back), (-1, height, width, dim))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "size": self.size,
            "grid": self.grid,
        }


@keras.saving.register_keras_serializable(package="cnnspec")
class PatchMerge(layers.Layer):
    """torchvision's patch merging before its norm and reduction: each 2x2 square of
    positions one position of 4C channels, in torchvision's order; an odd height or
    width padded with zeros first."""

    def call(self, inputs):
        height, width = inputs.shape[1:3]
        x = keras.ops.pad(inputs, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)))
        parts = [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]]
        return keras.ops.concatenate(parts, axis=-1)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        return (batch, -(-height // 2), -(-width // 2), 4 * channels)


def same_padding(x, kernel, stride):
    """The zeros TensorFlow's `same` padding adds around x for this window, as
    ((top, bottom), (left, right)): same_pads along each axis, the odd pixel after."""
    return tuple(
        same_pads(size, window, step, 1)
        for size, window, step in zip(x.shape[1:3], kernel, stride, strict=True)
    )


# --- Data


def reading(size):
    """A tf.data map from a batch of (file, label) to a batch of (pixels, label),
    reading the files with read_image, as the PyTorch script reads them. A call reads
    a whole batch: Python's cost per call is paid once for many small images."""
    shape = (None, *size, INPUT_SHAPE[2])

    def read_all(paths):
        return np.stack([read_image(path.decode(), size) for path in paths])

    def read(paths, labels):
        pixels = tf.numpy_function(read_all, [paths], tf.uint8)
        return tf.ensure_shape(pixels, shape), labels

    return read


def read_failure(error):
    """read_image's one line of error, from the TensorFlow error that carries it."""
    said = error.message.split("DataError: ", 1)[1]
    return said.splitlines()[0]


def make_datasets(splits, batch_size=BATCH_SIZE, seed=SEED, image_size=None):
    """tf.data pipelines: shuffled, augmented training batches; plain validation
    and test batches. Images come at the model's size (image_size x image_size when
    given): image files are read at it, arrays resized batch by batch. Rescaling,
    normalisation and label encoding follow the spec; augmentation runs on whole
    batches, in parallel with training."""
    augment = build_augmentation(seed)
    # <MIXING>
    size = (image_size, image_size) if image_size else INPUT_SHAPE[:2]

    def prepare(images, labels, training):
        images = tf.cast(images, "float32") * RESCALE
        if tuple(images.shape[1:3]) != size:
            images = tf.image.resize(images, size)
        if training and augment is not None:
            images = augment(images, training=True)
        # <NORMALIZE>
        # <ENCODE>
        # <MIX>
        return images, labels

    def pipeline(split, training):
        images, labels = split
        dataset = tf.data.Dataset.from_tensor_slices((images, labels))
        if training:
            dataset = dataset.shuffle(len(labels), seed=seed)
        dataset = dataset.batch(batch_size)
        # <READ>
        dataset = dataset.map(
            lambda x, y: prepare(x, y, training), num_parallel_calls=tf.data.AUTOTUNE
        )
        return dataset.prefetch(tf.data.AUTOTUNE)

    datasets = {
        name: pipeline(split, training=name == "train")
        for name, split in splits.items()
    }
    # <VALIDATION>
    return datasets


# --- Training


def train(
    model,
    datasets,
    output_dir,
    epochs=None,
    class_weight=None,
    resume=None,
    tracking=None,
):
    """Compile and fit the model, phase by phase; `epochs` caps each phase;
    `resume` carries on from where a run stopped (see ResumePoint); `tracking`
    reports each epoch (see Tracking). Returns the per-epoch history."""
    if resume is None:
        resume = ResumePoint(Path(output_dir) / "resume")
    if tracking is None:
        tracking = Tracking()
    history = []
    # <PHASES>
    return history


def set_trainable(model, frozen):
    """Freeze the named layers and unfreeze the rest. A frozen BatchNormalization
    runs in inference mode in Keras, so its moving statistics stay as they are."""
    for layer in model.layers:
        node = layer.name.removesuffix("_act").removesuffix("_pad")
        layer.trainable = node not in frozen


class ResumePoint(keras.callbacks.Callback):
    """Where a run is, saved to <output-dir>/resume/ as each phase starts and after
    each of its epochs: the weights, the optimizer's state, the history, and the other
    callbacks' counters. A run started with --resume carries on from it: the phases
    before the saved one are done, and that one carries on from its last saved epoch
    (as initial_epoch does)."""

    COUNTERS = ("wait", "best", "best_epoch", "stopped_epoch", "cooldown_counter")
    FILES = ("weights.npz", "optimizer.npz", "best_weights.npz", "state.json")

    def __init__(self, folder, state=None, source=None):
        super().__init__()
        self.folder, self.state = Path(folder), state
        # Where a resumed run reads from: the folder, or (a multi-worker run's other
        # workers) the chief's.
        self.source = Path(source or folder)
        self.pending = state is not None  # to restore, into the first phase trained
        self.phase, self.done, self.others, self.history = None, 0, [], []
        self.stopped = self.restoring = False

    @classmethod
    def load(cls, source, folder=None):
        """The point saved in `source`, to carry on from, saving to `folder` (default:
        the same)."""
        source = Path(source)
        if not (source / "state.json").is_file():
            raise DataError(f"--resume: no {source / 'state.json'} to carry on from")
        if not all((source / name).is_file() for name in cls.FILES):
            raise DataError(f"--resume: {source} was saved by an older script")
        state = json.loads((source / "state.json").read_text())
        return cls(folder or source, state, source)

    def progress(self, phase):
        """The epochs this phase has trained, and whether it is over: a phase before
        the one saved last, or that one stopped early."""
        if self.state is None:
            return [], False
        rows = [row for row in self.state["history"] if row["phase"] == phase]
        last = self.state["phase"] == phase
        return rows, bool(rows) and (not last or self.state["stopped"])

    def follow(self, model, phase, done, callbacks, history):
        """The phase under way, after `done` epochs of the phases before it. Its
        optimizer is built now, so that its state is saved from the phase's start and
        restored whole (Keras builds it in fit otherwise)."""
        self.set_model(model)
        model.optimizer.build(model.trainable_variables)
        self.phase, self.done, self.stopped = phase, done, False
        self.others, self.history = callbacks, history

    def restore(self):
        """Carry on from the saved point in the first phase this run trains: the
        weights, and when the point is in this phase, the optimizer's state and (as
        training begins) the other callbacks' counters."""
        self.pending = False
        weights = np.load(self.source / "weights.npz")
        for index, variable in enumerate(self.model.weights):
            variable.assign(weights[f"w{index}"])
        if self.state["phase"] != self.phase:
            return
        saved = np.load(self.source / "optimizer.npz")
        for index, variable in enumerate(self.model.optimizer.variables):
            variable.assign(saved[f"v{index}"])
        self.restoring = True

    def on_train_begin(self, logs=None):
        # After the other callbacks have reset their counters: the saved ones.
        if not self.restoring:
            return
        self.restoring = False
        best = np.load(self.source / "best_weights.npz")
        for index, (callback, saved) in enumerate(
            zip(self.others, self.state["callbacks"], strict=True)
        ):
            vars(callback).update(saved)
            kept = [best[k] for k in sorted(best.files) if k.startswith(f"c{index}_")]
            if kept:
                callback.best_weights = kept

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        # Keras logs the learning rate only where a callback changes it: always here.
        rate = keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        logs.setdefault("learning_rate", rate)
        row = {key: float(value) for key, value in logs.items()}
        self.history.append({"phase": self.phase, "epoch": epoch + 1, **row})
        self.stopped = bool(self.model.stop_training)
        self.save()

    def save(self):
        earlier = self.state["history"][: self.done] if self.state else []
        self.state = {
            "phase": self.phase,
            "stopped": self.stopped,
            "history": [*earlier, *self.history],
            "callbacks": [
                {k: v for k, v in vars(c).items() if k in self.COUNTERS}
                for c in self.others
            ],
        }
        kept = [getattr(c, "best_weights", None) or () for c in self.others]
        best = {
            f"c{index}_{number:04d}": weights
            for index, weights_list in enumerate(kept)
            for number, weights in enumerate(weights_list)
        }
        values = keras.ops.convert_to_numpy
        weights = {f"w{i}": values(v) for i, v in enumerate(self.model.weights)}
        optimizer = {
            f"v{index}": values(variable)
            for index, variable in enumerate(self.model.optimizer.variables)
        }
        # Each file is written whole, then renamed: a run stopped midway keeps the last.
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.folder / "partial"
        partial.mkdir(exist_ok=True)
        np.savez(partial / "weights.npz", **weights)
        np.savez(partial / "optimizer.npz", **optimizer)
        np.savez(partial / "best_weights.npz", **best)
        (partial / "state.json").write_text(json.dumps(self.state))
        for name in self.FILES:
            os.replace(partial / name, self.folder / name)


@keras.saving.register_keras_serializable(package="cnnspec")
class PhaseSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A phase's learning-rate schedule, as its optimizer's learning rate: each
    optimizer step's rate is learning_rate()'s (the PyTorch script's too), worked out
    once for the phase's steps and looked up by the optimizer's iteration count, which
    the resume point saves and restores with the optimizer's other variables."""

    def __init__(self, steps_per_epoch, epochs, kind, lr, **options):
        self.config = dict(
            steps_per_epoch=steps_per_epoch, epochs=epochs, kind=kind, lr=lr, **options
        )
        steps = range(steps_per_epoch * epochs)
        rates = [
            learning_rate(step, steps_per_epoch, epochs, kind, lr, **options)
            for step in steps
        ]
        self.rates = np.asarray(rates, dtype="float32")

    def __call__(self, step):
        index = keras.ops.minimum(keras.ops.cast(step, "int32"), len(self.rates) - 1)
        return keras.ops.take(keras.ops.convert_to_tensor(self.rates), index)

    def get_config(self):
        return dict(self.config)


def fit_phase(
    model,
    phase,
    spec_epochs,
    cap,
    datasets,
    callbacks,
    class_weight,
    done,
    resume,
    tracking,
):
    """Fit one phase for its epochs (at most `cap`, when given), continuing the epoch
    count from `done`, or from where `resume` says this phase stopped. Ctrl-C raises
    Interrupted, saying where."""
    history, over = resume.progress(phase)
    if over:
        return history
    resume.follow(model, phase, done, callbacks, history)
    if resume.pending:
        resume.restore()
        if history:
            print(f"{phase}: carrying on after epoch {history[-1]['epoch']}")
    if not history:
        resume.save()  # the phase's start, to carry on from
    first, last = done + len(history), done + min(spec_epochs, cap or spec_epochs)
    if first < last:
        print(f"phase {phase}: epochs {first + 1} to {last}")
    try:
        model.fit(
            datasets["train"],
            validation_data=datasets.get("val"),
            initial_epoch=first,
            epochs=last,
            callbacks=[*callbacks, resume, *tracking.callbacks(phase, history)],
            class_weight=class_weight,
            shuffle=False,  # the training dataset shuffles itself
            verbose=2,
        )
    except KeyboardInterrupt:
        raise Interrupted(phase, done + len(history) + 1) from None
    if resume.stopped or len(history) >= spec_epochs:
        # Over: the next phase starts from here (the best weights, if restored). A phase
        # cut short by --epochs keeps its last epoch's state, to carry on from.
        resume.save()
    return history


# --- Evaluation


# evaluate's <TRUTH> and <PREDICT> slots make these: the true and the predicted
# classes, as the spec's labels and threshold have them.
y_true: Any = None
y_pred: Any = None


def evaluate(model, datasets, output_dir):
    """Test loss, accuracy and the per-class report. Predictions come from
    model(x, training=False), batch by batch."""
    test_set = datasets["test"]
    scores = model.evaluate(test_set, return_dict=True, verbose=0)
    probabilities, truth = [], []
    for images, targets in test_set:
        probabilities.append(np.asarray(model(images, training=False)))
        truth.append(np.asarray(targets))
    probabilities = np.concatenate(probabilities)
    # <TRUTH>
    # <PREDICT>
    labels = list(range(len(CLASS_NAMES)))
    test = {
        "loss": float(scores["loss"]),
        "accuracy": float(accuracy_score(y_true, y_pred)),
    }
    # <EXTRA>
    test["report"] = classification_report(
        y_true,
        y_pred,
        labels=labels,
        target_names=CLASS_NAMES,
        output_dict=True,
        zero_division=0,
    )
    # <OUTPUTS>
    return test


# --- Weights in cnnspec's layout (WEIGHT_LAYOUT, FLATTENED_FROM): the conversions,
# from_keras and to_keras, are cnnspec.runtime.rules', which the importer reads with.


def weight_place(layer, weight):
    """The canonical tensor a Keras weight is, and its layout (see WEIGHT_LAYOUT)."""
    kind = type(layer).__name__
    if weight.name not in WEIGHT_LAYOUT.get(kind, {}):
        raise ValueError(f"{layer.name}: no canonical tensor for {kind}.{weight.name}")
    suffix, layout = WEIGHT_LAYOUT[kind][weight.name]
    return f"{layer.name}.{suffix}", layout


def export_weights(model, path):
    """Save the weights in cnnspec's backend-neutral layout: PyTorch names and shapes
    (OIHW kernels, [out, in] dense matrices, features after a flatten in CHW order)."""
    tensors = {}
    for layer in model.layers:
        for weight in layer.weights:
            key, layout = weight_place(layer, weight)
            flattened = FLATTENED_FROM.get(layer.name)
            tensors[key] = from_keras(np.asarray(weight), layout, flattened)
    tensors = {k: np.ascontiguousarray(v, dtype="float32") for k, v in tensors.items()}
    saved_readable(lambda partial: save_file(tensors, str(partial)), path)


def load_weights(model, path, keys=None):
    """Load weights saved in cnnspec's layout (by this script or another backend's):
    every tensor the model has, or only `keys`."""
    tensors = load_file(str(path))
    for layer in model.layers:
        for weight in layer.weights:
            key, layout = weight_place(layer, weight)
            if keys is None or key in keys:
                shape, flattened = tuple(weight.shape), FLATTENED_FROM.get(layer.name)
                weight.assign(to_keras(tensors[key], layout, shape, flattened))
        # Keras's Normalization computes with copies of its statistics, which assign
        # leaves stale.
        if isinstance(layer, layers.Normalization):
            layer.finalize_state()


def init_weights(model, path):
    """Start from the weights in `path` (--init-weights), checked against the model's
    tensors in cnnspec's layout first."""
    needed = {}
    for layer in model.layers:
        for weight in layer.weights:
            key, layout = weight_place(layer, weight)
            empty = np.empty(tuple(weight.shape), dtype="uint8")
            flattened = FLATTENED_FROM.get(layer.name)
            needed[key] = tuple(from_keras(empty, layout, flattened).shape)
    load_weights(model, path, set(weights_to_load(path, needed)))
    print(f"weights from {path}")


def inference_model(model):
    """The network with the spec's preprocessing in front, as model.keras holds it: it
    predicts from images as the data source gives them."""
    inputs = keras.Input(shape=model.input_shape[1:], name="pixels")
    x = layers.Rescaling(RESCALE)(inputs)
    # <NORMALIZE>
    return keras.Model(inputs, model(x), name=f"{model.name}_inference")


def load_backbone_weights(model, weights):
    """Copy pretrained weights into the backbone's layers, by layer name: `imagenet`
    (keras.applications downloads them once, into ~/.keras/models) or a Keras .h5
    weight file. `none` keeps the random initialisation."""
    if weights == "none":
        return
    # keras.applications leaves some layers unnamed (Inception's conv2d_N): they take
    # the names a fresh session gives them, which the spec's layers have.
    reset_layer_names()
    network = getattr(keras.applications, BACKBONE)
    try:
        # At the spec's input size, so Keras picks the same weight file as the spec
        # names (MobileNetV2 has one per size); kernels fit any size.
        base = network(
            include_top=BACKBONE_TOP, weights=weights, input_shape=INPUT_SHAPE
        )
    except Exception as error:  # a failed download, a missing or foreign file
        message = f"cannot load {BACKBONE} weights {weights!r}: {error}"
        raise DataError(message) from error

    def flat(layers):  # ConvNeXt's stem and downsampling steps are models inside it
        for layer in layers:
            yield from flat(layer.layers) if isinstance(layer, keras.Model) else [layer]

    for layer in flat(base.layers):
        if layer.weights:
            try:
                model.get_layer(layer.name).set_weights(layer.get_weights())
            except ValueError as error:  # e.g. the classifier at another image size
                raise DataError(f"{layer.name}: {error}") from error
    print(f"{BACKBONE} weights from {weights}")


def read_torch_checkpoint(path):
    """The tensors of a file torch.save wrote (a zip of a pickle and one file per
    storage), as numpy arrays by key, without torch. Only tensors are rebuilt: any
    other object in the pickle is refused rather than run."""
    dtypes = {
        "FloatStorage": "<f4",
        "DoubleStorage": "<f8",
        "HalfStorage": "<f2",
        "BFloat16Storage": "<u2",
        "LongStorage": "<i8",
        "IntStorage": "<i4",
    }
    with zipfile.ZipFile(path) as archive:
        folder = archive.namelist()[0].split("/")[0]

        def rebuild(storage, offset, size, stride, *_):
            kind, values = storage
            item = values.itemsize
            array = np.lib.stride_tricks.as_strided(
                values[offset:], size, tuple(item * s for s in stride)
            ).copy()
            if kind == "BFloat16Storage":
                array = (array.astype("<u4") << 16).view("<f4")
            return array

        class Tensors(pickle.Unpickler):
            def find_class(self, module, name):
                if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                    return rebuild
                if (module, name) == ("collections", "OrderedDict"):
                    return collections.OrderedDict
                if module == "torch" and name in dtypes:
                    return name
                raise pickle.UnpicklingError(f"{module}.{name} is not a tensor")

            def persistent_load(self, pid):
                kind, key = pid[1], pid[2]
                data = archive.read(f"{folder}/data/{key}")
                return kind, np.frombuffer(data, dtype=dtypes[kind])

        with archive.open(f"{folder}/data.pkl") as stream:
            state = Tensors(stream).load()
    return {key: value for key, value in state.items() if isinstance(value, np.ndarray)}


def torchvision_state(weights):
    """torchvision's state dict behind --weights as numpy arrays: `imagenet` is its
    ImageNet checkpoint (downloaded once, into Keras's cache), a path a torch.save file
    or a .safetensors file."""
    if weights == "imagenet":
        try:
            path = keras.utils.get_file(origin=TORCHVISION_URL, cache_subdir="models")
        except Exception as error:  # no network, a refused download
            raise DataError(
                f"cannot download {TORCHVISION_URL} ({error}): "
                "pass --weights none, or the path of the file"
            ) from error
    else:
        path = weights
    try:
        if str(path).endswith(".safetensors"):
            return load_file(str(path))
        return read_torch_checkpoint(path)
    except (OSError, zipfile.BadZipFile, pickle.UnpicklingError, KeyError) as error:
        raise DataError(f"{path} is not a torchvision checkpoint: {error}") from error


def load_torchvision_weights(model, weights):
    """Copy a torchvision checkpoint into the backbone's layers (BACKBONE_LAYERS), each
    canonical tensor from the key torchvision names it by. `none` keeps the random
    initialisation."""
    if weights == "none":
        return
    layers_ = set(BACKBONE_LAYERS.split())
    places = {}
    for layer in model.layers:
        if layer.name in layers_:
            for weight in layer.weights:
                key, layout = weight_place(layer, weight)
                empty = np.empty(tuple(weight.shape), dtype="uint8")
                places[key] = (weight, layout, from_keras(empty, layout).shape)
    needed = {key: shape for key, (_, _, shape) in places.items()}
    tensors = torchvision_tensors(torchvision_state(weights), needed)
    for key, (weight, layout, _) in places.items():
        weight.assign(to_keras(tensors[key], layout, tuple(weight.shape)))
    print(f"{BACKBONE} weights from {weights}")


# --- Tracking


class Tracking:
    """Where the run is reported besides metrics.json: TensorBoard event files in
    `log_dir` (keras.callbacks.TensorBoard's, with each epoch's phase), an MLflow run
    (see mlflow_run), and `epochs`, a file of one JSON line per epoch as it ends (the
    rows of metrics.json's history), for whatever watches the run."""

    def __init__(self, log_dir=None, mlflow=None, epochs=None):
        self.log_dir, self.mlflow, self.epochs = log_dir, mlflow, epochs

    def callbacks(self, phase, history):
        """The callbacks that report one phase's epochs. `history` is the phase's rows,
        to which ResumePoint, called before these, adds each epoch's."""
        found = []
        if self.log_dir is not None:
            found.append(PhaseTensorBoard(self.log_dir, phase))
        reports = [self.mlflow.epoch] if self.mlflow is not None else []
        if self.epochs is not None:
            reports.append(self.append)
        for report in reports:
            found.append(
                keras.callbacks.LambdaCallback(
                    on_epoch_end=lambda epoch, logs, report=report: report(history[-1])
                )
            )
        return found

    def append(self, row):
        with open(self.epochs, "a") as stream:
            stream.write(json.dumps(row) + "\n")

    def finish(self, test, output_dir):
        """The test metrics and the artifacts, once they are written."""
        if self.mlflow is not None:
            self.mlflow.finish(test, output_dir)
        if self.log_dir is not None:
            print(f"TensorBoard: tensorboard --logdir {self.log_dir}")


class PhaseTensorBoard(keras.callbacks.TensorBoard):
    """keras.callbacks.TensorBoard, with each epoch's phase (its number in PHASES)
    beside the losses, the metrics and the learning rate."""

    def __init__(self, log_dir, phase):
        super().__init__(log_dir=str(log_dir))
        self.phase_number = PHASES.index(phase) + 1

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, {**(logs or {}), "phase": self.phase_number})


# --- Private API


# Keras's private API (keras.src), used here and nowhere else, where Keras has no
# public way: to reset its counters of layer names (a backbone's weights load by layer
# name) and to fit under MultiWorkerMirroredStrategy on several workers. It changes
# without notice, so it runs only under the versions it was tested with (constraints.txt
# pins them): under another, the script stops with one line that names it, not a
# traceback.
PRIVATE_API_TESTED = {"Keras": ("3.15",), "TensorFlow": ("2.21",)}


class UntestedVersion(DataError):
    """Keras or TensorFlow is not a version the private API was tested with: main()
    prints it as one line, as it does a problem with the data."""


def check_private_api(purpose, *libraries):
    """Raise UntestedVersion unless the installed `libraries` ("Keras", "TensorFlow")
    are versions PRIVATE_API_TESTED lists; `purpose` says what needs them."""
    for library in libraries:
        version = {"Keras": keras, "TensorFlow": tf}[library].__version__
        tested = PRIVATE_API_TESTED[library]
        if ".".join(version.split(".")[:2]) not in tested:
            raise UntestedVersion(
                f"{library} {version} is installed, but {purpose} uses Keras's private "
                f"API, tested with {library} {' and '.join(tested)} only: pip install "
                f"'{library.lower()}=={tested[-1]}.*'"
            )


def reset_layer_names():
    """Reset Keras's counters of unnamed layers, as a fresh session has them.
    keras.utils.clear_session() does that too, but it breaks a distribution strategy's
    scope."""
    check_private_api("loading a backbone's weights", "Keras")
    from keras.src.utils.naming import reset_uids

    reset_uids()


def across_workers(model):
    """Let `model` fit under MultiWorkerMirroredStrategy on more than one worker, which
    Keras 3 (3.15 here) cannot do as it stands: it averages the first batch across the
    workers eagerly to build the metrics (the strategy cannot reduce eagerly across
    workers), and averages each step's logs, which are scalars, along an axis. The
    metrics are built when the train step is traced instead, as Keras does without a
    strategy (fit still runs in the strategy's scope), and scalar logs are averaged
    across the workers as they are."""
    check_private_api("--strategy multiworker", "Keras", "TensorFlow")
    from keras.src.backend.tensorflow import trainer

    keras_reduce = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        # More replicas than this worker's devices: more than one worker.
        several = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
            strategy.num_replicas_in_sync > len(strategy.extended.worker_devices)
        )
        if several and reduction in ("auto", "mean"):
            return tf.nest.map_structure(
                lambda value: strategy.reduce("MEAN", value, axis=None), values
            )
        return keras_reduce(values, strategy, reduction)

    trainer.reduce_per_replica = reduce_per_replica
    model._distribute_strategy = None


# --- Distribution strategies and main


# run's <CLASS_WEIGHTS> slot makes this: the class weights, or None.
weights: Any = None


def make_strategy(name):
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise DataError(
                "--strategy multiworker needs TF_CONFIG: JSON that names the cluster's "
                "workers (host:port each) and this process's task (type and index)"
            )
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        print(f"multi-worker over {strategy.num_replicas_in_sync} replicas")
        return strategy
    devices = tf.config.list_logical_devices("GPU")
    devices = devices or tf.config.list_logical_devices("CPU")
    strategy = tf.distribute.MirroredStrategy([device.name for device in devices])
    print(f"mirrored over {strategy.num_replicas_in_sync} devices")
    return strategy


def is_chief(strategy_name):
    """True in the worker that writes the artifacts: any single-machine run; in a
    multi-worker one, the chief, or worker 0 where TF_CONFIG names no chief."""
    if strategy_name != "multiworker":
        return True
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = config.get("task", {})
    kind, index = task.get("type", "chief"), task.get("index", 0)
    no_chief = "chief" not in config.get("cluster", {})
    return kind == "chief" or (kind == "worker" and index == 0 and no_chief)


def main(argv=None):
    """Train, evaluate and save. A problem with the data is one line of error, and
    Ctrl-C one line that says how to carry on: never a traceback."""
    args = parse_args(argv)
    # The chief picks the folder and logs the MLflow run; the other workers take the
    # folder as given (and write to one of their own).
    reports = is_chief(args.strategy)
    folder, created = Path(args.output_dir or DEFAULT_OUTPUT_DIR), False
    try:
        if reports:
            folder = run_folder(args, distributed=args.strategy == "multiworker")
            created = not folder.exists()
        args.output_dir = str(folder)
        with mlflow_run(args.mlflow if reports else None, "keras", args) as mlflow:
            run(args, mlflow)
    except DataError as error:
        if created:
            discard_unstarted(folder)
        sys.exit(f"error: {error}")
    # <READ_ERROR>
    except (Interrupted, KeyboardInterrupt) as stop:
        interrupted(stop, folder, created)


def run(args, mlflow=None):
    """Train, evaluate and write the artifacts; `mlflow` is the run to report to, if any
    (see mlflow_run)."""
    # First: a multi-worker strategy must exist before TensorFlow runs anything.
    strategy = make_strategy(args.strategy)
    keras.utils.set_random_seed(args.seed)
    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    if args.image_size and FIXED_INPUT_SIZE and args.image_size != INPUT_SHAPE[0]:
        raise DataError("--image-size: this model's flatten fixes its input size")
    output_dir = Path(args.output_dir)
    chief = is_chief(args.strategy)
    if not chief:
        # Every worker saves as the chief does (saving takes part in collectives), in
        # a folder of its own that goes when the run ends, as TensorFlow's guide has.
        scratch = tempfile.TemporaryDirectory(prefix="cnnspec-worker-")
        output_dir = Path(scratch.name)
        print(f"not the chief: writing to {output_dir}, removed at the end")
    splits = load_data(args.data_dir)
    # <SPLIT>
    check_not_empty(splits)
    if args.subset is not None:
        splits = {
            name: subset(split, args.subset, args.seed)
            for name, split in splits.items()
        }
        check_not_empty(splits)
    # <CHECK_IMAGES>
    output_dir.mkdir(parents=True, exist_ok=True)
    datasets = make_datasets(splits, args.batch_size, args.seed, args.image_size)
    if args.strategy == "multiworker":
        # Each worker takes its share of every global batch (the spec's batch).
        options = tf.data.Options()
        policy = tf.data.experimental.AutoShardPolicy.DATA
        options.experimental_distribute.auto_shard_policy = policy
        datasets = {name: data.with_options(options) for name, data in datasets.items()}
    input_shape = INPUT_SHAPE
    if args.image_size:
        input_shape = (args.image_size, args.image_size, INPUT_SHAPE[2])

    resume = ResumePoint(output_dir / RESUME)
    if args.resume:  # the chief's, which every worker reads
        chiefs = Path(args.output_dir) / RESUME
        resume = ResumePoint.load(chiefs, output_dir / RESUME)
    tensorboard = output_dir / "tensorboard" if args.tensorboard and chief else None
    epochs = output_dir / "epochs.jsonl" if chief else None
    if epochs is not None:
        # The epochs saved so far: one that Ctrl-C cut short is trained (and reported)
        # again when the run resumes.
        saved = resume.state["history"] if args.resume else []
        epochs.write_text("".join(json.dumps(row) + "\n" for row in saved))
    tracking = Tracking(tensorboard, mlflow, epochs)
    with strategy.scope():
        model = build_model(input_shape)
        # <BACKBONE>
        if args.init_weights and not args.resume:
            init_weights(model, args.init_weights)
        model.summary()
        if args.strategy == "multiworker":
            across_workers(model)
        # <CLASS_WEIGHTS>
        history = train(
            model,
            datasets,
            output_dir,
            epochs=args.epochs,
            class_weight=weights,
            resume=resume,
            tracking=tracking,
        )
    test = evaluate(model, datasets, output_dir)
    # <CURVES>
    metrics = {"spec": SPEC_NAME, "backend": "keras", "history": history, "test": test}
    # <PREPROCESSING>
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    export_weights(model, output_dir / "weights.safetensors")
    inference_model(model).save(output_dir / "model.keras")
    tracking.finish(test, output_dir)
    print(f"test accuracy {test['accuracy']:.4f}, loss {test['loss']:.4f}")
    if chief:
        print(f"artifacts in {output_dir}")
