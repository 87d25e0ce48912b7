"""The losses a `train` section takes, with both scripts' emitters."""

from __future__ import annotations

from typing import Annotated, ClassVar

from cnnspec.binding import Bound
from cnnspec.codegen import Call
from cnnspec.registry import no_emitter
from cnnspec.schema import Field, Fraction01


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

    def for_labels(self, labels: str) -> Loss:
        """The loss as it trains on labels encoded as `labels`: itself, or for a loss that
        takes every encoding (focal_loss), its form for that one, which the checker and the
        emitters read."""
        return self

    def keras_helpers(self) -> tuple[str, ...]:
        """The Keras script's definitions the loss object needs, as `module:name` of
        cnnspec/runtime/<module>.py."""
        return ()


class _SoftmaxCrossentropy(Loss):
    activation: ClassVar[str] = "softmax"

    def torch(self) -> str:
        if not self.smoothing():
            return 'losses = F.cross_entropy(logits, targets, reduction="none")'
        return (  # wrapped as ruff formats it, the line being too long for the scripts
            "losses = F.cross_entropy("
            '\n        logits, targets, reduction="none", label_smoothing=LABEL_SMOOTHING'
            "\n    )"
        )

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


class FocalLoss(Loss):
    """Focal cross-entropy (Lin et al.), Keras's: on one-hot labels (its multi-class form,
    the registered one) CategoricalFocalCrossentropy; on sparse labels the same, the labels
    one-hot encoded first; on binary labels BinaryFocalCrossentropy, class-balanced by
    alpha."""

    kind: ClassVar[str] = "focal_loss"
    labels: ClassVar[str] = "onehot"
    activation: ClassVar[str] = "softmax"
    keras_class: ClassVar[str] = "CategoricalFocalCrossentropy"
    gamma: Annotated[float, Field(ge=0)] = 2.0
    alpha: Annotated[float, Field(ge=0, le=1)] = 0.25
    label_smoothing: Fraction01 = 0.0

    def for_labels(self, labels: str) -> Loss:
        form = {"binary": BinaryFocalLoss, "sparse": SparseFocalLoss}.get(labels, FocalLoss)
        if form is type(self):
            return self
        return form(**dict(self)).located(self.span, self._arg_spans)

    def torch(self) -> str:
        # Keras's categorical_focal_crossentropy: on the softmax's probabilities (no
        # logits shortcut there), clipped to its epsilon.
        lines = [
            "onehot = targets  # class probabilities, where batches are mixed",
            "if targets.ndim == 1:  # class indices",
            "    onehot = F.one_hot(targets.long(), logits.shape[1]).float()",
        ]
        if self.label_smoothing:
            lines.append(
                "onehot = onehot * (1 - LABEL_SMOOTHING) + LABEL_SMOOTHING / logits.shape[1]"
            )
        lines += [
            "probabilities = torch.softmax(logits, dim=1).clamp(1e-7, 1 - 1e-7)",
            f"focal = {self.alpha!r} * (1 - probabilities) ** {self.gamma!r}",
            "losses = (focal * -onehot * probabilities.log()).sum(dim=1)",
        ]
        return "\n    ".join(lines)


class SparseFocalLoss(FocalLoss):
    labels: ClassVar[str] = "sparse"

    def keras(self) -> Call:
        return Call("SparseCategoricalFocalCrossentropy", **self.explicit())

    def keras_helpers(self) -> tuple[str, ...]:
        return ("metrics_keras:one_hot_labels", "metrics_keras:SparseCategoricalFocalCrossentropy")


class BinaryFocalLoss(FocalLoss):
    labels: ClassVar[str] = "binary"
    activation: ClassVar[str] = "sigmoid"
    keras_class: ClassVar[str] = "BinaryFocalCrossentropy"

    def keras(self) -> Call:
        return Call(
            "keras.losses.BinaryFocalCrossentropy", apply_class_balancing=True, **self.explicit()
        )

    def torch(self) -> str:
        # Keras's binary_focal_crossentropy: its cross-entropy from the sigmoid's logits
        # (as Keras computes it under a sigmoid output), the focal factor from the
        # probabilities, and the class balance by alpha.
        lines = ["targets = targets.float().view(-1, 1)"]
        if self.label_smoothing:
            lines.append("targets = targets * (1 - LABEL_SMOOTHING) + 0.5 * LABEL_SMOOTHING")
        lines += [
            "probabilities = torch.sigmoid(logits)",
            "p_t = targets * probabilities + (1 - targets) * (1 - probabilities)",
            f"alpha = {self.alpha!r}",
            "balance = targets * alpha + (1 - targets) * (1 - alpha)",
            'cross = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")',
            f"losses = (balance * (1 - p_t) ** {self.gamma!r} * cross).view(-1)",
        ]
        return "\n    ".join(lines)


LOSSES: dict[str, type[Bound]] = {
    c.kind: c
    for c in (
        CategoricalCrossentropy,
        SparseCategoricalCrossentropy,
        BinaryCrossentropy,
        FocalLoss,
    )
}
LOSS_FOR_LABELS: dict[str, type[Loss]] = {
    "onehot": CategoricalCrossentropy,
    "sparse": SparseCategoricalCrossentropy,
    "binary": BinaryCrossentropy,
}


def training_loss(loss: Loss | None, labels: str) -> Loss:
    """The loss a run trains with: the spec's (in its form for `labels`), or the one for
    the labels."""
    return (loss or LOSS_FOR_LABELS[labels]()).for_labels(labels)
