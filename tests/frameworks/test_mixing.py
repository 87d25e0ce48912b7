"""Mixup and cutmix in the generated scripts: the Keras script's training batches come out of
its tf.data pipeline mixed (class probabilities, each row two classes at most) while its
validation batches stay one-hot, and the PyTorch script's training loop trains on mixed
targets, reading them as Keras does for its accuracy and class weights. (The formulas of both
are tested against each other in tests/runtime/test_mixing.py.)"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

pytest.importorskip("keras")
torch = pytest.importorskip("torch")

from tests.frameworks.scripts import checked_spec, load_script, write_script  # noqa: E402

pytestmark = pytest.mark.frameworks
CPU = torch.device("cpu")

SPEC = """\
model mixing {
  input 8x8x1
  conv2d(4, padding=same, activation=relu)
  global_avg_pool()
  dense(10, activation=softmax)
}
data { source digits  rescale 1/16  validation 0.2 }
augment { flip(horizontal)  mixup(0.4)  cutmix(1.0) }
train { epochs 1  batch 32  class_weight balanced  metrics(accuracy, precision) }
"""


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, ModuleType]:
    folder = tmp_path_factory.mktemp("mixing")
    spec = checked_spec(SPEC)
    return (
        load_script(write_script(spec, folder, "keras")),
        load_script(write_script(spec, folder, "pytorch")),
    )


def _splits(module: ModuleType) -> dict:
    splits = module.load_data(None)
    return module.split_validation(splits, 0.2, 0)


def _mixed_rows(labels: np.ndarray) -> int:
    """Rows that are class probabilities of two classes (not one-hot)."""
    np.testing.assert_allclose(labels.sum(1), 1, atol=1e-5)
    assert ((labels > 1e-6).sum(1) <= 2).all()
    return int(((labels > 1e-6).sum(1) == 2).sum())


def test_keras_mixes_training_batches_only(scripts: tuple[ModuleType, ModuleType]) -> None:
    keras_script, _ = scripts
    datasets = keras_script.make_datasets(_splits(keras_script))
    mixed = 0
    for images, labels in datasets["train"].take(4):
        assert images.shape[1:] == (8, 8, 1)
        mixed += _mixed_rows(np.asarray(labels))
    assert mixed > 20  # 4 batches of 32: most rows mix two classes
    for _, labels in datasets["val"].take(2):
        assert _mixed_rows(np.asarray(labels)) == 0


def test_pytorch_trains_on_mixed_targets(scripts: tuple[ModuleType, ModuleType]) -> None:
    _, torch_script = scripts
    torch.manual_seed(0)
    np.random.seed(0)
    loaders = torch_script.make_loaders(_splits(torch_script))
    net = torch_script.build_model()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    generator = torch.Generator().manual_seed(0)
    weights = {i: 1.0 + i / 10 for i in range(10)}
    logs, _ = torch_script.run_epoch(
        net, net.logits, loaders["train"], CPU, optimizer, weights, generator
    )
    assert np.isfinite(logs["loss"]) and 0 <= logs["accuracy"] <= 1
    assert 0 <= logs["precision"] <= 1
    # The mix happens in the loop: a batch through mix_batch holds two classes per row.
    images, targets = next(iter(loaders["train"]))
    inputs = torch_script.prepare(images, CPU, generator)
    _, mixed = torch_script.mix_batch(inputs, targets, generator, 0.4, 1.0)
    assert _mixed_rows(mixed.numpy()) > 0
    val_logs, _ = torch_script.run_epoch(net, net.logits, loaders["val"], CPU)
    assert 0 <= val_logs["accuracy"] <= 1


def test_each_script_names_its_mixing(tmp_path: Path) -> None:
    spec = checked_spec(SPEC)
    keras_text = write_script(spec, tmp_path, "keras").read_text()
    torch_text = write_script(spec, tmp_path, "pytorch").read_text()
    assert "mixing = BatchMixing(mixup_alpha=0.4, cutmix_alpha=1.0, seed=seed + 100)" in keras_text
    assert "images, labels = mixing(images, labels)" in keras_text
    assert "mix_batch(" in torch_text and "mixup_alpha=0.4, cutmix_alpha=1.0" in torch_text
    plain = checked_spec(SPEC.replace("mixup(0.4)  cutmix(1.0)", ""))
    assert "mix_batch" not in write_script(plain, tmp_path, "pytorch").read_text()
    assert "BatchMixing" not in write_script(plain, tmp_path, "keras").read_text()
