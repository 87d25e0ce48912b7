"""The crops and erasing of the Keras scripts, with torchvision's semantics, as Keras
layers for the augmentation model (a batch (N, H, W, C) in the tf.data pipeline), each
image drawing its own box from the layer's seed generator. Each step is a draw of its
random parameters and their application, the same formulas of the same parameters as
crops_torch.py's (tests/frameworks/test_augment_crops.py). Copied into the scripts by
name (cnnspec.augment.crops names them)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers


def take_pixels(images, rows, columns):
    """images[n, rows[n, i], columns[n, j]] for every image n: the (N, H', W', C) batch
    of each image's own rows and columns."""
    picked = tf.gather(images, rows, axis=1, batch_dims=1)
    return tf.gather(picked, columns, axis=2, batch_dims=1)


def padded_indices(offset, padding, size, fill):
    """Where each of the `size` pixels of a window at `offset` (one per image) of the
    image padded by `padding` along one axis reads the image, and whether it is inside
    the image: reflected (without repeating the edge) or clamped to the edge outside."""
    position = offset[:, None] - padding + tf.range(size)[None, :]
    inside = (position >= 0) & (position < size)
    if fill == "reflect":
        position = tf.abs(position)
        position = tf.where(position > size - 1, 2 * (size - 1) - position, position)
    return tf.clip_by_value(position, 0, size - 1), inside


def draw_random_crop(seed_generator, images, padding):
    """Each image's window in the padded image: its `top` and `left`, uniform over the
    2 * padding + 1 positions along each axis."""
    shape = (tf.shape(images)[0], 2)
    offsets = keras.random.randint(
        shape, 0, 2 * padding + 1, dtype="int32", seed=seed_generator
    )
    return {"top": offsets[:, 0], "left": offsets[:, 1]}


def apply_random_crop(images, params, padding, fill, value):
    """Each image's window of the image padded by `padding` on each side with `fill`:
    `value` (constant), its mirror image (reflect) or its edge pixels (edge)."""
    shape = tf.shape(images)
    rows, rows_inside = padded_indices(params["top"], padding, shape[1], fill)
    columns, columns_inside = padded_indices(params["left"], padding, shape[2], fill)
    cropped = take_pixels(images, rows, columns)
    if fill == "constant":
        inside = rows_inside[:, :, None, None] & columns_inside[:, None, :, None]
        cropped = tf.where(inside, cropped, tf.cast(value, cropped.dtype))
    return cropped


class PaddedRandomCrop(layers.Layer):
    """torchvision's RandomCrop(size, padding) at the images' own size: pad each side
    by `padding` with `fill`, then crop each image's own random window."""

    def __init__(self, padding, fill="constant", value=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.padding, self.fill, self.value, self.seed = padding, fill, value, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training:
            return images
        params = draw_random_crop(self.seed_generator, images, self.padding)
        return apply_random_crop(images, params, self.padding, self.fill, self.value)

    def get_config(self):
        options = {"padding": self.padding, "fill": self.fill, "value": self.value}
        return {**super().get_config(), **options, "seed": self.seed}


def box_tries(fractions, log_ratios, height, width):
    """torchvision's boxes, one per try: `fractions` of the image's area, of aspect
    ratio (width / height) exp(log_ratios), their sides rounded to whole pixels."""
    area = fractions * (height * width)
    ratio = tf.exp(log_ratios)
    return tf.round(tf.sqrt(area / ratio)), tf.round(tf.sqrt(area * ratio))


def first_try(valid, *values):
    """Per image, whether any of its tries is `valid`, and each of `values` at the first
    valid try (at the last try where none is)."""
    tries = valid.shape[1]
    order = tf.broadcast_to(tf.range(tries), tf.shape(valid))
    index = tf.reduce_min(tf.where(valid, order, tries), axis=1)
    found = index < tries
    index = tf.minimum(index, tries - 1)
    return (found, *(tf.gather(value, index, axis=1, batch_dims=1) for value in values))


def draw_random_resized_crop(seed_generator, images, scale, ratio):
    """Each image's box (`top`, `left`, `height`, `width`) as torchvision's
    RandomResizedCrop.get_params draws it: up to 10 tries of an area fraction uniform
    in `scale` and an aspect ratio log-uniform in `ratio`, the first that fits placed
    uniformly; else the central crop of the ratio in `ratio` nearest the image's."""
    shape = tf.shape(images)
    height, width = tf.cast(shape[1], "float32"), tf.cast(shape[2], "float32")
    tries = (shape[0], 10)
    fractions = keras.random.uniform(tries, scale[0], scale[1], seed=seed_generator)
    log_ratios = keras.random.uniform(
        tries, np.log(ratio[0]), np.log(ratio[1]), seed=seed_generator
    )
    heights, widths = box_tries(fractions, log_ratios, height, width)
    valid = (heights > 0) & (heights <= height) & (widths > 0) & (widths <= width)
    found, heights, widths = first_try(valid, heights, widths)
    image_ratio = width / height
    fallback_height = tf.where(
        image_ratio < ratio[0], tf.round(width / ratio[0]), height
    )
    fallback_width = tf.where(
        image_ratio > ratio[1], tf.round(height * ratio[1]), width
    )
    heights = tf.where(found, heights, fallback_height)
    widths = tf.where(found, widths, fallback_width)
    where = keras.random.uniform((shape[0], 2), seed=seed_generator)
    top = tf.minimum(tf.floor(where[:, 0] * (height - heights + 1)), height - heights)
    left = tf.minimum(tf.floor(where[:, 1] * (width - widths + 1)), width - widths)
    top = tf.where(found, top, tf.floor((height - heights) / 2))
    left = tf.where(found, left, tf.floor((width - widths) / 2))
    box = {"top": top, "left": left, "height": heights, "width": widths}
    return {key: tf.cast(value, "int32") for key, value in box.items()}


def bilinear_rows(start, length, size):
    """Where each of `size` pixels samples its image's span [start, start + length)
    stretched to `size` pixels, bilinearly with half-pixel centres and no antialiasing
    (tf.image.resize's and F.interpolate's rule): the two source indices along the
    axis, and the second one's weight."""
    length = tf.cast(length, "float32")[:, None]
    steps = tf.cast(tf.range(size), "float32")[None, :]
    position = tf.maximum(
        (steps + 0.5) * (length / tf.cast(size, "float32")) - 0.5, 0.0
    )
    low = tf.floor(position)
    weight = position - low
    high = tf.minimum(low + 1, length - 1)
    start = start[:, None]
    return start + tf.cast(low, "int32"), start + tf.cast(high, "int32"), weight


def apply_random_resized_crop(images, params):
    """Each image's box resized to the image's size (bilinear)."""
    shape = tf.shape(images)
    top, bottom, row_weight = bilinear_rows(params["top"], params["height"], shape[1])
    left, right, column_weight = bilinear_rows(
        params["left"], params["width"], shape[2]
    )
    column_weight = column_weight[:, None, :, None]
    row_weight = row_weight[:, :, None, None]
    upper_left, upper_right = (
        take_pixels(images, top, left),
        take_pixels(images, top, right),
    )
    lower_left, lower_right = (
        take_pixels(images, bottom, left),
        take_pixels(images, bottom, right),
    )
    upper = upper_left + (upper_right - upper_left) * column_weight
    lower = lower_left + (lower_right - lower_left) * column_weight
    return upper + (lower - upper) * row_weight


class ResizedRandomCrop(layers.Layer):
    """torchvision's RandomResizedCrop at the images' own size: each image's random box
    (area fraction in `scale`, aspect ratio log-uniform in `ratio`) resized to it."""

    def __init__(self, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), seed=None, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.ratio, self.seed = tuple(scale), tuple(ratio), seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training:
            return images
        params = draw_random_resized_crop(
            self.seed_generator, images, self.scale, self.ratio
        )
        return apply_random_resized_crop(images, params)

    def get_config(self):
        options = {"scale": self.scale, "ratio": self.ratio, "seed": self.seed}
        return {**super().get_config(), **options}


def draw_random_erasing(seed_generator, images, p, scale, ratio):
    """Each image's box as torchvision's RandomErasing draws it: `erase`, with
    probability p, and the first of 10 tries of an area fraction uniform in `scale` and
    an aspect ratio (height / width) log-uniform in `ratio` that fits strictly inside,
    placed uniformly (no erasing when none fits)."""
    shape = tf.shape(images)
    height, width = tf.cast(shape[1], "float32"), tf.cast(shape[2], "float32")
    tries = (shape[0], 10)
    chosen = keras.random.uniform((shape[0],), seed=seed_generator) < p
    fractions = keras.random.uniform(tries, scale[0], scale[1], seed=seed_generator)
    log_ratios = keras.random.uniform(
        tries, np.log(ratio[0]), np.log(ratio[1]), seed=seed_generator
    )
    heights, widths = box_tries(fractions, -log_ratios, height, width)
    valid = (heights < height) & (widths < width)
    found, heights, widths = first_try(valid, heights, widths)
    heights = tf.where(found, heights, 0.0)
    widths = tf.where(found, widths, 0.0)
    where = keras.random.uniform((shape[0], 2), seed=seed_generator)
    top = tf.minimum(tf.floor(where[:, 0] * (height - heights + 1)), height - heights)
    left = tf.minimum(tf.floor(where[:, 1] * (width - widths + 1)), width - widths)
    box = {"top": top, "left": left, "height": heights, "width": widths}
    return {"erase": chosen & found, **{k: tf.cast(v, "int32") for k, v in box.items()}}


def apply_random_erasing(images, params, value):
    """Each chosen image with its box filled with `value`."""
    shape = tf.shape(images)
    rows, columns = tf.range(shape[1])[None, :], tf.range(shape[2])[None, :]
    top, left = params["top"][:, None], params["left"][:, None]
    in_rows = (rows >= top) & (rows < top + params["height"][:, None])
    in_columns = (columns >= left) & (columns < left + params["width"][:, None])
    box = in_rows[:, :, None] & in_columns[:, None, :] & params["erase"][:, None, None]
    return tf.where(box[:, :, :, None], tf.cast(value, images.dtype), images)


class RandomRectangleErasing(layers.Layer):
    """torchvision's RandomErasing with a value in pixel units: with probability `p`,
    each image's random box (area fraction in `scale`, aspect ratio log-uniform in
    `ratio`) filled with `value`."""

    def __init__(
        self,
        p=0.5,
        scale=(0.02, 0.33),
        ratio=(0.3, 3.3),
        value=0.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.p, self.scale, self.ratio = p, tuple(scale), tuple(ratio)
        self.value, self.seed = value, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training:
            return images
        params = draw_random_erasing(
            self.seed_generator, images, self.p, self.scale, self.ratio
        )
        return apply_random_erasing(images, params, self.value)

    def get_config(self):
        options = {"p": self.p, "scale": self.scale, "ratio": self.ratio}
        return {
            **super().get_config(),
            **options,
            "value": self.value,
            "seed": self.seed,
        }
