"""Mixup and cutmix (cnnspec/runtime/mixing_keras.py and mixing_torch.py), the code both
scripts copy: the same drawn parameters give the same images and labels in TensorFlow and
PyTorch (a blend, a box inside the image and a box clipped at its corner), the draws follow
the same distributions (timm's: even odds between the kinds, Beta factors, uniform centres),
and the PyTorch loop's integer targets become rows of class probabilities."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")

import keras  # noqa: E402

from cnnspec.runtime import mixing_keras as mk  # noqa: E402
from cnnspec.runtime import mixing_torch as mt  # noqa: E402

CLASSES = 5


def _batch(seed: int, n: int = 6, size: tuple[int, int] = (9, 7)) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, (n, *size, 3)).astype("float32")
    labels = np.eye(CLASSES, dtype="float32")[rng.integers(0, CLASSES, n)]
    return images, labels


def _both(images: np.ndarray, labels: np.ndarray, cut: bool, factor: float, center: tuple):
    """The Keras and the PyTorch mix of one NHWC batch, both as NHWC arrays."""
    keras_images, keras_labels = mk.apply_mixing(
        tf.constant(images),
        tf.constant(labels),
        {
            "cut": tf.constant(cut),
            "factor": tf.constant(factor, "float32"),
            "center": (tf.constant(center[0]), tf.constant(center[1])),
        },
    )
    torch_images, torch_labels = mt.apply_mixing(
        torch.from_numpy(images.transpose(0, 3, 1, 2).copy()),
        torch.from_numpy(labels),
        {"cut": cut, "factor": torch.tensor(factor), "center": center},
    )
    return (
        (np.asarray(keras_images), np.asarray(keras_labels)),
        (torch_images.numpy().transpose(0, 2, 3, 1), torch_labels.numpy()),
    )


@pytest.mark.parametrize(
    ("cut", "factor", "center"),
    [
        (False, 0.3, (0, 0)),  # mixup: a blend
        (True, 0.6, (4, 3)),  # a box inside the image
        (True, 0.2, (0, 6)),  # a box clipped at the top right corner
        (True, 0.999, (4, 3)),  # a box of no pixels: nothing pasted, labels kept
    ],
)
def test_the_same_parameters_mix_alike(cut: bool, factor: float, center: tuple) -> None:
    images, labels = _batch(1)
    (k_images, k_labels), (t_images, t_labels) = _both(images, labels, cut, factor, center)
    np.testing.assert_allclose(k_images, t_images, atol=1e-6)
    np.testing.assert_allclose(k_labels, t_labels, atol=1e-6)
    np.testing.assert_allclose(k_labels.sum(1), 1, atol=1e-6)  # class probabilities
    reverse = images[::-1]
    if not cut:
        np.testing.assert_allclose(k_images, 0.3 * images + 0.7 * reverse, atol=1e-6)
        np.testing.assert_allclose(k_labels, 0.3 * labels + 0.7 * labels[::-1], atol=1e-6)
        return
    # Every pixel is this image's or the other's; the labels weigh the area each keeps.
    from_other = np.isclose(k_images, reverse).all(axis=3) & ~np.isclose(images, reverse).all(
        axis=3
    )
    share = from_other[0].mean()
    expected = 1 - share
    np.testing.assert_allclose(
        k_labels[0], expected * labels[0] + (1 - expected) * labels[-1], atol=1e-6
    )
    if factor > 0.99:
        np.testing.assert_array_equal(k_images, images)


def _keras_draws(count: int, mixup: float, cutmix: float) -> dict[str, np.ndarray]:
    generator = keras.random.SeedGenerator(3)
    images = tf.zeros((2, 9, 7, 3))
    rows = []
    for _ in range(count):
        params = mk.draw_mixing(generator, images, mixup, cutmix)
        rows.append(
            (
                bool(params["cut"]),
                float(params["factor"]),
                int(params["center"][0]),
                int(params["center"][1]),
            )
        )
    return _columns(rows)


def _torch_draws(count: int, mixup: float, cutmix: float) -> dict[str, np.ndarray]:
    generator = torch.Generator().manual_seed(3)
    np.random.seed(3)
    images = torch.zeros(2, 3, 9, 7)
    rows = []
    for _ in range(count):
        params = mt.draw_mixing(generator, images, mixup, cutmix)
        rows.append((params["cut"], float(params["factor"]), *params["center"]))
    return _columns(rows)


def _columns(rows: list[tuple]) -> dict[str, np.ndarray]:
    cut, factor, row, column = (np.asarray(c) for c in zip(*rows, strict=True))
    return {"cut": cut, "factor": factor, "row": row, "column": column}


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic."""
    grid = np.sort(np.concatenate([a, b]))
    first = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    second = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(first - second).max())


def test_the_draws_follow_the_same_distributions() -> None:
    count = 600
    keras_draws = _keras_draws(count, 0.2, 1.0)
    torch_draws = _torch_draws(count, 0.2, 1.0)
    for draws in (keras_draws, torch_draws):
        assert 0.43 < draws["cut"].mean() < 0.57  # even odds between the kinds
        assert draws["row"].min() == 0 and draws["row"].max() == 8  # uniform over [0, 9)
        assert draws["column"].min() == 0 and draws["column"].max() == 6
        # Beta(0.2, 0.2) piles up near 0 and 1; Beta(1, 1) is uniform
        blend = draws["factor"][~draws["cut"]]
        assert ((blend < 0.1) | (blend > 0.9)).mean() > 0.55
        cut = draws["factor"][draws["cut"]]
        assert 0.4 < cut.mean() < 0.6 and 0.2 < (cut < 0.3).mean() < 0.4
    # With 600 draws each, a KS statistic above 0.12 would be a 1-in-1000 accident.
    for name in ("row", "column"):
        assert _ks(keras_draws[name], torch_draws[name]) < 0.12, name
    for kind in (False, True):
        keras_factor = keras_draws["factor"][keras_draws["cut"] == kind]
        torch_factor = torch_draws["factor"][torch_draws["cut"] == kind]
        assert _ks(keras_factor, torch_factor) < 0.15, kind


def test_one_kind_alone_is_always_that_kind() -> None:
    assert not _keras_draws(20, 0.2, 0.0)["cut"].any()
    assert _torch_draws(20, 0.0, 1.0)["cut"].all()


def test_mix_batch_makes_class_probabilities(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mt, "CLASS_NAMES", [str(i) for i in range(CLASSES)])
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(8, 3, 6, 6, generator=generator)
    targets = torch.arange(8) % CLASSES
    np.random.seed(0)
    mixed_images, mixed = mt.mix_batch(images, targets, generator, mixup_alpha=0.2)
    assert mixed.shape == (8, CLASSES)
    np.testing.assert_allclose(mixed.sum(1).numpy(), 1, atol=1e-6)
    assert mixed_images.shape == images.shape
    # each row holds its own class and the reversed batch's
    for i in range(8):
        support = set(np.flatnonzero(mixed[i].numpy() > 1e-7))
        assert support <= {int(targets[i]), int(targets[7 - i])}
