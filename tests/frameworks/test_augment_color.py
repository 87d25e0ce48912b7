"""color_jitter, rand_augment and trivial_augment: the entries, torchvision's semantics (ops
against literal ports of torchvision's code, which cannot be installed here), the two scripts'
ops equal on the same parameters, their draws alike in distribution, and the generated scripts'
augmentation seeded and in range."""

from __future__ import annotations

import math
from itertools import permutations
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from cnnspec.augment import AUGMENTATIONS
from cnnspec.augment.color import ColorJitter, RandAugment
from cnnspec.runtime.color_common import POLICY_BINS, POLICY_OPS, policy_tables
from cnnspec.schema import Invalid

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")
F = torch.nn.functional

from cnnspec.runtime import color_keras, color_torch  # noqa: E402
from tests.frameworks.scripts import checked_spec, load_script, write_script  # noqa: E402

pytestmark = pytest.mark.frameworks

RNG = np.random.default_rng(7)
# 0..255 pixels (the stand-in PIXEL_RANGE), whole levels as most images hold.
RGB = RNG.integers(0, 256, (6, 3, 12, 10)).astype(np.float32)
GRAY = RNG.integers(0, 256, (6, 1, 12, 10)).astype(np.float32)


def _keras_images(images: np.ndarray) -> object:
    return tf.constant(images.transpose(0, 2, 3, 1))


def _keras_params(params: dict) -> dict:
    return {name: tf.constant(value.numpy()) for name, value in params.items()}


def _nchw(images: object) -> np.ndarray:
    return np.asarray(images).transpose(0, 3, 1, 2)


# --- The entries


def test_entries_defaults_and_bounds() -> None:
    jitter = ColorJitter.model_validate({"brightness": 0.4})
    assert jitter.amounts() == (0.4, 0.0, 0.0, 0.0)
    # Every amount 0 is torchvision's identity; the checker calls it a mistake (E322).
    assert ColorJitter.model_validate({}).amounts() == (0.0, 0.0, 0.0, 0.0)
    rand = RandAugment.model_validate({})
    assert (rand.n, rand.m) == (2, 9)
    assert {"color_jitter", "rand_augment", "trivial_augment"} <= set(AUGMENTATIONS)
    for kind, args in [
        ("color_jitter", {"hue": 0.6}),
        ("color_jitter", {"contrast": -0.1}),
        ("rand_augment", {"m": 31}),
        ("rand_augment", {"n": 0}),
    ]:
        with pytest.raises(Invalid):
            AUGMENTATIONS[kind].model_validate(args)


# --- torchvision's semantics


def _tv_inverse_affine(
    center: list[float], angle: float, translate: list[int], scale: float, shear: list[float]
) -> list[float]:
    # torchvision.transforms.functional._get_inverse_affine_matrix, verbatim.
    rot, sx, sy = math.radians(angle), math.radians(shear[0]), math.radians(shear[1])
    cx, cy = center
    tx, ty = translate
    a = math.cos(rot - sy) / math.cos(sy)
    b = -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot)
    c = math.sin(rot - sy) / math.cos(sy)
    d = -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot)
    matrix = [x / scale for x in [d, -b, 0.0, -c, a, 0.0]]
    matrix[2] += matrix[0] * (-cx - tx) + matrix[1] * (-cy - ty)
    matrix[5] += matrix[3] * (-cx - tx) + matrix[4] * (-cy - ty)
    matrix[2] += cx
    matrix[5] += cy
    return matrix


def _tv_affine(image: torch.Tensor, matrix: list[float]) -> torch.Tensor:
    # torchvision's _FT.affine: _gen_affine_grid, then grid_sample (nearest, zeros).
    _, h, w = image.shape
    theta = torch.tensor(matrix, dtype=torch.float32).reshape(1, 2, 3)
    base = torch.empty(1, h, w, 3)
    base[..., 0].copy_(torch.linspace(-w * 0.5 + 0.5, w * 0.5 - 0.5, steps=w))
    base[..., 1].copy_(torch.linspace(-h * 0.5 + 0.5, h * 0.5 - 0.5, steps=h).unsqueeze(-1))
    base[..., 2].fill_(1)
    rescaled = theta.transpose(1, 2) / torch.tensor([0.5 * w, 0.5 * h])
    grid = base.view(1, h * w, 3).bmm(rescaled).view(1, h, w, 2)
    return F.grid_sample(image[None], grid, mode="nearest", align_corners=False)[0]


def _tv_geometry(op: str, magnitude: float, h: int, w: int) -> list[float]:
    corner = [-w * 0.5, -h * 0.5]  # center=[0, 0] in F.affine's terms
    shear = math.degrees(math.atan(magnitude))
    return {
        "ShearX": lambda: _tv_inverse_affine(corner, 0.0, [0, 0], 1.0, [shear, 0.0]),
        "ShearY": lambda: _tv_inverse_affine(corner, 0.0, [0, 0], 1.0, [0.0, shear]),
        "TranslateX": lambda: _tv_inverse_affine([0, 0], 0.0, [int(magnitude), 0], 1.0, [0, 0]),
        "TranslateY": lambda: _tv_inverse_affine([0, 0], 0.0, [0, int(magnitude)], 1.0, [0, 0]),
        "Rotate": lambda: _tv_inverse_affine([0, 0], -magnitude, [0, 0], 1.0, [0, 0]),
    }[op]()


@pytest.mark.parametrize("wide", [False, True])
def test_policy_tables_are_torchvisions(wide: bool) -> None:
    h, w = 20, 24
    magnitudes, _ = policy_tables(wide, h, w)

    def linspace(end: float, start: float = 0.0) -> np.ndarray:
        return torch.linspace(start, end, POLICY_BINS).numpy()

    levels = 6 if wide else 4
    expected = {
        "ShearX": linspace(0.99 if wide else 0.3),
        "TranslateX": linspace(32.0 if wide else 150 / 331 * w),
        "TranslateY": linspace(32.0 if wide else 150 / 331 * h),
        "Rotate": linspace(135.0 if wide else 30.0),
        "Sharpness": linspace(0.99 if wide else 0.9),
        "Posterize": (8 - (torch.arange(31) / (30 / levels)).round().int()).numpy(),
        "Solarize": linspace(0.0, 255.0),
    }
    for op, values in expected.items():
        row = magnitudes[POLICY_OPS.index(op)]
        if op.startswith("Translate"):  # whole pixels; torch's last bit may round 16 to 15
            assert np.abs(row - np.trunc(values)).max() <= 1
        else:
            np.testing.assert_allclose(row, values, rtol=1e-6, atol=1e-5, err_msg=op)


@pytest.mark.parametrize("wide", [False, True])
def test_geometric_ops_take_torchvisions_pixels(wide: bool) -> None:
    """Each shear, translation and rotation picks the pixels torchvision's F.affine /
    F.rotate would (nearest, fill 0), but at exact half-pixel ties."""
    h, w = 14, 11
    image = torch.arange(1.0, h * w + 1).view(1, h, w)
    magnitudes, maps = policy_tables(wide, h, w)
    compared = mismatched = 0
    for op in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"):
        index = POLICY_OPS.index(op)
        for b in (3, 10, 21, 30):
            for s, sign in enumerate((1.0, -1.0)):
                expected = _tv_affine(image, _tv_geometry(op, sign * magnitudes[index, b], h, w))
                ours = color_torch.sample_nearest(
                    image[None], torch.tensor(maps[index, b, s])[None]
                )
                compared += expected.numel()
                mismatched += int((ours[0] != expected).sum())
    assert mismatched <= compared * 0.002, (mismatched, compared)


def test_translation_moves_the_image_right_and_down() -> None:
    image = torch.arange(1.0, 7 * 9 + 1).view(1, 1, 7, 9)
    magnitudes, maps = policy_tables(True, 7, 9)
    shift = int(magnitudes[POLICY_OPS.index("TranslateX"), 3])  # 3 pixels
    moved = color_torch.sample_nearest(image, torch.tensor(maps[3, 3, 0])[None])
    assert shift == 3
    assert torch.equal(moved[..., 3:], image[..., :-3]) and (moved[..., :3] == 0).all()


def _tv_equalize_channel(channel: torch.Tensor) -> torch.Tensor:
    # torchvision's _scale_channel (uint8), verbatim.
    hist = torch.bincount(channel.reshape(-1), minlength=256)
    nonzero = hist[hist != 0]
    step = torch.div(nonzero[:-1].sum(), 255, rounding_mode="floor")
    if step == 0:
        return channel
    lut = torch.div(
        torch.cumsum(hist, 0) + torch.div(step, 2, rounding_mode="floor"),
        step,
        rounding_mode="floor",
    )
    lut = F.pad(lut, [1, 0])[:-1].clamp(0, 255)
    return lut[channel.to(torch.int64)]


def test_uint8_ops_are_torchvisions() -> None:
    rng = np.random.default_rng(3)
    levels = torch.tensor(rng.integers(40, 180, (3, 3, 24, 24)))
    levels[2, 1] = 77  # a flat channel: equalize and autocontrast leave it
    unit = levels.float() / 255
    equalized = torch.stack(
        [torch.stack([_tv_equalize_channel(c) for c in image]) for image in levels]
    )
    assert torch.equal(torch.round(color_torch.equalize(unit) * 255).long(), equalized)
    assert not torch.equal(equalized, levels)
    posterized = torch.round(color_torch.posterize(unit, torch.tensor(3.0)) * 255).long()
    assert torch.equal(posterized, levels & -(2**5))
    solarized = torch.round(color_torch.solarize(unit, torch.tensor(100.0)) * 255).long()
    assert torch.equal(solarized, torch.where(levels >= 100, 255 - levels, levels))
    stretched = color_torch.autocontrast(unit)
    assert torch.allclose(stretched.amin(dim=(2, 3))[:2], torch.tensor(0.0))
    assert torch.allclose(stretched.amax(dim=(2, 3))[:2], torch.tensor(1.0))
    assert torch.equal(stretched[2, 1], unit[2, 1])


def test_colour_ops_follow_torchvision() -> None:
    red = torch.zeros(1, 3, 4, 4)
    red[:, 0] = 0.8
    turned = color_torch.adjust_hue(red, torch.full((1, 1, 1, 1), 1 / 3))
    assert torch.allclose(turned[0, :, 0, 0], torch.tensor([0.0, 0.8, 0.0]), atol=1e-6)
    image = torch.tensor(RGB[:1] / 255)
    gray = 0.2989 * image[:, 0] + 0.587 * image[:, 1] + 0.114 * image[:, 2]
    desaturated = color_torch.adjust_saturation(image, torch.zeros(1, 1, 1, 1))
    assert torch.allclose(desaturated, gray[:, None].expand_as(image))
    flat = color_torch.adjust_contrast(image, torch.zeros(1, 1, 1, 1))
    assert torch.allclose(flat, gray.mean().expand_as(image))
    dark = color_torch.adjust_brightness(image, torch.full((1, 1, 1, 1), 0.5))
    assert torch.allclose(dark, image / 2)
    # Sharpness 0 is torchvision's smoothed image: kernel [[1,1,1],[1,5,1],[1,1,1]] / 13
    # inside the border, the border as it was.
    kernel = torch.ones(3, 1, 3, 3)
    kernel[:, :, 1, 1] = 5
    smooth = F.conv2d(image, kernel / 13, groups=3)
    soft = color_torch.adjust_sharpness(image, torch.zeros(1, 1, 1, 1))
    assert torch.allclose(soft[..., 1:-1, 1:-1], smooth, atol=1e-6)
    assert torch.equal(soft[..., 0, :], image[..., 0, :])


# --- Same parameters, same image


def test_color_jitter_same_parameters_same_image() -> None:
    generator = torch.Generator().manual_seed(0)
    for images, amounts in [
        (RGB, (0.5, 0.5, 0.5, 0.2)),
        (GRAY, (0.5, 0.5, 0.5, 0.2)),
        (RGB, (0.0, 0.8, 0.0, 0.5)),
    ]:
        ours = torch.tensor(images)
        params = color_torch.draw_color_jitter(generator, ours, *amounts)
        expected = color_torch.apply_color_jitter(ours, params, *amounts)
        got = color_keras.apply_color_jitter(_keras_images(images), _keras_params(params), *amounts)
        assert np.abs(_nchw(got) - expected.numpy()).max() < 1e-3  # of 255
        assert not np.allclose(expected.numpy(), images)
    # Grayscale: saturation and hue change nothing (torchvision's rule).
    gray = torch.tensor(GRAY)
    params = color_torch.draw_color_jitter(generator, gray, 0, 0, 0.9, 0.5)
    assert torch.allclose(color_torch.apply_color_jitter(gray, params, 0, 0, 0.9, 0.5), gray)


def _every_op(count: int) -> dict:
    """Every (op, bin, sign) in turn, an image each."""
    cases = [(op, b, s) for op in range(14) for b in (0, 9, 17, 30) for s in (1.0, -1.0)]
    cases = cases[:count]
    return {
        "ops": torch.tensor([[c[0]] for c in cases]),
        "bins": torch.tensor([[c[1]] for c in cases]),
        "signs": torch.tensor([[c[2]] for c in cases]),
    }


@pytest.mark.parametrize("wide", [False, True])
def test_policy_ops_same_parameters_same_image(wide: bool) -> None:
    params = _every_op(112)
    images = np.resize(RGB, (112, 3, 12, 10))
    expected = color_torch.apply_policy(torch.tensor(images), params, wide).numpy()
    got = _nchw(color_keras.apply_policy(_keras_images(images), _keras_params(params), wide))
    assert np.abs(got - expected).max() < 1e-3
    changed = np.abs(expected - images).reshape(112, -1).max(1) > 0.5
    ops, bins = params["ops"][:, 0].numpy(), params["bins"][:, 0].numpy()
    # Every shear, translation, rotation and enhancement of magnitude above 0 changes its
    # image; the identity keeps it.
    assert changed[(ops >= 1) & (ops <= 9) & (bins > 0)].all()
    assert not changed[ops == 0].any()


def test_policies_same_parameters_same_image() -> None:
    generator = torch.Generator().manual_seed(1)
    images = torch.tensor(RGB)
    for draw, apply, apply_keras, args in [
        (
            color_torch.draw_rand_augment,
            color_torch.apply_rand_augment,
            color_keras.apply_rand_augment,
            (3, 15),
        ),
        (
            color_torch.draw_trivial_augment,
            color_torch.apply_trivial_augment,
            color_keras.apply_trivial_augment,
            (),
        ),
    ]:
        params = draw(generator, images, *args)
        expected = apply(images, params).numpy()
        got = _nchw(apply_keras(_keras_images(RGB), _keras_params(params)))
        # A chain of ops: a last-bit difference may tip a 0..255 level, rarely.
        assert (np.abs(got - expected) > 1e-3).mean() < 0.002


# --- Draws alike in distribution


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    values = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(np.sort(a), values, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), values, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


N = 3000


def test_color_jitter_draws_alike() -> None:
    amounts = (0.4, 1.5, 0.2, 0.3)
    batch = np.zeros((N, 1, 1, 3), np.float32)
    ours = color_torch.draw_color_jitter(
        torch.Generator().manual_seed(0), torch.tensor(batch), *amounts
    )
    theirs = color_keras.draw_color_jitter(
        keras.random.SeedGenerator(0), tf.constant(batch), *amounts
    )
    ranges = {
        "brightness": (0.6, 1.4),
        "contrast": (0.0, 2.5),
        "saturation": (0.8, 1.2),
        "hue": (-0.3, 0.3),
    }
    for name, (low, high) in ranges.items():
        a, b = ours[name].numpy(), np.asarray(theirs[name])
        for sample in (a, b):
            assert low <= sample.min() < low + 0.01 and high - 0.01 < sample.max() <= high
        assert _ks(a, b) < 0.05, name
    for order in (ours["order"].numpy(), np.asarray(theirs["order"])):
        counts = {p: 0 for p in permutations(range(4))}
        for row in order:
            counts[tuple(int(i) for i in row)] += 1
        assert max(counts.values()) < N / 24 * 1.4 and min(counts.values()) > N / 24 * 0.6


def test_policy_draws_alike() -> None:
    batch = np.zeros((N, 1, 1, 3), np.float32)
    for draw_torch, draw_keras, args in [
        (color_torch.draw_rand_augment, color_keras.draw_rand_augment, (2, 9)),
        (color_torch.draw_trivial_augment, color_keras.draw_trivial_augment, ()),
    ]:
        ours = draw_torch(torch.Generator().manual_seed(0), torch.tensor(batch), *args)
        theirs = draw_keras(keras.random.SeedGenerator(0), tf.constant(batch), *args)
        for params in (_keras_like(ours), _keras_like(theirs)):
            ops, bins, signs = params["ops"], params["bins"], params["signs"]
            assert ops.shape == (N, args[0] if args else 1)
            counts = np.bincount(ops.ravel(), minlength=14)
            assert len(counts) == 14 and counts.min() > ops.size / 14 * 0.75
            assert set(np.unique(signs)) == {-1.0, 1.0} and abs(signs.mean()) < 0.06
            if args:
                assert (bins == args[1]).all()
            else:
                counts = np.bincount(bins.ravel(), minlength=31)
                assert len(counts) == 31 and counts.min() > N / 31 * 0.6


def _keras_like(params: dict) -> dict:
    return {name: np.asarray(value) for name, value in params.items()}


# --- The generated scripts

SPEC = """\
model colors {
  input 32x32x3
  conv2d(4, padding=same, activation=relu)
  global_avg_pool()
  dense(10, activation=softmax)
}
data { source cifar10  rescale 1/255 }
augment { flip(horizontal)  color_jitter(0.4, 0.4, 0.4, 0.1)  rand_augment(2, 9)  trivial_augment() }
train { epochs 1  batch 8 }
"""


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, ModuleType]:
    folder: Path = tmp_path_factory.mktemp("colors")
    spec = checked_spec(SPEC)
    return (
        load_script(write_script(spec, folder, "keras")),
        load_script(write_script(spec, folder, "pytorch")),
    )


def test_scripts_augment_in_range_and_seeded(scripts: tuple[ModuleType, ModuleType]) -> None:
    keras_script, torch_script = scripts
    assert keras_script.PIXEL_RANGE == torch_script.PIXEL_RANGE == (0.0, 1.0)
    images = np.random.default_rng(0).random((8, 32, 32, 3), dtype=np.float32)

    def keras_batch(seed: int) -> np.ndarray:
        return np.asarray(keras_script.build_augmentation(seed)(images, training=True))

    def torch_batch(seed: int) -> np.ndarray:
        generator = torch.Generator().manual_seed(seed)
        pixels = torch.tensor(images.transpose(0, 3, 1, 2))
        return torch_script.augment(pixels, generator).numpy().transpose(0, 2, 3, 1)

    for batch in (keras_batch, torch_batch):
        first, again, other = batch(1), batch(1), batch(2)
        assert first.shape == images.shape
        assert first.min() >= 0.0 and first.max() <= 1.0
        np.testing.assert_array_equal(first, again)
        assert not np.allclose(first, other) and not np.allclose(first, images)
    augmentation = keras_script.build_augmentation(0)
    np.testing.assert_array_equal(augmentation(images, training=False), images)
    # In the tf.data pipeline, as the script runs it (a graph, the seed generator's state).
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(4)
    mapped = dataset.map(lambda x: augmentation(x, training=True))
    batches = [np.asarray(b) for b in mapped]
    assert [b.shape for b in batches] == [(4, 32, 32, 3)] * 2
    assert not np.allclose(batches[0], batches[1])
