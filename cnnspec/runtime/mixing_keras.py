"""Mixup and cutmix in the Keras scripts: timm's Mixup in its "batch" mode, on a batch
of the tf.data pipeline after its labels are one-hot (make_datasets). Copied into the
scripts by name; the PyTorch scripts' twin is mixing_torch.py, the same formulas of the
same parameters (tests/frameworks/test_mixing.py)."""

from __future__ import annotations

import keras
import tensorflow as tf

from cnnspec.runtime.script import SEED


def draw_mixing(seed_generator, images, mixup_alpha, cutmix_alpha):
    """One batch's mixing, as timm draws it: `cut`, whether it pastes a box (cutmix;
    even odds when both kinds are given) or blends (mixup); `factor`, from Beta(alpha,
    alpha) of the kind drawn; `center`, the box's centre (row, column), uniform over the
    image."""
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    if mixup_alpha and cutmix_alpha:
        cut = keras.random.uniform((), seed=seed_generator) < 0.5
    else:
        cut = tf.constant(bool(cutmix_alpha))
    blend_alpha, cut_alpha = mixup_alpha or 1.0, cutmix_alpha or 1.0
    blend = keras.random.beta((), blend_alpha, blend_alpha, seed=seed_generator)
    share = keras.random.beta((), cut_alpha, cut_alpha, seed=seed_generator)
    row = keras.random.randint((), 0, height, seed=seed_generator)
    column = keras.random.randint((), 0, width, seed=seed_generator)
    return {
        "cut": cut,
        "factor": tf.cast(tf.where(cut, share, blend), "float32"),
        "center": (tf.cast(row, "int32"), tf.cast(column, "int32")),
    }


def apply_mixing(images, labels, params):
    """Mix each image and its one-hot label with the batch's reversed order: a blend by
    `factor`, or the other image's box of 1 - factor of the area (its sides floored,
    clipped at the edges) pasted in, the labels weighted by the area each image
    keeps."""
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    other_images, other_labels = images[::-1], labels[::-1]
    factor = params["factor"]
    ratio = tf.sqrt(1 - factor)
    box_height = tf.cast(tf.floor(tf.cast(height, "float32") * ratio), "int32")
    box_width = tf.cast(tf.floor(tf.cast(width, "float32") * ratio), "int32")
    row, column = params["center"]
    top = tf.clip_by_value(row - box_height // 2, 0, height)
    bottom = tf.clip_by_value(row + box_height // 2, 0, height)
    left = tf.clip_by_value(column - box_width // 2, 0, width)
    right = tf.clip_by_value(column + box_width // 2, 0, width)
    rows, columns = tf.range(height)[:, None], tf.range(width)[None, :]
    inside = (rows >= top) & (rows < bottom) & (columns >= left) & (columns < right)
    pasted = tf.where(inside[None, :, :, None], other_images, images)
    area = tf.cast((bottom - top) * (right - left), "float32")
    kept = 1 - area / tf.cast(height * width, "float32")
    blended = factor * images + (1 - factor) * other_images
    cut = params["cut"]
    weight = tf.where(cut, kept, factor)
    mixed = weight * labels + (1 - weight) * other_labels
    return tf.where(cut, pasted, blended), mixed


class BatchMixing:
    """The spec's mixup and cutmix over the training batches, drawing from its own
    seed."""

    def __init__(self, mixup_alpha=0.0, cutmix_alpha=0.0, seed=SEED):
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.seed_generator = keras.random.SeedGenerator(seed)

    def __call__(self, images, labels):
        params = draw_mixing(
            self.seed_generator, images, self.mixup_alpha, self.cutmix_alpha
        )
        return apply_mixing(images, labels, params)
