"""The crops and erasing of the PyTorch scripts, with torchvision's semantics, each
image of a batch (N, C, H, W) drawing its own box from the training generator. Each
step is a draw of its random parameters and their application, the same formulas of
the same parameters as crops_keras.py's (tests/frameworks/test_augment_crops.py).
Copied into the scripts by name (cnnspec.augment.crops names them)."""

from __future__ import annotations

import numpy as np
import torch

from cnnspec.runtime.torch import uniform


def take_pixels(images, rows, columns):
    """images[n, :, rows[n, i], columns[n, j]] for every image n: the (N, C, H', W')
    batch of each image's own rows and columns."""
    batch = torch.arange(images.shape[0], device=images.device).view(-1, 1, 1)
    picked = images.permute(0, 2, 3, 1)[batch, rows[:, :, None], columns[:, None, :]]
    return picked.permute(0, 3, 1, 2)


def padded_indices(offset, padding, size, fill):
    """Where each of the `size` pixels of a window at `offset` (one per image) of the
    image padded by `padding` along one axis reads the image, and whether it is inside
    the image: reflected (without repeating the edge) or clamped to the edge outside."""
    position = offset.view(-1, 1) - padding + torch.arange(size, device=offset.device)
    inside = (position >= 0) & (position < size)
    if fill == "reflect":
        position = position.abs()
        position = torch.where(position > size - 1, 2 * (size - 1) - position, position)
    return position.clamp(0, size - 1), inside


def draw_random_crop(generator, images, padding):
    """Each image's window in the padded image: its `top` and `left`, uniform over the
    2 * padding + 1 positions along each axis."""
    shape = (images.shape[0], 2)
    device = generator.device
    offsets = torch.randint(
        0, 2 * padding + 1, shape, generator=generator, device=device
    )
    offsets = offsets.to(images.device)
    return {"top": offsets[:, 0], "left": offsets[:, 1]}


def apply_random_crop(images, params, padding, fill, value):
    """Each image's window of the image padded by `padding` on each side with `fill`:
    `value` (constant), its mirror image (reflect) or its edge pixels (edge)."""
    height, width = images.shape[-2:]
    rows, rows_inside = padded_indices(params["top"], padding, height, fill)
    columns, columns_inside = padded_indices(params["left"], padding, width, fill)
    cropped = take_pixels(images, rows, columns)
    if fill == "constant":
        inside = rows_inside[:, None, :, None] & columns_inside[:, None, None, :]
        cropped = cropped.masked_fill(~inside, value)
    return cropped


def random_crop(images, generator, padding, fill, value):
    """torchvision's RandomCrop(size, padding) at the images' own size."""
    params = draw_random_crop(generator, images, padding)
    return apply_random_crop(images, params, padding, fill, value)


def box_tries(fractions, log_ratios, height, width):
    """torchvision's boxes, one per try: `fractions` of the image's area, of aspect
    ratio (width / height) exp(log_ratios), their sides rounded to whole pixels."""
    area = fractions * (height * width)
    ratio = torch.exp(log_ratios)
    return torch.round(torch.sqrt(area / ratio)), torch.round(torch.sqrt(area * ratio))


def first_try(valid, *values):
    """Per image, whether any of its tries is `valid`, and each of `values` at the first
    valid try (at the last try where none is)."""
    tries = valid.shape[1]
    order = torch.arange(tries, device=valid.device).expand_as(valid)
    index = torch.where(valid, order, tries).amin(dim=1)
    found = index < tries
    index = index.clamp(max=tries - 1).view(-1, 1)
    return (found, *(value.gather(1, index).squeeze(1) for value in values))


def draw_random_resized_crop(generator, images, scale, ratio):
    """Each image's box (`top`, `left`, `height`, `width`) as torchvision's
    RandomResizedCrop.get_params draws it: up to 10 tries of an area fraction uniform
    in `scale` and an aspect ratio log-uniform in `ratio`, the first that fits placed
    uniformly; else the central crop of the ratio in `ratio` nearest the image's."""
    height, width = images.shape[-2:]
    fractions = uniform(generator, images, scale[0], scale[1], 10)
    log_ratios = uniform(generator, images, np.log(ratio[0]), np.log(ratio[1]), 10)
    heights, widths = box_tries(fractions, log_ratios, height, width)
    valid = (heights > 0) & (heights <= height) & (widths > 0) & (widths <= width)
    found, heights, widths = first_try(valid, heights, widths)
    fallback_height, fallback_width = height, width
    if width / height < ratio[0]:
        fallback_height = round(width / ratio[0])
    elif width / height > ratio[1]:
        fallback_width = round(height * ratio[1])
    heights = torch.where(found, heights, fallback_height)
    widths = torch.where(found, widths, fallback_width)
    where = uniform(generator, images, 0, 1, 2)
    top = torch.floor(where[:, 0] * (height - heights + 1)).clamp(max=height - heights)
    left = torch.floor(where[:, 1] * (width - widths + 1)).clamp(max=width - widths)
    top = torch.where(found, top, (height - heights) // 2)
    left = torch.where(found, left, (width - widths) // 2)
    box = {"top": top, "left": left, "height": heights, "width": widths}
    return {key: value.long() for key, value in box.items()}


def bilinear_rows(start, length, size):
    """Where each of `size` pixels samples its image's span [start, start + length)
    stretched to `size` pixels, bilinearly with half-pixel centres and no antialiasing
    (F.interpolate's and tf.image.resize's rule): the two source indices along the
    axis, and the second one's weight."""
    length = length.float().view(-1, 1)
    steps = torch.arange(size, device=length.device, dtype=torch.float32)
    position = ((steps + 0.5) * (length / size) - 0.5).clamp(min=0)
    low = torch.floor(position)
    weight = position - low
    high = torch.minimum(low + 1, length - 1)
    start = start.view(-1, 1)
    return start + low.long(), start + high.long(), weight


def apply_random_resized_crop(images, params):
    """Each image's box resized to the image's size (bilinear)."""
    height, width = images.shape[-2:]
    top, bottom, row_weight = bilinear_rows(params["top"], params["height"], height)
    left, right, column_weight = bilinear_rows(params["left"], params["width"], width)
    column_weight = column_weight[:, None, None, :]
    row_weight = row_weight[:, None, :, None]
    upper_left, upper_right = (
        take_pixels(images, top, left),
        take_pixels(images, top, right),
    )
    lower_left, lower_right = (
        take_pixels(images, bottom, left),
        take_pixels(images, bottom, right),
    )
    upper = upper_left + (upper_right - upper_left) * column_weight
    lower = lower_left + (lower_right - lower_left) * column_weight
    return upper + (lower - upper) * row_weight


def random_resized_crop(images, generator, scale, ratio):
    """torchvision's RandomResizedCrop at the images' own size."""
    params = draw_random_resized_crop(generator, images, scale, ratio)
    return apply_random_resized_crop(images, params)


def draw_random_erasing(generator, images, p, scale, ratio):
    """Each image's box as torchvision's RandomErasing draws it: `erase`, with
    probability p, and the first of 10 tries of an area fraction uniform in `scale` and
    an aspect ratio (height / width) log-uniform in `ratio` that fits strictly inside,
    placed uniformly (no erasing when none fits)."""
    height, width = images.shape[-2:]
    chosen = uniform(generator, images, 0, 1) < p
    fractions = uniform(generator, images, scale[0], scale[1], 10)
    log_ratios = uniform(generator, images, np.log(ratio[0]), np.log(ratio[1]), 10)
    heights, widths = box_tries(fractions, -log_ratios, height, width)
    valid = (heights < height) & (widths < width)
    found, heights, widths = first_try(valid, heights, widths)
    heights = torch.where(found, heights, 0)
    widths = torch.where(found, widths, 0)
    where = uniform(generator, images, 0, 1, 2)
    top = torch.floor(where[:, 0] * (height - heights + 1)).clamp(max=height - heights)
    left = torch.floor(where[:, 1] * (width - widths + 1)).clamp(max=width - widths)
    box = {"top": top, "left": left, "height": heights, "width": widths}
    return {"erase": chosen & found, **{key: v.long() for key, v in box.items()}}


def apply_random_erasing(images, params, value):
    """Each chosen image with its box filled with `value`."""
    height, width = images.shape[-2:]
    rows = torch.arange(height, device=images.device)
    columns = torch.arange(width, device=images.device)
    top, left = params["top"].view(-1, 1), params["left"].view(-1, 1)
    in_rows = (rows >= top) & (rows < top + params["height"].view(-1, 1))
    in_columns = (columns >= left) & (columns < left + params["width"].view(-1, 1))
    box = in_rows[:, :, None] & in_columns[:, None, :] & params["erase"].view(-1, 1, 1)
    return images.masked_fill(box[:, None], value)


def random_erasing(images, generator, p, scale, ratio, value):
    """torchvision's RandomErasing with a value in pixel units."""
    params = draw_random_erasing(generator, images, p, scale, ratio)
    return apply_random_erasing(images, params, value)
