"""What both scripts' RandAugment and TrivialAugmentWide share, in numpy only: the op
set and its magnitude tables (torchvision's), and the source-pixel rule of their
geometric ops. Copied by name into the generated scripts (cnnspec.backends.runtime),
beside cnnspec/runtime/color_torch.py or color_keras.py.

Each policy op of an image is a row of two tables indexed by (op, magnitude bin): its
magnitude, and the inverse affine map of a geometric op (the identity for the others),
so that both frameworks gather the same float32 numbers and compute each source pixel
with the same operations."""

from __future__ import annotations

import numpy as np

# torchvision's op order (RandAugment._augmentation_space): the index each image draws.
POLICY_OPS = (
    "Identity",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Brightness",
    "Color",
    "Contrast",
    "Sharpness",
    "Posterize",
    "Solarize",
    "AutoContrast",
    "Equalize",
)
# torchvision's num_magnitude_bins.
POLICY_BINS = 31


def policy_tables(wide, height, width):
    """The magnitude of each (op, bin) as torchvision's RandAugment (`wide` False) or
    TrivialAugmentWide (True) tables give it, unsigned: a translation in whole pixels,
    posterize's bits, solarize's threshold on 0..255; and the inverse affine map of each
    (op, bin, sign) (sign 0 positive, 1 negative) from output to source pixel, in
    pixel coordinates centred on the image. Float32, (14, 31) and (14, 31, 2, 6).

    torch.linspace's last bits depend on the machine (its vectorised kernel); the
    tables here are the exact fractions `end * bin / 30`."""
    fraction = np.arange(POLICY_BINS, dtype=np.float64) / (POLICY_BINS - 1)
    zero = np.zeros(POLICY_BINS)
    if wide:
        shear, shift_x, shift_y, degrees, enhance, levels = (
            0.99,
            32.0,
            32.0,
            135.0,
            0.99,
            6,
        )
    else:
        shear, enhance, degrees, levels = 0.3, 0.9, 30.0, 4
        shift_x, shift_y = 150.0 / 331.0 * width, 150.0 / 331.0 * height
    bits = 8 - np.round(np.arange(POLICY_BINS) / ((POLICY_BINS - 1) / levels))
    magnitudes = np.stack(
        [
            zero,
            shear * fraction,
            shear * fraction,
            np.trunc(shift_x * fraction),
            np.trunc(shift_y * fraction),
            degrees * fraction,
            enhance * fraction,
            enhance * fraction,
            enhance * fraction,
            enhance * fraction,
            bits,
            255.0 * (1 - fraction),
            zero,
            zero,
        ]
    )
    maps = np.zeros((len(POLICY_OPS), POLICY_BINS, 2, 6))
    maps[..., 0] = maps[..., 4] = 1.0
    for sign_index, sign in enumerate((1.0, -1.0)):
        value = sign * magnitudes
        # torchvision's _get_inverse_affine_matrix, shears about the top-left corner:
        # source x = x + m (y + h/2) (ShearX), source y = y + m (x + w/2) (ShearY).
        maps[1, :, sign_index, 1] = value[1]
        maps[1, :, sign_index, 2] = value[1] * height / 2
        maps[2, :, sign_index, 3] = value[2]
        maps[2, :, sign_index, 5] = value[2] * width / 2
        maps[3, :, sign_index, 2] = -value[3]
        maps[4, :, sign_index, 5] = -value[4]
        # F.rotate(angle) samples at the point turned by -angle (counter-clockwise).
        angle = np.radians(value[5])
        maps[5, :, sign_index, 0] = maps[5, :, sign_index, 4] = np.cos(angle)
        maps[5, :, sign_index, 1] = -np.sin(angle)
        maps[5, :, sign_index, 3] = np.sin(angle)
    return magnitudes.astype(np.float32), maps.astype(np.float32)
