"""Keras's F1 score and focal loss on sparse labels (class indices), which Keras's own
classes take one-hot only. Copied into the Keras scripts by name (the metric and loss
entries' keras_helpers); the PyTorch scripts compute the same from class indices
(cnnspec/metrics.py, cnnspec/losses.py; tests/frameworks/test_metrics_losses.py)."""

from __future__ import annotations

import keras


def one_hot_labels(labels, like):
    """Class indices ((N,) or (N, 1)) as one-hot rows of `like`'s width and dtype."""
    indices = keras.ops.reshape(keras.ops.cast(labels, "int32"), (-1,))
    return keras.ops.one_hot(indices, like.shape[-1], dtype=like.dtype)


class SparseF1Score(keras.metrics.F1Score):
    """keras.metrics.F1Score on class indices."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = keras.ops.convert_to_tensor(y_pred, dtype=self.dtype)
        y_true = one_hot_labels(y_true, y_pred)
        super().update_state(y_true, y_pred, sample_weight)


class SparseCategoricalFocalCrossentropy(keras.losses.CategoricalFocalCrossentropy):
    """keras.losses.CategoricalFocalCrossentropy on class indices."""

    def call(self, y_true, y_pred):
        return super().call(one_hot_labels(y_true, y_pred), y_pred)
