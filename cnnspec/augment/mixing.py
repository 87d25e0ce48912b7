"""Batch-level augmentation that mixes labels too: `mixup(alpha)` and `cutmix(alpha)`, timm's
Mixup in its "batch" mode (one mixing factor per batch, each image mixed with the batch's
reversed order). Given both, each batch takes one of them, with even odds, as timm's
`switch_prob=0.5` does.

They are no per-image step: both scripts mix a whole batch after its per-image augmentation
and label encoding, the Keras script in its tf.data map (`BatchMixing`), the PyTorch script in
its training loop (`mix_batch`), each the same formula of the same drawn parameters
(cnnspec/runtime/mixing_keras.py and mixing_torch.py). Mixed labels are class probabilities:
only one-hot labels take them (the checker's E323)."""

from typing import ClassVar

from cnnspec.augment.base import Augmentation
from cnnspec.codegen import Call, Code
from cnnspec.schema import Field


class _Mixing(Augmentation):
    positional: ClassVar[tuple[str, ...]] = ("alpha",)
    batch_level: ClassVar[bool] = True
    alpha: float

    def keras(self, fill: dict[str, object]) -> Call | None:
        """This kind's part of the Keras pipeline's BatchMixing (see keras_mixing)."""
        return Call("BatchMixing", **{f"{self.kind}_alpha": self.alpha})

    def torch(self) -> Call | None:
        """This kind's part of the training loop's mix_batch (see torch_mixing)."""
        batch = (Code("inputs"), Code("targets"), Code("generator"))
        return Call("mix_batch", *batch, **{f"{self.kind}_alpha": self.alpha})

    def keras_helpers(self) -> tuple[str, ...]:
        return ("mixing_keras:draw_mixing", "mixing_keras:apply_mixing", "mixing_keras:BatchMixing")

    def torch_helpers(self) -> tuple[str, ...]:
        return ("mixing_torch:draw_mixing", "mixing_torch:apply_mixing", "mixing_torch:mix_batch")


class Mixup(_Mixing):
    kind: ClassVar[str] = "mixup"
    doc: ClassVar[str] = (
        "Blend each image and its label with another of the batch, by a factor drawn from "
        "Beta(alpha, alpha) per batch."
    )
    alpha: float = Field(default=0.2, gt=0)


class CutMix(_Mixing):
    kind: ClassVar[str] = "cutmix"
    doc: ClassVar[str] = (
        "Paste a random box of another image of the batch into each image, the labels mixed "
        "by the box's area; the box's share of the area is drawn from Beta(alpha, alpha)."
    )
    alpha: float = Field(default=1.0, gt=0)


STEPS = (Mixup, CutMix)


def _merged(backend: str, steps: tuple[Augmentation, ...], *args: object) -> Call | None:
    """One call of the mixing function with every mixing step's settings (None: no step
    mixes), each step's part written by its emitter."""
    from cnnspec.emitters import tables

    emitters = tables(backend)["augmentations"]
    calls = [emitters.emit(step, *args) for step in steps if step.batch_level]
    if not calls:
        return None
    options = {key: value for call in calls for key, value in call.kwargs.items()}
    return Call(calls[0].func, *calls[0].args, **options)


def keras_mixing(steps: tuple[Augmentation, ...]) -> Call | None:
    """The Keras script's BatchMixing over the batches of make_datasets (None: no mixing)."""
    merged = _merged("keras", steps, {})
    if merged is None:
        return None
    # A seed of its own: build_augmentation's layers take seed, seed + 1, ... one per step.
    return Call(merged.func, *merged.args, **merged.kwargs, seed=Code("seed + 100"))


def torch_mixing(steps: tuple[Augmentation, ...]) -> Call | None:
    """The PyTorch training loop's call that mixes a batch (None: no mixing)."""
    return _merged("pytorch", steps)
