"""The PyTorch script's colour jitter, RandAugment and TrivialAugmentWide, as
torchvision defines them, on a batch (N, C, H, W) of the script's pixels, each image
drawing its own parameters. Copied by name into the scripts (the entries of
cnnspec/augment/color.py name what they need); cnnspec/runtime/color_keras.py is the
Keras script's twin, and tests/frameworks/test_augment_color.py holds the two equal.

The ops work on the pixel range mapped to [0, 1] (torchvision's float images); those
torchvision defines on uint8 (posterize, solarize, equalize) read it as 0..255. Every op
is computed for the whole batch and kept where an image chose it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cnnspec.runtime.color_common import policy_tables
from cnnspec.runtime.script import PIXEL_RANGE
from cnnspec.runtime.torch import uniform

# --- The ops, on [0, 1] pixels; a factor or amount is one per image, (N, 1, 1, 1).


def unit_pixels(images):
    """The batch's pixels mapped from PIXEL_RANGE to [0, 1]."""
    low, high = PIXEL_RANGE
    return (images - low) / (high - low)


def script_pixels(unit):
    """[0, 1] pixels mapped back to PIXEL_RANGE."""
    low, high = PIXEL_RANGE
    return (low + unit * (high - low)).clamp(low, high)


def blend(images, other, factor):
    return (factor * images + (1 - factor) * other).clamp(0, 1)


def grayscale(images):
    """ITU-R 601-2 luma, as torchvision's rgb_to_grayscale; one channel stays."""
    if images.shape[1] == 1:
        return images
    r, g, b = images[:, 0:1], images[:, 1:2], images[:, 2:3]
    return 0.2989 * r + 0.587 * g + 0.114 * b


def adjust_brightness(images, factor):
    return blend(images, torch.zeros_like(images), factor)


def adjust_contrast(images, factor):
    mean = grayscale(images).mean(dim=(1, 2, 3), keepdim=True)
    return blend(images, mean, factor)


def adjust_saturation(images, factor):
    if images.shape[1] == 1:
        return images  # as torchvision (and PIL)
    return blend(images, grayscale(images), factor)


def rgb_to_hsv(images):
    """torchvision's _rgb2hsv: hue in [0, 1), saturation, value; (N, 3, H, W)."""
    r, g, b = images[:, 0], images[:, 1], images[:, 2]
    top = torch.maximum(torch.maximum(r, g), b)
    bottom = torch.minimum(torch.minimum(r, g), b)
    flat = top == bottom
    spread = top - bottom
    ones = torch.ones_like(top)
    saturation = spread / torch.where(flat, ones, top)
    divisor = torch.where(flat, ones, spread)
    rc, gc, bc = (top - r) / divisor, (top - g) / divisor, (top - b) / divisor
    hue_r = torch.where(top == r, bc - gc, 0.0)
    hue_g = torch.where((top == g) & (top != r), 2.0 + rc - bc, 0.0)
    hue_b = torch.where((top != g) & (top != r), 4.0 + gc - rc, 0.0)
    hue = torch.remainder((hue_r + hue_g + hue_b) / 6.0 + 1.0, 1.0)
    return hue, saturation, top


def hsv_to_rgb(hue, saturation, value):
    """torchvision's _hsv2rgb, sector by sector."""
    sector = torch.floor(hue * 6.0)
    f = hue * 6.0 - sector
    sector = torch.remainder(sector, 6)
    p = (value * (1.0 - saturation)).clamp(0.0, 1.0)
    q = (value * (1.0 - saturation * f)).clamp(0.0, 1.0)
    t = (value * (1.0 - saturation * (1.0 - f))).clamp(0.0, 1.0)
    channels = []
    for choices in ((value, q, p, p, t, value), (t, value, value, q, p, p)):
        channels.append(pick_sector(sector, choices))
    channels.append(pick_sector(sector, (p, p, t, value, value, q)))
    return torch.stack(channels, dim=1)


def pick_sector(sector, choices):
    picked = choices[5]
    for index in range(4, -1, -1):
        picked = torch.where(sector == index, choices[index], picked)
    return picked


def adjust_hue(images, shift):
    if images.shape[1] == 1:
        return images
    hue, saturation, value = rgb_to_hsv(images)
    hue = torch.remainder(hue + shift[:, 0], 1.0)
    return hsv_to_rgb(hue, saturation, value)


def adjust_sharpness(images, factor):
    """Blend with torchvision's smoothed image: a 3x3 kernel of ones with 5 at its
    centre, over 13, inside a border that keeps its pixels."""
    height, width = images.shape[2], images.shape[3]
    if height <= 2 or width <= 2:
        return images
    total = 5 * images[:, :, 1:-1, 1:-1]
    for dy in range(3):
        for dx in range(3):
            if (dy, dx) != (1, 1):
                total = total + images[:, :, dy : height - 2 + dy, dx : width - 2 + dx]
    smooth = F.pad(total / 13, (1, 1, 1, 1))
    interior = torch.zeros_like(images, dtype=torch.bool)
    interior[:, :, 1:-1, 1:-1] = True
    return blend(images, torch.where(interior, smooth, images), factor)


def posterize(images, bits):
    """Keep the `bits` high bits of each pixel's 0..255 level."""
    step = 2.0 ** (8 - bits)
    return torch.floor(torch.round(images * 255) / step) * step / 255


def solarize(images, threshold):
    """Invert the pixels at or above `threshold` (a 0..255 level)."""
    return torch.where(images * 255 >= threshold, 1 - images, images)


def autocontrast(images):
    """Stretch each channel to [0, 1]; a flat channel stays."""
    low = images.amin(dim=(2, 3), keepdim=True)
    high = images.amax(dim=(2, 3), keepdim=True)
    flat = high == low
    scale = 1 / torch.where(flat, 1.0, high - low)
    low = torch.where(flat, 0.0, low)
    return ((images - low) * scale).clamp(0, 1)


def equalize(images):
    """torchvision's equalize of each channel's 0..255 histogram; a channel whose
    levels below the top one hold fewer than 255 pixels stays."""
    n, c, h, w = images.shape
    levels = torch.round(images * 255).clamp(0, 255).long().view(n * c, h * w)
    histogram = torch.zeros(n * c, 256, dtype=torch.long, device=images.device)
    histogram.scatter_add_(1, levels, torch.ones_like(levels))
    top = histogram.gather(1, levels.amax(dim=1, keepdim=True))
    step = torch.div(h * w - top, 255, rounding_mode="floor")
    below = histogram.cumsum(dim=1) - histogram
    table = torch.div(below + step // 2, step.clamp(min=1), rounding_mode="floor")
    equalized = table.clamp(0, 255).gather(1, levels).to(images.dtype) / 255
    return torch.where(step > 0, equalized, images.view(n * c, h * w)).view(n, c, h, w)


def sample_nearest(images, maps):
    """Each output pixel takes its nearest source pixel through its image's inverse
    affine map (N, 6), in pixel coordinates centred on the image (torchvision's
    affine); pixels from outside the image are 0."""
    n, c, h, w = images.shape
    y = (torch.arange(h, device=images.device) - (h - 1) / 2).view(1, h, 1)
    x = (torch.arange(w, device=images.device) - (w - 1) / 2).view(1, 1, w)
    m = maps.view(n, 6, 1, 1)
    col = torch.round(m[:, 0] * x + m[:, 1] * y + m[:, 2] + (w - 1) / 2)
    row = torch.round(m[:, 3] * x + m[:, 4] * y + m[:, 5] + (h - 1) / 2)
    inside = (col >= 0) & (col <= w - 1) & (row >= 0) & (row <= h - 1)
    index = (row.clamp(0, h - 1) * w + col.clamp(0, w - 1)).long().view(n, 1, h * w)
    picked = images.flatten(2).gather(2, index.expand(n, c, h * w))
    return torch.where(inside.view(n, 1, h, w), picked.view(n, c, h, w), 0.0)


# --- ColorJitter: brightness, contrast, saturation and hue in a random order per image.

JITTERS = (
    ("brightness", adjust_brightness),
    ("contrast", adjust_contrast),
    ("saturation", adjust_saturation),
    ("hue", adjust_hue),
)


def draw_color_jitter(generator, images, brightness, contrast, saturation, hue):
    """Each image's order of the four adjustments (a permutation of 0..3: brightness,
    contrast, saturation, hue), its three factors and its hue shift."""
    params = {"order": torch.argsort(uniform(generator, images, 0, 1, 4), dim=1)}
    for name, amount in (
        ("brightness", brightness),
        ("contrast", contrast),
        ("saturation", saturation),
    ):
        params[name] = uniform(generator, images, max(0, 1 - amount), 1 + amount)
    params["hue"] = uniform(generator, images, -hue, hue)
    return params


def apply_color_jitter(images, params, brightness, contrast, saturation, hue):
    """The drawn adjustments in each image's order; those the spec leaves at 0 are
    skipped, as torchvision skips them."""
    pixels = unit_pixels(images)
    amounts = (brightness, contrast, saturation, hue)
    for position in range(4):
        chosen = params["order"][:, position].view(-1, 1, 1, 1)
        for index, (name, adjust) in enumerate(JITTERS):
            if amounts[index]:
                adjusted = adjust(pixels, params[name].view(-1, 1, 1, 1))
                pixels = torch.where(chosen == index, adjusted, pixels)
    return script_pixels(pixels)


def random_color_jitter(images, generator, brightness, contrast, saturation, hue):
    """torchvision's ColorJitter, each image drawing its own."""
    amounts = (brightness, contrast, saturation, hue)
    params = draw_color_jitter(generator, images, *amounts)
    return apply_color_jitter(images, params, *amounts)


# --- RandAugment and TrivialAugmentWide: ops of color_common.POLICY_OPS.


def draw_policy(generator, images, count, magnitude):
    """`count` ops per image, uniform over the 14, with a random sign each, at bin
    `magnitude` (None: a uniform bin per op, TrivialAugmentWide's)."""
    ops = uniform(generator, images, 0, 14, count).floor().long().clamp(0, 13)
    negative = uniform(generator, images, 0, 1, count) < 0.5
    if magnitude is None:
        bins = uniform(generator, images, 0, 31, count).floor().long().clamp(0, 30)
    else:
        bins = torch.full_like(ops, magnitude)
    return {"ops": ops, "bins": bins, "signs": torch.where(negative, -1.0, 1.0)}


def apply_policy(images, params, wide):
    """Each image's ops in turn (torchvision's _apply_op with nearest resampling and
    fill 0), each op computed for the batch and kept where chosen."""
    magnitudes, maps = policy_tables(wide, images.shape[2], images.shape[3])
    magnitudes = torch.as_tensor(magnitudes, device=images.device)
    maps = torch.as_tensor(maps, device=images.device)
    pixels = unit_pixels(images)
    for slot in range(params["ops"].shape[1]):
        op, bins = params["ops"][:, slot], params["bins"][:, slot]
        sign = params["signs"][:, slot]
        pixels = sample_nearest(pixels, maps[op, bins, (sign < 0).long()])
        value = magnitudes[op, bins].view(-1, 1, 1, 1)
        factor = 1 + sign.view(-1, 1, 1, 1) * value
        chosen = op.view(-1, 1, 1, 1)
        bits = torch.where(chosen == 10, value, 8.0)
        threshold = torch.where(chosen == 11, value, 256.0)
        # One op per image: each line changes only the images that chose its op.
        pixels = torch.where(chosen == 6, adjust_brightness(pixels, factor), pixels)
        pixels = torch.where(chosen == 7, adjust_saturation(pixels, factor), pixels)
        pixels = torch.where(chosen == 8, adjust_contrast(pixels, factor), pixels)
        pixels = torch.where(chosen == 9, adjust_sharpness(pixels, factor), pixels)
        pixels = torch.where(chosen == 10, posterize(pixels, bits), pixels)
        pixels = torch.where(chosen == 11, solarize(pixels, threshold), pixels)
        pixels = torch.where(chosen == 12, autocontrast(pixels), pixels)
        pixels = torch.where(chosen == 13, equalize(pixels), pixels)
    return script_pixels(pixels)


def draw_rand_augment(generator, images, n, m):
    return draw_policy(generator, images, n, m)


def apply_rand_augment(images, params):
    return apply_policy(images, params, wide=False)


def random_rand_augment(images, generator, n, m):
    """torchvision's RandAugment(num_ops=n, magnitude=m), each image drawing its own."""
    return apply_rand_augment(images, draw_rand_augment(generator, images, n, m))


def draw_trivial_augment(generator, images):
    return draw_policy(generator, images, 1, None)


def apply_trivial_augment(images, params):
    return apply_policy(images, params, wide=True)


def random_trivial_augment(images, generator):
    """torchvision's TrivialAugmentWide(), each image drawing its own."""
    return apply_trivial_augment(images, draw_trivial_augment(generator, images))
