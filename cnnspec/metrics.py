"""The training metrics (`metrics(accuracy, f1, top_k_accuracy(k=3))`), one entry per kind with
both scripts' code.

A metric is a bare name or a call with arguments. Its Keras code is a metric object (or
Keras's own name for it) that fits the labels' encoding; its PyTorch code is the body of the
script's `metric_<kind>(probabilities, predicted, targets)`, a function of an epoch's
`probabilities` ((N, 1) sigmoid or (N, K) softmax), `predicted` classes, integer `targets`
and, where mixup or cutmix mixed the batches, the `mixed` labels ((N, K) class
probabilities; `targets` are then their most weighted classes), which computes exactly what
the Keras object reports over that epoch, mixed labels read as Keras reads them. Both
scripts log it under its kind (`f1`, `val_f1`), which callbacks and sweeps monitor."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from cnnspec import codes
from cnnspec.binding import Bound, CallValue, bind_value
from cnnspec.codegen import Call
from cnnspec.diagnostics import did_you_mean
from cnnspec.registry import no_emitter
from cnnspec.schema import Before, Field, Problem

# What a metric may find wrong with the model's output: its code, message and hint.
Misfit = tuple[codes.ErrorCode, str, str]


class Metric(Bound):
    """A training metric, with both backends' code."""

    kind: ClassVar[str]
    doc: ClassVar[str] = ""
    # What the PyTorch body imports from sklearn.metrics.
    torch_imports: ClassVar[tuple[str, ...]] = ()

    @no_emitter
    def keras(self, labels: str) -> Call | str:
        """Keras's metric object for labels encoded as `labels` (onehot, sparse, binary)."""
        raise NotImplementedError(f"metric {self.kind!r} has no Keras emitter")

    @no_emitter
    def torch(self) -> str:
        """The body of the PyTorch script's
        `metric_<kind>(probabilities, predicted, targets, mixed=None)`."""
        raise NotImplementedError(f"metric {self.kind!r} has no PyTorch emitter")

    def keras_helpers(self, labels: str) -> tuple[str, ...]:
        """The Keras script's definitions the metric object needs, as `module:name` of
        cnnspec/runtime/<module>.py."""
        return ()

    def misfit(self, units: int, activation: str) -> Misfit | None:
        """What is wrong with this metric on a model that ends with `units` units of
        `activation`, or None."""
        return None


class Accuracy(Metric):
    kind: ClassVar[str] = "accuracy"
    doc: ClassVar[str] = "The share of examples whose predicted class is the true one."

    def keras(self, labels: str) -> Call | str:
        return "accuracy"

    def torch(self) -> str:
        return "return float((predicted == targets).mean())"


class AUC(Metric):
    kind: ClassVar[str] = "auc"
    doc: ClassVar[str] = "Area under the ROC curve (one-hot columns pooled for several classes)."
    torch_imports: ClassVar[tuple[str, ...]] = ("roc_auc_score",)

    def keras(self, labels: str) -> Call | str:
        return Call("keras.metrics.AUC", name="auc")

    def torch(self) -> str:
        return """try:
    if probabilities.shape[1] == 1:
        return float(roc_auc_score(targets, probabilities[:, 0]))
    onehot = np.eye(probabilities.shape[1])[targets]
    if mixed is not None:  # Keras reads a label as positive where it is not 0
        onehot = mixed > 0
    return float(roc_auc_score(onehot.ravel(), probabilities.ravel()))
except ValueError:  # a single class in this set: AUC is undefined
    return 0.5"""


_MICRO = """if probabilities.shape[1] == 1:  # the positive class
    chosen, actual = predicted == 1, targets == 1
else:  # micro-averaged over one-hot columns, as Keras on one-hot labels
    chosen = probabilities >= 0.5
    actual = np.eye(probabilities.shape[1])[targets] == 1
    if mixed is not None:  # Keras reads a label as positive where it is not 0
        actual = mixed > 0
hits = float((chosen & actual).sum())
total = {total}.sum()
return hits / total if total else 0.0"""


class Precision(Metric):
    kind: ClassVar[str] = "precision"
    doc: ClassVar[str] = "Of the examples predicted positive, the share that are."

    def keras(self, labels: str) -> Call | str:
        return Call("keras.metrics.Precision", name="precision")

    def torch(self) -> str:
        return _MICRO.format(total="chosen")


class Recall(Metric):
    kind: ClassVar[str] = "recall"
    doc: ClassVar[str] = "Of the positive examples, the share predicted positive."

    def keras(self, labels: str) -> Call | str:
        return Call("keras.metrics.Recall", name="recall")

    def torch(self) -> str:
        return _MICRO.format(total="actual")


# Keras's F1Score: a sigmoid output's class is positive above 0.5 (strictly); a softmax
# output's is every class that has the highest probability (ties all count), and never a
# class of probability 0. Its sums then give each class's F1 with Keras's epsilon; a mixed
# label counts for each of its classes by its share, as in Keras's sums.
_F1 = """if probabilities.shape[1] == 1:
    chosen, actual = probabilities > 0.5, targets.reshape(-1, 1) == 1
else:
    highest = probabilities.max(axis=1, keepdims=True)
    chosen = (probabilities >= highest) & (np.abs(probabilities) > 1e-9)
    onehot = np.eye(probabilities.shape[1])[targets]
    actual = mixed if mixed is not None else onehot
chosen, actual = chosen.astype(float), actual.astype(float)
hits = (chosen * actual).sum({axis})
precision = hits / (hits + (chosen * (1 - actual)).sum({axis}) + 1e-7)
recall = hits / (hits + ((1 - chosen) * actual).sum({axis}) + 1e-7)
f1 = 2 * precision * recall / (precision + recall + 1e-7)
"""

_F1_AVERAGE = {
    "macro": "return float(f1.mean())",
    "micro": "return float(f1)",
    "weighted": """support = actual.sum(axis=0)
return float((f1 * support / (support.sum() + 1e-7)).sum())""",
}


class F1(Metric):
    kind: ClassVar[str] = "f1"
    doc: ClassVar[str] = (
        "F1 score: the mean over the classes of each one's F1 (average=macro), from the "
        "summed counts (micro), or weighted by class support (weighted); for a sigmoid "
        "output, the positive class's."
    )
    positional: ClassVar[tuple[str, ...]] = ("average",)
    average: Literal["macro", "micro", "weighted"] = "macro"

    def keras(self, labels: str) -> Call | str:
        if labels == "binary":  # one column: without a threshold, every example is positive
            return Call("keras.metrics.F1Score", average=self.average, threshold=0.5, name="f1")
        metric = "SparseF1Score" if labels == "sparse" else "keras.metrics.F1Score"
        return Call(metric, average=self.average, name="f1")

    def keras_helpers(self, labels: str) -> tuple[str, ...]:
        if labels != "sparse":
            return ()
        return ("metrics_keras:one_hot_labels", "metrics_keras:SparseF1Score")

    def torch(self) -> str:
        axis = "" if self.average == "micro" else "axis=0"
        return _F1.format(axis=axis) + _F1_AVERAGE[self.average]


class TopKAccuracy(Metric):
    kind: ClassVar[str] = "top_k_accuracy"
    doc: ClassVar[str] = "The share of examples whose true class is among the k most probable."
    positional: ClassVar[tuple[str, ...]] = ("k",)
    k: Annotated[int, Field(gt=0)] = 5

    def keras(self, labels: str) -> Call | str:
        sparse = "Sparse" if labels == "sparse" else ""
        return Call(
            f"keras.metrics.{sparse}TopKCategoricalAccuracy", k=self.k, name="top_k_accuracy"
        )

    def torch(self) -> str:
        return f"""# In the top k: fewer than k classes are more probable (ties count in, as Keras's).
scored = probabilities[np.arange(len(targets)), targets]
return float(((probabilities > scored[:, None]).sum(axis=1) < {self.k!r}).mean())"""

    def misfit(self, units: int, activation: str) -> Misfit | None:
        if units == 1:
            return (
                codes.METRIC_OUTPUT,
                f"top_k_accuracy ranks several classes, but the model ends with one "
                f"{activation} unit",
                "use accuracy for a binary classifier",
            )
        if self.k >= units:
            return (
                codes.TOP_K_CLASSES,
                f"top_k_accuracy(k={self.k}) over {units} classes is always 1",
                f"use a k smaller than {units}",
            )
        return None


METRICS: dict[str, type[Metric]] = {
    m.kind: m for m in (Accuracy, AUC, Precision, Recall, F1, TopKAccuracy)
}
METRIC_NAMES = tuple(METRICS)


# Keras's and scikit-learn's names for the metrics, answered with cnnspec's.
FRAMEWORK_NAMES = {
    "f1_score": "f1",
    "F1Score": "f1",
    "top_k_categorical_accuracy": "top_k_accuracy",
    "sparse_top_k_categorical_accuracy": "top_k_accuracy",
    "TopKCategoricalAccuracy": "top_k_accuracy",
    "AUC": "auc",
}


def _metric(value: Any) -> Any:
    """A metric as written, a name or a call, bound to its entry."""
    if isinstance(value, Metric):
        return value
    if isinstance(value, str | CallValue):
        name = value if isinstance(value, str) else value.name
        entry = METRICS.get(name)
        if entry is None:
            ours = FRAMEWORK_NAMES.get(name)
            raise Problem(
                f"unknown metric '{name}'",
                hint=f"cnnspec calls {name} '{ours}'" if ours else did_you_mean(name, METRIC_NAMES),
                kind="choice",
                choices=METRIC_NAMES,
            )
        try:
            return bind_value(value, entry, name)
        except ValueError as error:
            raise Problem(str(error)) from None
    raise Problem("must be a metric such as accuracy or top_k_accuracy(k=3)")


class Metrics(Bound):
    varargs: ClassVar[str | None] = "entries"
    entries: tuple[Annotated[Metric, Before(_metric)], ...] = (Accuracy(),)

    @property
    def names(self) -> tuple[str, ...]:
        """What the scripts log the metrics as (and `val_` + it on validation data)."""
        return tuple(entry.kind for entry in self.entries)
