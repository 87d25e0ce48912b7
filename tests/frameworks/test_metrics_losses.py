"""f1, top_k_accuracy and focal_loss: the PyTorch scripts' functions against Keras's own
metric and loss objects, as the Keras scripts construct them, on the same seeded random
predictions, for binary, one-hot and sparse labels.

The metric functions and loss statements are the entries' PyTorch code (the bodies the
PyTorch script pastes into `metric_<kind>` and `data_loss`); one spec per label encoding is
also built into both scripts and loaded as modules, so that the scripts' own functions and
the Keras script's own sparse-label classes are what is compared there."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

from cnnspec.codegen import Call  # noqa: E402
from cnnspec.losses import FocalLoss, Loss  # noqa: E402
from cnnspec.metrics import F1, Metric, TopKAccuracy  # noqa: E402
from tests.frameworks.scripts import checked_spec, load_script, write_script  # noqa: E402

ROWS = 300
# The label encodings, with the output each trains: units and activation.
OUTPUTS = {"binary": (1, "sigmoid"), "onehot": (4, "softmax"), "sparse": (4, "softmax")}


def predictions(labels: str, seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits, integer targets and their probabilities, correlated with the targets (so
    that each class is predicted sometimes, right and wrong)."""
    units, _ = OUTPUTS[labels]
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, max(units, 2), ROWS)
    logits = rng.normal(0, 2, (ROWS, units)).astype("float32")
    if units == 1:
        logits[:, 0] += 2 * targets - 1
        probabilities = 1 / (1 + np.exp(-logits.astype("float64")))
    else:
        logits[np.arange(ROWS), targets] += 1.5
        exp = np.exp(logits.astype("float64"))
        probabilities = exp / exp.sum(axis=1, keepdims=True)
    return logits, targets, probabilities.astype("float32")


def keras_truth(labels: str, targets: np.ndarray) -> np.ndarray:
    """The targets as the Keras script's datasets encode them (make_datasets)."""
    if labels == "onehot":
        return np.eye(OUTPUTS[labels][0], dtype="float32")[targets]
    if labels == "binary":
        return targets.reshape(-1, 1).astype("float32")
    return targets


def keras_object(call: Call | str, namespace: dict[str, Any], **extra: Any) -> Any:
    """What the Keras script's `call` constructs (`namespace`: the script's names)."""
    assert isinstance(call, Call)
    return eval(call.func, namespace)(*call.args, **call.kwargs, **extra)


def torch_metric(entry: Metric) -> Any:
    """The PyTorch script's metric function of `entry`, from its body."""
    body = entry.torch().replace("\n", "\n    ")
    namespace: dict[str, Any] = {"np": np}
    exec(f"def metric(probabilities, predicted, targets, mixed=None):\n    {body}", namespace)
    return namespace["metric"]


def torch_losses(loss: Loss) -> Any:
    """The PyTorch script's per-example losses of `loss`, from its statements."""
    namespace: dict[str, Any] = {"torch": torch, "F": torch.nn.functional}
    if getattr(loss, "label_smoothing", 0.0):
        namespace["LABEL_SMOOTHING"] = loss.label_smoothing  # type: ignore[attr-defined]
    exec(f"def losses_of(logits, targets):\n    {loss.torch()}\n    return losses", namespace)
    return namespace["losses_of"]


@pytest.fixture(scope="module")
def keras_namespace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The names of a Keras script whose loss and metrics take sparse labels: its own
    SparseF1Score and SparseCategoricalFocalCrossentropy."""
    spec = checked_spec(
        "model m { input 2x2x1  flatten()  dense(4, activation=softmax) }\n"
        "data { labels sparse }\ntrain { loss focal_loss  metrics(f1) }"
    )
    script = load_script(write_script(spec, tmp_path_factory.mktemp("keras"), "keras"))
    assert hasattr(script, "SparseF1Score")
    return vars(script)


def predicted_classes(probabilities: np.ndarray) -> np.ndarray:
    if probabilities.shape[1] == 1:
        return (probabilities[:, 0] >= 0.5).astype(int)
    return probabilities.argmax(axis=1)


@pytest.mark.parametrize("labels", list(OUTPUTS))
@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
def test_f1_is_keras_f1score(labels: str, average: str, keras_namespace: dict) -> None:
    _, targets, probabilities = predictions(labels)
    entry = F1(average=average)
    metric = keras_object(entry.keras(labels), keras_namespace)
    metric.update_state(keras_truth(labels, targets), probabilities)
    expected = float(metric.result())
    got = torch_metric(entry)(probabilities, predicted_classes(probabilities), targets)
    assert 0.2 < expected < 0.95  # neither trivial nor perfect
    assert got == pytest.approx(expected, abs=1e-6)


def test_binary_f1_is_the_positive_class_f1() -> None:
    from sklearn.metrics import f1_score

    _, targets, probabilities = predictions("binary")
    got = torch_metric(F1())(probabilities, predicted_classes(probabilities), targets)
    expected = f1_score(targets, probabilities[:, 0] > 0.5)
    assert got == pytest.approx(expected, abs=1e-6)


def test_f1_counts_tied_classes_as_keras_does(keras_namespace: dict) -> None:
    """Keras's F1Score marks every class of the highest probability: a tie marks both."""
    probabilities = np.array(
        [[0.4, 0.4, 0.2], [0.1, 0.8, 0.1], [0.5, 0.25, 0.25], [0.2, 0.2, 0.6]], "float32"
    )
    targets = np.array([0, 1, 2, 2])
    entry = F1()
    metric = keras_object(entry.keras("sparse"), keras_namespace)
    metric.update_state(targets, probabilities)
    got = torch_metric(entry)(probabilities, predicted_classes(probabilities), targets)
    assert got == pytest.approx(float(metric.result()), abs=1e-6)


@pytest.mark.parametrize("labels", ["onehot", "sparse"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_top_k_accuracy_is_keras_top_k(labels: str, k: int, keras_namespace: dict) -> None:
    _, targets, probabilities = predictions(labels)
    # Ties at the k-th place count in, as tf.math.in_top_k counts them.
    probabilities[:20] = 0.25
    entry = TopKAccuracy(k=k)
    metric = keras_object(entry.keras(labels), keras_namespace)
    metric.update_state(keras_truth(labels, targets), probabilities)
    expected = float(metric.result())
    got = torch_metric(entry)(probabilities, predicted_classes(probabilities), targets)
    assert got == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("labels", list(OUTPUTS))
@pytest.mark.parametrize(
    "arguments", [{}, {"gamma": 0.5, "alpha": 0.6}, {"gamma": 3.0, "label_smoothing": 0.1}]
)
def test_focal_loss_is_keras_focal_crossentropy(
    labels: str, arguments: dict, keras_namespace: dict
) -> None:
    """Per example, on the output activation's probabilities as Keras gets them (a sigmoid
    output's from keras.activations.sigmoid, whose logits Keras's cross-entropy reads)."""
    logits, targets, _ = predictions(labels)
    logits[:10] *= 12  # probabilities Keras clips to its epsilon
    loss = FocalLoss(**arguments).for_labels(labels)
    keras_loss = keras_object(loss.keras(), keras_namespace, reduction=None)
    activation = keras.activations.sigmoid if labels == "binary" else keras.activations.softmax
    outputs = activation(keras.ops.convert_to_tensor(logits))
    expected = np.asarray(keras_loss(keras_truth(labels, targets), outputs))
    got = torch_losses(loss)(torch.from_numpy(logits), torch.from_numpy(targets)).numpy()
    assert expected.shape == got.shape == (ROWS,)
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_focal_loss_takes_mixed_targets() -> None:
    """Batches mixed by mixup or cutmix carry class probabilities: the loss is their
    weighted sum, as for one-hot rows."""
    logits, targets, _ = predictions("onehot")
    losses_of = torch_losses(FocalLoss())
    onehot = torch.nn.functional.one_hot(torch.from_numpy(targets), 4).float()
    other = onehot.flip(0)
    mixed = losses_of(torch.from_numpy(logits), 0.3 * onehot + 0.7 * other)
    expected = 0.3 * losses_of(torch.from_numpy(logits), onehot) + 0.7 * losses_of(
        torch.from_numpy(logits), other
    )
    assert mixed.numpy() == pytest.approx(expected.numpy(), rel=1e-5)


@pytest.fixture(scope="module", params=list(OUTPUTS))
def script_pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, ModuleType, ModuleType]:
    labels = request.param
    units, activation = OUTPUTS[labels]
    metrics = "accuracy, f1" if units == 1 else "accuracy, f1(average=weighted), top_k_accuracy(2)"
    spec = checked_spec(
        f"model m {{ input 2x2x1  flatten()  dense({units}, activation={activation}) }}\n"
        f"data {{ labels {labels} }}\n"
        f"train {{ loss focal_loss(gamma=1.5, alpha=0.4)  metrics({metrics}) }}"
    )
    folder = tmp_path_factory.mktemp(labels)
    pair = (load_script(write_script(spec, folder, b)) for b in ("keras", "pytorch"))
    return (labels, *pair)  # type: ignore[return-value]


def test_generated_scripts_agree(
    script_pair: tuple[str, ModuleType, ModuleType], tmp_path: Path
) -> None:
    """The Keras script's compiled loss and metrics, and the PyTorch script's data_loss and
    scores, on the same network outputs."""
    labels, keras_script, torch_script = script_pair
    units, _ = OUTPUTS[labels]
    logits, targets, probabilities = predictions(labels, seed=11)
    model = keras_script.build_model(keras_script.INPUT_SHAPE)
    compiled = _compile_like_the_script(keras_script, model, tmp_path)
    truth = keras_truth(labels, targets)
    activation = keras.activations.sigmoid if units == 1 else keras.activations.softmax
    outputs = activation(keras.ops.convert_to_tensor(logits))
    expected_loss = float(compiled["loss"](truth, outputs))
    got_loss = float(torch_script.data_loss(torch.from_numpy(logits), torch.from_numpy(targets)))
    assert got_loss == pytest.approx(expected_loss, rel=1e-5)
    got = torch_script.scores(probabilities, targets)
    names = [m if isinstance(m, str) else m.name for m in compiled["metrics"]]
    assert names == list(got) == torch_script.METRICS
    for metric in compiled["metrics"]:
        if isinstance(metric, str):  # accuracy: tests/frameworks/test_pytorch_script.py
            continue
        metric.update_state(truth, probabilities)
        assert got[metric.name] == pytest.approx(float(metric.result()), abs=1e-6), metric.name


def _compile_like_the_script(script: ModuleType, model: Any, folder: Path) -> dict[str, Any]:
    """The loss and metric objects the Keras script's train() compiles the model with: its
    model.compile call, caught."""
    caught: dict[str, Any] = {}

    def compile(**kwargs: Any) -> None:
        caught.update(kwargs)
        raise _Caught

    model.compile = compile
    with pytest.raises(_Caught):
        script.train(model, {}, folder, epochs=1)
    return {"loss": caught["loss"], "metrics": caught["metrics"]}


class _Caught(Exception):
    pass
