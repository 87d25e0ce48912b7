"""The two recipes shipped as specs (issue 28) train for real on small data in both scripts:
specs/cifar10_recipe.cnn (a ResNet-20 with padded random crops, SGD with Nesterov momentum,
decoupled weight decay and EMA, warmup into cosine, label smoothing, top-k accuracy) on a tiny
CIFAR-10 archive, and specs/finetune_recipe.cnn (a ResNet50 backbone, AdamW with clipping,
warmup into cosine in two phases, RandAugment, random erasing, random resized crops, mixup and
cutmix, F1 monitored by early stopping) on tiny image folders, at the tests' backbone size.
Each run logs the same metrics in both scripts, follows its schedule, and evaluates."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("keras")
pytest.importorskip("torch")

from tests.conftest import ROOT
from tests.frameworks.scripts import (
    BACKBONE_TEST_SIZE,
    load_script,
    shipped_spec,
    write_script,
    write_tiny_cifar10,
    write_tiny_image_folders,
)

pytestmark = pytest.mark.frameworks

FLOWERS = ("daisy", "dandelion", "roses", "sunflowers", "tulips")


def _train(tmp_path: Path, name: str, backend_name: str, *args: str) -> dict:
    spec = shipped_spec(ROOT / "specs" / f"{name}.cnn")
    module = load_script(write_script(spec, tmp_path, backend_name))
    out = tmp_path / f"run_{backend_name}"
    module.main([*args, "--output-dir", str(out), "--epochs", "1", "--batch-size", "16"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "weights.safetensors").is_file()
    return metrics


# Keras's run (16 s) is in `make test-library`; PyTorch's trains the recipe here.
@pytest.mark.parametrize(
    "backend_name", [pytest.param("keras", marks=pytest.mark.library), "pytorch"]
)
def test_the_cifar10_recipe_trains(backend_name: str, tmp_path: Path) -> None:
    data = write_tiny_cifar10(tmp_path / "data", per_batch=16).parent
    metrics = _train(tmp_path, "cifar10_recipe", backend_name, "--data-dir", str(data))
    (row,) = metrics["history"]
    expected = {"loss", "accuracy", "top_k_accuracy", "val_loss", "val_top_k_accuracy"}
    assert expected <= set(row)
    assert 0 <= row["top_k_accuracy"] <= 1 and row["accuracy"] <= row["top_k_accuracy"]
    # Half-way through the two-epoch warmup of a 60-epoch cosine (the rate of the next step,
    # (E + 1) / 2E of the peak 0.2, for E steps an epoch).
    assert 0.1 <= row["learning_rate"] < 0.2
    assert 0 <= metrics["test"]["accuracy"] <= 1


@pytest.mark.parametrize(
    "backend_name",
    [
        # Keras traces ResNet50's training twice (45 s of the 10 minutes `make test` may
        # take): `make test-library` runs it; the pipeline test below covers its data here.
        pytest.param("keras", marks=pytest.mark.library),
        "pytorch",
    ],
)
def test_the_finetune_recipe_trains_both_phases(backend_name: str, tmp_path: Path) -> None:
    data = write_tiny_image_folders(tmp_path / "flowers", FLOWERS, size=72, per_class=3)
    metrics = _train(
        tmp_path,
        "finetune_recipe",
        backend_name,
        *("--data-dir", str(data), "--image-size", str(BACKBONE_TEST_SIZE)),
        *("--weights", "none"),
    )
    history = metrics["history"]
    assert [(row["phase"], row["epoch"]) for row in history] == [("head", 1), ("finetune", 2)]
    for row in history:
        assert {"f1", "val_f1", "accuracy", "loss"} <= set(row)
        assert 0 <= row["f1"] <= 1 and row["loss"] == row["loss"]  # not NaN
    # The rate of the next step: the head's one-epoch warmup is over (its peak, 1e-3); the
    # fine-tuning phase is half-way through its two epochs of warmup to 1e-4.
    assert history[0]["learning_rate"] == pytest.approx(1e-3, rel=1e-5)
    assert 0.5e-4 <= history[1]["learning_rate"] < 1e-4
    assert set(metrics["test"]["report"]) >= set(FLOWERS)


def test_the_finetune_recipes_keras_pipeline_augments_and_mixes(tmp_path: Path) -> None:
    """The Keras script's tf.data pipeline of the fine-tuning recipe, as its training runs
    it: resized crops, RandAugment, flips and random erasing on the pixels, then mixup or
    cutmix: batches of the model's size, in the pixel range (caffe preprocessing after),
    whose labels are class probabilities, most of them of two classes."""
    data = write_tiny_image_folders(tmp_path / "flowers", FLOWERS, size=72, per_class=3)
    spec = shipped_spec(ROOT / "specs" / "finetune_recipe.cnn")
    module = load_script(write_script(spec, tmp_path, "keras"))
    splits = module.load_data(str(data))
    datasets = module.make_datasets(splits, batch_size=16, image_size=BACKBONE_TEST_SIZE)
    mixed = 0
    for images, labels in datasets["train"].take(2):
        assert tuple(images.shape[1:]) == (BACKBONE_TEST_SIZE, BACKBONE_TEST_SIZE, 3)
        assert np.isfinite(np.asarray(images)).all()
        rows = np.asarray(labels)
        np.testing.assert_allclose(rows.sum(1), 1, atol=1e-5)
        mixed += int(((rows > 1e-6).sum(1) == 2).sum())
    assert mixed >= 8
