"""What an augmentation step is: its entry's emitters for both scripts."""

from typing import ClassVar

from cnnspec.binding import Bound
from cnnspec.codegen import Call, Code
from cnnspec.registry import no_emitter

# What the PyTorch script's augmentation functions take: the batch and the training generator.
IMAGES, GENERATOR = Code("images"), Code("generator")


class Augmentation(Bound):
    kind: ClassVar[str]
    doc: ClassVar[str] = ""
    # Geometric steps resample the image and take the `fill` step's mode.
    geometric: ClassVar[bool] = False
    # Batch-level steps (mixup, cutmix) mix whole batches and their labels after the
    # per-image steps: no layer of the Keras augmentation model, no call in `augment`.
    batch_level: ClassVar[bool] = False

    @no_emitter
    def keras(self, fill: dict[str, object]) -> Call | None:
        """The Keras preprocessing layer of this step (None: an option of other steps);
        `fill` holds the geometric layers' fill options."""
        raise NotImplementedError(f"augmentation {self.kind!r} has no Keras emitter")

    @no_emitter
    def torch(self) -> Call | None:
        """The PyTorch script's call of this step on `images` (None: an option of other
        steps), one of the script's augmentation functions (see `torch_helpers`)."""
        raise NotImplementedError(f"augmentation {self.kind!r} has no PyTorch emitter")

    def torch_helpers(self) -> tuple[str, ...]:
        """The PyTorch script's augmentation functions this step calls, in dependency order:
        a name of the backend's AUGMENTATIONS table (functions of cnnspec/runtime/torch.py),
        or `module:name`, a definition of cnnspec/runtime/<module>.py."""
        return ()

    def keras_helpers(self) -> tuple[str, ...]:
        """The Keras script's definitions this step's layer needs (its own preprocessing
        layer, say), as `module:name` of cnnspec/runtime/<module>.py, dependencies first."""
        return ()
