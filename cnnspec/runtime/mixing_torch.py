"""Mixup and cutmix in the PyTorch scripts: timm's Mixup in its "batch" mode, on a
training batch in run_epoch, after its per-image augmentation. Copied into the scripts
by name; the Keras scripts' twin is mixing_keras.py, the same formulas of the same
parameters (tests/frameworks/test_mixing.py)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cnnspec.runtime.script import CLASS_NAMES


def draw_mixing(generator, images, mixup_alpha, cutmix_alpha):
    """One batch's mixing, as timm draws it: `cut`, whether it pastes a box (cutmix;
    even odds when both kinds are given) or blends (mixup); `factor`, from Beta(alpha,
    alpha) of the kind drawn (numpy's, as timm's; the run seeds and resumes it);
    `center`, the box's centre (row, column), uniform over the image."""
    height, width = images.shape[2:]
    device = generator.device
    if mixup_alpha and cutmix_alpha:
        cut = bool(torch.rand((), generator=generator, device=device) < 0.5)
    else:
        cut = bool(cutmix_alpha)
    alpha = cutmix_alpha if cut else mixup_alpha
    factor = torch.tensor(np.random.beta(alpha, alpha), dtype=torch.float32)
    row = int(torch.randint(0, height, (), generator=generator, device=device))
    column = int(torch.randint(0, width, (), generator=generator, device=device))
    return {"cut": cut, "factor": factor, "center": (row, column)}


def apply_mixing(images, targets, params):
    """Mix each image and its one-hot target with the batch's reversed order: a blend by
    `factor`, or the other image's box of 1 - factor of the area (its sides floored,
    clipped at the edges) pasted in, the targets weighted by the area each image
    keeps."""
    height, width = images.shape[2:]
    other_images, other_targets = images.flip(0), targets.flip(0)
    factor = torch.as_tensor(params["factor"], dtype=torch.float32)
    if params["cut"]:
        ratio = torch.sqrt(1 - factor)
        box_height = int(torch.floor(height * ratio))
        box_width = int(torch.floor(width * ratio))
        row, column = params["center"]
        top = min(max(row - box_height // 2, 0), height)
        bottom = min(max(row + box_height // 2, 0), height)
        left = min(max(column - box_width // 2, 0), width)
        right = min(max(column + box_width // 2, 0), width)
        mixed = images.clone()
        box = (slice(None), slice(None), slice(top, bottom), slice(left, right))
        mixed[box] = other_images[box]
        area = torch.tensor(float((bottom - top) * (right - left)))
        weight = 1 - area / torch.tensor(float(height * width))
    else:
        factor = factor.to(images.device)
        mixed = factor * images + (1 - factor) * other_images
        weight = factor
    weight = weight.to(targets.device)
    return mixed, weight * targets + (1 - weight) * other_targets


def mix_batch(images, targets, generator, mixup_alpha=0.0, cutmix_alpha=0.0):
    """A training batch mixed as the spec's mixup and cutmix say; the integer targets
    become class probabilities."""
    onehot = F.one_hot(targets.view(-1).long(), len(CLASS_NAMES)).float()
    params = draw_mixing(generator, images, mixup_alpha, cutmix_alpha)
    return apply_mixing(images, onehot, params)
