"""The losses a `train` section takes, with both scripts' emitters."""

from typing import ClassVar

from cnnspec.binding import Bound
from cnnspec.codegen import Call
from cnnspec.registry import no_emitter
from cnnspec.schema import Fraction01


class Loss(Bound):
    """A loss, with both backends' code: Keras's loss object, and the PyTorch statements that
    turn `logits` and `targets` into per-example `losses` (on logits, as Keras computes them
    from the output activation's input)."""

    kind: ClassVar[str]
    # The label encoding and output activation the loss expects.
    labels: ClassVar[str]
    activation: ClassVar[str]
    keras_class: ClassVar[str]

    def keras(self) -> Call:
        return Call(f"keras.losses.{self.keras_class}", **self.explicit())

    @no_emitter
    def torch(self) -> str:
        raise NotImplementedError(f"{self.kind} has no PyTorch code")


class _SoftmaxCrossentropy(Loss):
    activation: ClassVar[str] = "softmax"

    def torch(self) -> str:
        smoothing = ", label_smoothing=LABEL_SMOOTHING" if self.smoothing() else ""
        return f'losses = F.cross_entropy(logits, targets, reduction="none"{smoothing})'

    def smoothing(self) -> float:
        return float(getattr(self, "label_smoothing", 0.0))


class CategoricalCrossentropy(_SoftmaxCrossentropy):
    kind: ClassVar[str] = "categorical_crossentropy"
    labels: ClassVar[str] = "onehot"
    keras_class: ClassVar[str] = "CategoricalCrossentropy"
    label_smoothing: Fraction01 = 0.0


class SparseCategoricalCrossentropy(_SoftmaxCrossentropy):
    kind: ClassVar[str] = "sparse_categorical_crossentropy"
    labels: ClassVar[str] = "sparse"
    keras_class: ClassVar[str] = "SparseCategoricalCrossentropy"


class BinaryCrossentropy(Loss):
    kind: ClassVar[str] = "binary_crossentropy"
    labels: ClassVar[str] = "binary"
    activation: ClassVar[str] = "sigmoid"
    keras_class: ClassVar[str] = "BinaryCrossentropy"
    label_smoothing: Fraction01 = 0.0

    def torch(self) -> str:
        smoothing = (
            "\n    targets = targets * (1 - LABEL_SMOOTHING) + 0.5 * LABEL_SMOOTHING"
            if self.label_smoothing
            else ""
        )
        return (
            "targets = targets.float().view(-1, 1)"
            + smoothing
            + '\n    losses = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")'
            + "\n    losses = losses.view(-1)"
        )


LOSSES: dict[str, type[Bound]] = {
    c.kind: c for c in (CategoricalCrossentropy, SparseCategoricalCrossentropy, BinaryCrossentropy)
}
LOSS_FOR_LABELS: dict[str, type[Loss]] = {
    "onehot": CategoricalCrossentropy,
    "sparse": SparseCategoricalCrossentropy,
    "binary": BinaryCrossentropy,
}
