"""The training metrics (`metrics(accuracy, auc)`), with both scripts' code."""

from dataclasses import dataclass
from typing import ClassVar, Literal

from cnnspec.binding import Bound
from cnnspec.codegen import Call


@dataclass(frozen=True, slots=True)
class Metric:
    """A training metric, with both backends' code: Keras's metric object (or name), and the
    PyTorch script's function of an epoch's `probabilities` ((N, 1) sigmoid or (N, K) softmax),
    `predicted` classes and integer `targets`, which gives what Keras reports."""

    name: str
    keras: Call | str
    torch: str  # the body of `metric_<name>(probabilities, predicted, targets)`
    torch_imports: tuple[str, ...] = ()  # from sklearn.metrics


_MICRO = """if probabilities.shape[1] == 1:  # the positive class
    chosen, actual = predicted == 1, targets == 1
else:  # micro-averaged over one-hot columns, as Keras on one-hot labels
    chosen, actual = probabilities >= 0.5, np.eye(probabilities.shape[1])[targets] == 1
hits = float((chosen & actual).sum())
total = {total}.sum()
return hits / total if total else 0.0"""

METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", "accuracy", "return float((predicted == targets).mean())"),
        Metric(
            "auc",
            Call("keras.metrics.AUC", name="auc"),
            """try:
    if probabilities.shape[1] == 1:
        return float(roc_auc_score(targets, probabilities[:, 0]))
    onehot = np.eye(probabilities.shape[1])[targets]
    return float(roc_auc_score(onehot.ravel(), probabilities.ravel()))
except ValueError:  # a single class in this set: AUC is undefined
    return 0.5""",
            ("roc_auc_score",),
        ),
        Metric(
            "precision",
            Call("keras.metrics.Precision", name="precision"),
            _MICRO.format(total="chosen"),
        ),
        Metric(
            "recall",
            Call("keras.metrics.Recall", name="recall"),
            _MICRO.format(total="actual"),
        ),
    )
}
METRIC_NAMES = tuple(METRICS)


class Metrics(Bound):
    varargs: ClassVar[str | None] = "names"
    names: tuple[Literal["accuracy", "auc", "precision", "recall"], ...] = ("accuracy",)
