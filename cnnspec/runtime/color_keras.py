"""The Keras script's colour jitter, RandAugment and TrivialAugmentWide: preprocessing
layers (ColorJitter, RandAugmentPolicy, TrivialAugmentPolicy) that run in the tf.data
pipeline on batches (N, H, W, C) of the script's pixels, each image drawing its own
parameters, with torchvision's definitions. The twin of cnnspec/runtime/color_torch.py
(its docstring says how the ops read the pixels), op for op; copied by name into the
scripts (the entries of cnnspec/augment/color.py name what they need)."""

from __future__ import annotations

import keras
import tensorflow as tf

from cnnspec.runtime.color_common import policy_tables
from cnnspec.runtime.script import PIXEL_RANGE

# --- The ops, on [0, 1] pixels; a factor or amount is one per image, (N, 1, 1, 1).


def unit_pixels(images):
    """The batch's pixels mapped from PIXEL_RANGE to [0, 1]."""
    low, high = PIXEL_RANGE
    return (images - low) / (high - low)


def script_pixels(unit):
    """[0, 1] pixels mapped back to PIXEL_RANGE."""
    low, high = PIXEL_RANGE
    return tf.clip_by_value(low + unit * (high - low), low, high)


def blend(images, other, factor):
    return tf.clip_by_value(factor * images + (1 - factor) * other, 0.0, 1.0)


def grayscale(images):
    """ITU-R 601-2 luma, as torchvision's rgb_to_grayscale; one channel stays."""
    if images.shape[-1] == 1:
        return images
    r, g, b = images[..., 0:1], images[..., 1:2], images[..., 2:3]
    return 0.2989 * r + 0.587 * g + 0.114 * b


def adjust_brightness(images, factor):
    return blend(images, tf.zeros_like(images), factor)


def adjust_contrast(images, factor):
    mean = tf.reduce_mean(grayscale(images), axis=(1, 2, 3), keepdims=True)
    return blend(images, mean, factor)


def adjust_saturation(images, factor):
    if images.shape[-1] == 1:
        return images  # as torchvision (and PIL)
    return blend(images, grayscale(images), factor)


def rgb_to_hsv(images):
    """torchvision's _rgb2hsv: hue in [0, 1), saturation, value; (N, H, W) each."""
    r, g, b = images[..., 0], images[..., 1], images[..., 2]
    top = tf.maximum(tf.maximum(r, g), b)
    bottom = tf.minimum(tf.minimum(r, g), b)
    flat = tf.equal(top, bottom)
    spread = top - bottom
    ones = tf.ones_like(top)
    zeros = tf.zeros_like(top)
    saturation = spread / tf.where(flat, ones, top)
    divisor = tf.where(flat, ones, spread)
    rc, gc, bc = (top - r) / divisor, (top - g) / divisor, (top - b) / divisor
    hue_r = tf.where(tf.equal(top, r), bc - gc, zeros)
    not_r = tf.not_equal(top, r)
    hue_g = tf.where(tf.equal(top, g) & not_r, 2.0 + rc - bc, zeros)
    hue_b = tf.where(tf.not_equal(top, g) & not_r, 4.0 + gc - rc, zeros)
    hue = tf.math.floormod((hue_r + hue_g + hue_b) / 6.0 + 1.0, 1.0)
    return hue, saturation, top


def hsv_to_rgb(hue, saturation, value):
    """torchvision's _hsv2rgb, sector by sector."""
    sector = tf.floor(hue * 6.0)
    f = hue * 6.0 - sector
    sector = tf.math.floormod(sector, 6.0)
    p = tf.clip_by_value(value * (1.0 - saturation), 0.0, 1.0)
    q = tf.clip_by_value(value * (1.0 - saturation * f), 0.0, 1.0)
    t = tf.clip_by_value(value * (1.0 - saturation * (1.0 - f)), 0.0, 1.0)
    channels = []
    for choices in ((value, q, p, p, t, value), (t, value, value, q, p, p)):
        channels.append(pick_sector(sector, choices))
    channels.append(pick_sector(sector, (p, p, t, value, value, q)))
    return tf.stack(channels, axis=-1)


def pick_sector(sector, choices):
    picked = choices[5]
    for index in range(4, -1, -1):
        picked = tf.where(tf.equal(sector, float(index)), choices[index], picked)
    return picked


def adjust_hue(images, shift):
    if images.shape[-1] == 1:
        return images
    hue, saturation, value = rgb_to_hsv(images)
    hue = tf.math.floormod(hue + shift[..., 0], 1.0)
    return hsv_to_rgb(hue, saturation, value)


def adjust_sharpness(images, factor):
    """Blend with torchvision's smoothed image: a 3x3 kernel of ones with 5 at its
    centre, over 13, inside a border that keeps its pixels."""
    height, width = images.shape[1], images.shape[2]
    if height <= 2 or width <= 2:
        return images
    total = 5 * images[:, 1:-1, 1:-1]
    for dy in range(3):
        for dx in range(3):
            if (dy, dx) != (1, 1):
                total = total + images[:, dy : height - 2 + dy, dx : width - 2 + dx]
    smooth = tf.pad(total / 13, [[0, 0], [1, 1], [1, 1], [0, 0]])
    rows = tf.range(height)[:, None]
    cols = tf.range(width)[None, :]
    interior = (rows > 0) & (rows < height - 1) & (cols > 0) & (cols < width - 1)
    return blend(images, tf.where(interior[None, :, :, None], smooth, images), factor)


def posterize(images, bits):
    """Keep the `bits` high bits of each pixel's 0..255 level."""
    step = tf.pow(2.0, 8 - bits)
    return tf.floor(tf.round(images * 255) / step) * step / 255


def solarize(images, threshold):
    """Invert the pixels at or above `threshold` (a 0..255 level)."""
    return tf.where(images * 255 >= threshold, 1 - images, images)


def autocontrast(images):
    """Stretch each channel to [0, 1]; a flat channel stays."""
    low = tf.reduce_min(images, axis=(1, 2), keepdims=True)
    high = tf.reduce_max(images, axis=(1, 2), keepdims=True)
    flat = tf.equal(high, low)
    scale = 1 / tf.where(flat, tf.ones_like(high), high - low)
    low = tf.where(flat, tf.zeros_like(low), low)
    return tf.clip_by_value((images - low) * scale, 0.0, 1.0)


def equalize(images):
    """torchvision's equalize of each channel's 0..255 histogram; a channel whose
    levels below the top one hold fewer than 255 pixels stays."""
    shape = tf.shape(images)
    pixels = images.shape[1] * images.shape[2]
    channels = tf.reshape(tf.transpose(images, (0, 3, 1, 2)), (-1, pixels))
    levels = tf.cast(tf.clip_by_value(tf.round(channels * 255), 0, 255), tf.int32)
    histogram = tf.math.bincount(levels, minlength=256, maxlength=256, axis=-1)
    top_level = tf.reduce_max(levels, axis=1, keepdims=True)
    top = tf.gather(histogram, top_level, batch_dims=1)
    step = (pixels - top) // 255
    below = tf.cumsum(histogram, axis=1) - histogram
    table = (below + step // 2) // tf.maximum(step, 1)
    table = tf.clip_by_value(table, 0, 255)
    equalized = tf.cast(tf.gather(table, levels, batch_dims=1), images.dtype) / 255
    equalized = tf.where(step > 0, equalized, channels)
    unflat = tf.reshape(equalized, (shape[0], shape[3], shape[1], shape[2]))
    return tf.transpose(unflat, (0, 2, 3, 1))


def sample_nearest(images, maps):
    """Each output pixel takes its nearest source pixel through its image's inverse
    affine map (N, 6), in pixel coordinates centred on the image (torchvision's
    affine); pixels from outside the image are 0."""
    h, w = images.shape[1], images.shape[2]
    y = tf.reshape(tf.range(h, dtype=tf.float32) - (h - 1) / 2, (1, h, 1))
    x = tf.reshape(tf.range(w, dtype=tf.float32) - (w - 1) / 2, (1, 1, w))
    m = [tf.reshape(maps[:, i], (-1, 1, 1)) for i in range(6)]
    col = tf.round(m[0] * x + m[1] * y + m[2] + (w - 1) / 2)
    row = tf.round(m[3] * x + m[4] * y + m[5] + (h - 1) / 2)
    inside = (col >= 0) & (col <= w - 1) & (row >= 0) & (row <= h - 1)
    row = tf.clip_by_value(row, 0, h - 1)
    col = tf.clip_by_value(col, 0, w - 1)
    index = tf.cast(tf.reshape(row * w + col, (-1, h * w)), tf.int32)
    flat = tf.reshape(images, (-1, h * w, images.shape[3]))
    picked = tf.reshape(tf.gather(flat, index, batch_dims=1), tf.shape(images))
    return tf.where(inside[..., None], picked, tf.zeros_like(picked))


# --- ColorJitter: brightness, contrast, saturation and hue in a random order per image.

JITTERS = (
    ("brightness", adjust_brightness),
    ("contrast", adjust_contrast),
    ("saturation", adjust_saturation),
    ("hue", adjust_hue),
)


def draw_color_jitter(seed_generator, images, brightness, contrast, saturation, hue):
    """Each image's order of the four adjustments (a permutation of 0..3: brightness,
    contrast, saturation, hue), its three factors and its hue shift."""
    n = tf.shape(images)[0]
    draws = keras.random.uniform((n, 4), seed=seed_generator)
    params = {"order": tf.argsort(draws, axis=1)}
    for name, amount in (
        ("brightness", brightness),
        ("contrast", contrast),
        ("saturation", saturation),
    ):
        low, high = max(0, 1 - amount), 1 + amount
        params[name] = keras.random.uniform((n,), low, high, seed=seed_generator)
    params["hue"] = keras.random.uniform((n,), -hue, hue, seed=seed_generator)
    return params


def apply_color_jitter(images, params, brightness, contrast, saturation, hue):
    """The drawn adjustments in each image's order; those the spec leaves at 0 are
    skipped, as torchvision skips them."""
    pixels = unit_pixels(images)
    amounts = (brightness, contrast, saturation, hue)
    for position in range(4):
        chosen = tf.reshape(params["order"][:, position], (-1, 1, 1, 1))
        for index, (name, adjust) in enumerate(JITTERS):
            if amounts[index]:
                adjusted = adjust(pixels, tf.reshape(params[name], (-1, 1, 1, 1)))
                pixels = tf.where(tf.equal(chosen, index), adjusted, pixels)
    return script_pixels(pixels)


class ColorJitter(keras.layers.Layer):
    """torchvision's ColorJitter, each image drawing its own; training batches only."""

    def __init__(
        self, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, seed=None, **kwargs
    ):
        super().__init__(**kwargs)
        self.amounts = (brightness, contrast, saturation, hue)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training:
            return images
        params = draw_color_jitter(self.seed_generator, images, *self.amounts)
        return apply_color_jitter(images, params, *self.amounts)

    def compute_output_shape(self, input_shape):
        return input_shape


# --- RandAugment and TrivialAugmentWide: ops of color_common.POLICY_OPS.


def draw_policy(seed_generator, images, count, magnitude):
    """`count` ops per image, uniform over the 14, with a random sign each, at bin
    `magnitude` (None: a uniform bin per op, TrivialAugmentWide's)."""
    shape = (tf.shape(images)[0], count)
    draws = keras.random.uniform(shape, 0, 14, seed=seed_generator)
    ops = tf.clip_by_value(tf.cast(tf.floor(draws), tf.int32), 0, 13)
    negative = keras.random.uniform(shape, seed=seed_generator) < 0.5
    if magnitude is None:
        draws = keras.random.uniform(shape, 0, 31, seed=seed_generator)
        bins = tf.clip_by_value(tf.cast(tf.floor(draws), tf.int32), 0, 30)
    else:
        bins = tf.fill(shape, magnitude)
    signs = tf.where(negative, -1.0, 1.0)
    return {"ops": ops, "bins": bins, "signs": signs}


def apply_policy(images, params, wide):
    """Each image's ops in turn (torchvision's _apply_op with nearest resampling and
    fill 0), each op computed for the batch and kept where chosen."""
    magnitudes, maps = policy_tables(wide, images.shape[1], images.shape[2])
    magnitudes, maps = tf.constant(magnitudes), tf.constant(maps)
    pixels = unit_pixels(images)
    for slot in range(params["ops"].shape[1]):
        op = tf.cast(params["ops"][:, slot], tf.int32)
        bins = tf.cast(params["bins"][:, slot], tf.int32)
        sign = params["signs"][:, slot]
        negative = tf.cast(sign < 0, tf.int32)
        pixels = sample_nearest(
            pixels, tf.gather_nd(maps, tf.stack([op, bins, negative], 1))
        )
        value = tf.reshape(
            tf.gather_nd(magnitudes, tf.stack([op, bins], 1)), (-1, 1, 1, 1)
        )
        factor = 1 + tf.reshape(sign, (-1, 1, 1, 1)) * value
        chosen = tf.reshape(op, (-1, 1, 1, 1))
        bits = tf.where(tf.equal(chosen, 10), value, 8.0)
        threshold = tf.where(tf.equal(chosen, 11), value, 256.0)
        # One op per image: each line changes only the images that chose its op.
        pixels = tf.where(chosen == 6, adjust_brightness(pixels, factor), pixels)
        pixels = tf.where(chosen == 7, adjust_saturation(pixels, factor), pixels)
        pixels = tf.where(chosen == 8, adjust_contrast(pixels, factor), pixels)
        pixels = tf.where(chosen == 9, adjust_sharpness(pixels, factor), pixels)
        pixels = tf.where(chosen == 10, posterize(pixels, bits), pixels)
        pixels = tf.where(chosen == 11, solarize(pixels, threshold), pixels)
        pixels = tf.where(chosen == 12, autocontrast(pixels), pixels)
        pixels = tf.where(chosen == 13, equalize(pixels), pixels)
    return script_pixels(pixels)


def draw_rand_augment(seed_generator, images, n, m):
    return draw_policy(seed_generator, images, n, m)


def apply_rand_augment(images, params):
    return apply_policy(images, params, wide=False)


def draw_trivial_augment(seed_generator, images):
    return draw_policy(seed_generator, images, 1, None)


def apply_trivial_augment(images, params):
    return apply_policy(images, params, wide=True)


class RandAugmentPolicy(keras.layers.Layer):
    """torchvision's RandAugment(num_ops=n, magnitude=m), each image drawing its own;
    training batches only."""

    def __init__(self, n=2, m=9, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.n, self.m = n, m
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training:
            return images
        params = draw_rand_augment(self.seed_generator, images, self.n, self.m)
        return apply_rand_augment(images, params)

    def compute_output_shape(self, input_shape):
        return input_shape


class TrivialAugmentPolicy(keras.layers.Layer):
    """torchvision's TrivialAugmentWide(), each image drawing its own; training
    batches only."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training:
            return images
        params = draw_trivial_augment(self.seed_generator, images)
        return apply_trivial_augment(images, params)

    def compute_output_shape(self, input_shape):
        return input_shape
