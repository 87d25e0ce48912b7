"""The augment section's steps: one registry entry per kind, each with both scripts' emitters.
Each module of this package holds a family and lists it in its `STEPS`."""

from cnnspec.augment import classic, color, crops, mixing
from cnnspec.augment.base import GENERATOR, IMAGES, Augmentation
from cnnspec.binding import Bound

AUGMENTATIONS: dict[str, type[Bound]] = {
    step.kind: step for family in (classic, crops, mixing, color) for step in family.STEPS
}

__all__ = ["AUGMENTATIONS", "GENERATOR", "IMAGES", "Augmentation"]
