"""random_crop, random_resized_crop and random_erasing in the generated scripts (issue 28): the
same parameters give the same image in the Keras and the PyTorch script, and that image is
torchvision's (padding then slicing, F.interpolate of the box, the box filled); each script's
draws follow torchvision's distributions (compared with a transcription of its get_params);
and the scripts' augmentation keeps the batch's shape and pixel range, seeded."""

from __future__ import annotations

import math
import random
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from tests.frameworks.scripts import checked_spec, load_script, write_script  # noqa: E402

pytestmark = pytest.mark.frameworks

SPEC = """\
model crops {
  input 8x8x1
  conv2d(4, padding=same, activation=relu)
  global_avg_pool()
  dense(10, activation=softmax)
}
data { source digits  rescale 1/16  labels sparse }
augment {
  random_crop(2, fill=reflect)
  random_resized_crop(scale=(0.25, 1))
  random_erasing(p=0.5, value=0.5)
  flip(horizontal)
}
train { epochs 1  batch 16 }
"""

SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)
ERASE_SCALE, ERASE_RATIO = (0.02, 0.33), (0.3, 3.3)
DRAWS = 4000
# Ratios whose boxes are not their own transposes' (3/4 to 4/3 is), for the draws' tests.
WIDE, TALL = (1.0, 2.0), (1.5, 3.0)


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, ModuleType]:
    spec = checked_spec(SPEC)
    folder: Path = tmp_path_factory.mktemp("crops")
    keras_script = load_script(write_script(spec, folder, "keras"))
    torch_script = load_script(write_script(spec, folder, "pytorch"))
    return keras_script, torch_script


def images(n: int = 6, height: int = 13, width: int = 11, seed: int = 0) -> np.ndarray:
    """A batch (N, H, W, C) of random pixels in [0, 1)."""
    return np.random.default_rng(seed).uniform(0, 1, (n, height, width, 3)).astype("float32")


def nchw(batch: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(batch.transpose(0, 3, 1, 2).copy())


def to_keras(params: dict[str, torch.Tensor]) -> dict[str, tf.Tensor]:
    return {
        key: tf.constant(v.numpy() if v.dtype == torch.bool else v.numpy().astype("int32"))
        for key, v in params.items()
    }


def to_torch(params: dict[str, tf.Tensor]) -> dict[str, torch.Tensor]:
    return {
        key: torch.from_numpy(v.numpy().astype(bool if v.dtype == tf.bool else "int64"))
        for key, v in params.items()
    }


# (kind, the draw's arguments, the apply's arguments)
CASES = {
    "crop_constant": ("random_crop", (3,), (3, "constant", 0.5)),
    "crop_reflect": ("random_crop", (5,), (5, "reflect", 0.0)),
    "crop_edge": ("random_crop", (12,), (12, "edge", 0.0)),
    "resized_crop": ("random_resized_crop", (SCALE, RATIO), ()),
    "resized_crop_wide": ("random_resized_crop", ((0.5, 1.0), (2.0, 3.0)), ()),
    "erasing": ("random_erasing", (1.0, ERASE_SCALE, ERASE_RATIO), (0.25,)),
}


def reference(kind: str, batch: np.ndarray, params: dict[str, torch.Tensor], *args: object):
    """torchvision's image, one image at a time, from the same parameters (NHWC)."""
    out = []
    for n, image in enumerate(nchw(batch)):
        p = {key: int(v[n]) for key, v in params.items()}
        if kind == "random_crop":
            padding, fill, value = args
            mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}[fill]
            pad = (padding,) * 4
            padded = (
                F.pad(image, pad, value=value) if fill == "constant" else F.pad(image, pad, mode)
            )
            top, left = p["top"], p["left"]
            out.append(padded[:, top : top + image.shape[1], left : left + image.shape[2]])
        elif kind == "random_resized_crop":
            box = image[:, p["top"] : p["top"] + p["height"], p["left"] : p["left"] + p["width"]]
            size = tuple(image.shape[1:])
            resized = F.interpolate(box[None], size, mode="bilinear", align_corners=False)
            out.append(resized[0])
        else:
            erased = image.clone()
            if p["erase"]:
                rows = slice(p["top"], p["top"] + p["height"])
                erased[:, rows, p["left"] : p["left"] + p["width"]] = args[0]
            out.append(erased)
    return torch.stack(out).numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("case", CASES)
def test_the_same_parameters_give_torchvisions_image_in_both_scripts(
    scripts: tuple[ModuleType, ModuleType], case: str
) -> None:
    keras_script, torch_script = scripts
    kind, draw_args, apply_args = CASES[case]
    batch = images()
    generator = torch.Generator().manual_seed(1)
    torch_params = getattr(torch_script, f"draw_{kind}")(generator, nchw(batch), *draw_args)
    seeds = keras_script.keras.random.SeedGenerator(1)
    keras_params = getattr(keras_script, f"draw_{kind}")(seeds, tf.constant(batch), *draw_args)
    for params in (torch_params, to_torch(keras_params)):
        expected = reference(kind, batch, params, *apply_args)
        by_torch = getattr(torch_script, f"apply_{kind}")(nchw(batch), params, *apply_args)
        by_keras = getattr(keras_script, f"apply_{kind}")(
            tf.constant(batch), to_keras(params), *apply_args
        )
        np.testing.assert_allclose(by_torch.numpy().transpose(0, 2, 3, 1), expected, atol=1e-5)
        np.testing.assert_allclose(by_keras.numpy(), expected, atol=1e-5)
    for params in (torch_params, to_torch(keras_params)):
        heights = {int(h) for h in params.get("height", ())}
        if case == "resized_crop_wide":
            # No box of ratio 2 to 3 and half the area fits 13x11: torchvision's fallback, the
            # central crop of ratio 2 (width 11, height round(5.5) = 6).
            box = [params[k].tolist() for k in ("top", "left", "height", "width")]
            assert box == [[3] * 6, [0] * 6, [6] * 6, [11] * 6]
        elif kind != "random_crop":
            assert len(heights) > 1  # the images draw their own boxes


def torchvision_resized_crop(rng: random.Random, height: int, width: int) -> tuple[int, ...]:
    """torchvision's RandomResizedCrop.get_params at WIDE, transcribed."""
    area = height * width
    log_ratio = (math.log(WIDE[0]), math.log(WIDE[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*SCALE)
        aspect_ratio = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target_area * aspect_ratio))
        h = round(math.sqrt(target_area / aspect_ratio))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    if width / height < WIDE[0]:
        h, w = round(width / WIDE[0]), width
    elif width / height > WIDE[1]:
        h, w = height, round(height * WIDE[1])
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def torchvision_erasing(rng: random.Random, height: int, width: int) -> tuple[int, ...]:
    """torchvision's RandomErasing at TALL: (erase, top, left, height, width), transcribed."""
    if rng.random() >= 0.5:
        return 0, 0, 0, 0, 0
    area = height * width
    log_ratio = (math.log(TALL[0]), math.log(TALL[1]))
    for _ in range(10):
        erase_area = area * rng.uniform(*ERASE_SCALE)
        aspect_ratio = math.exp(rng.uniform(*log_ratio))
        h = round(math.sqrt(erase_area * aspect_ratio))
        w = round(math.sqrt(erase_area / aspect_ratio))
        if h < height and w < width:
            return 1, rng.randint(0, height - h), rng.randint(0, width - w), h, w
    return 0, 0, 0, 0, 0


def ks(a: np.ndarray, b: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic."""
    grid = np.union1d(a, b)
    cdf_a = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


def drawn(scripts: tuple[ModuleType, ModuleType], kind: str, *args: object) -> list[dict]:
    """DRAWS parameter sets from each script, for 13x11 images, as numpy arrays."""
    keras_script, torch_script = scripts
    zeros = np.zeros((DRAWS, 13, 11, 1), "float32")
    generator = torch.Generator().manual_seed(3)
    by_torch = getattr(torch_script, f"draw_{kind}")(generator, nchw(zeros), *args)
    seeds = keras_script.keras.random.SeedGenerator(3)
    by_keras = getattr(keras_script, f"draw_{kind}")(seeds, tf.constant(zeros), *args)
    return [
        {k: v.numpy().astype(int) for k, v in by_torch.items()},
        {k: v.numpy().astype(int) for k, v in by_keras.items()},
    ]


def test_random_crop_offsets_are_uniform(scripts: tuple[ModuleType, ModuleType]) -> None:
    for params in drawn(scripts, "random_crop", 4):
        for key in ("top", "left"):
            counts = np.bincount(params[key], minlength=9)
            assert len(counts) == 9, key  # 0 to 2 * padding, nothing beyond
            assert np.abs(counts / DRAWS - 1 / 9).max() < 0.025, counts


def test_resized_crop_boxes_follow_torchvision(scripts: tuple[ModuleType, ModuleType]) -> None:
    rng = random.Random(0)
    expected = np.array([torchvision_resized_crop(rng, 13, 11) for _ in range(DRAWS)])
    for params in drawn(scripts, "random_resized_crop", SCALE, WIDE):
        for index, key in enumerate(("top", "left", "height", "width")):
            assert ks(params[key], expected[:, index]) < 0.05, key
        area = params["height"] * params["width"]
        assert ks(area, expected[:, 2] * expected[:, 3]) < 0.05
        assert (params["top"] + params["height"] <= 13).all()
        assert (params["left"] + params["width"] <= 11).all()


def test_erasing_boxes_follow_torchvision(scripts: tuple[ModuleType, ModuleType]) -> None:
    rng = random.Random(0)
    expected = np.array([torchvision_erasing(rng, 13, 11) for _ in range(DRAWS)])
    chosen = expected[:, 0] == 1
    for params in drawn(scripts, "random_erasing", 0.5, ERASE_SCALE, TALL):
        erase = params["erase"].astype(bool)
        assert abs(erase.mean() - chosen.mean()) < 0.04
        for index, key in enumerate(("top", "left", "height", "width"), start=1):
            assert ks(params[key][erase], expected[chosen, index]) < 0.06, key
        assert (params["top"] + params["height"] <= 13).all()


def test_the_scripts_augmentation_keeps_shape_and_range_seeded(
    scripts: tuple[ModuleType, ModuleType],
) -> None:
    keras_script, torch_script = scripts
    assert keras_script.PIXEL_RANGE == torch_script.PIXEL_RANGE == (0.0, 1.0)
    batch = images(16, 8, 8)[..., :1]

    def by_torch(seed: int) -> np.ndarray:
        generator = torch.Generator().manual_seed(seed)
        return torch_script.augment(nchw(batch), generator).numpy().transpose(0, 2, 3, 1)

    def by_keras(seed: int) -> np.ndarray:
        augmentation = keras_script.build_augmentation(seed)
        # As make_datasets runs it: in the tf.data pipeline.
        dataset = tf.data.Dataset.from_tensors(batch).map(lambda x: augmentation(x, training=True))
        return next(iter(dataset)).numpy()

    for run in (by_torch, by_keras):
        first, again, other = run(5), run(5), run(6)
        assert first.shape == batch.shape
        assert first.min() >= 0.0 and first.max() <= 1.0
        np.testing.assert_array_equal(first, again)
        assert not np.array_equal(first, other)
        assert not np.allclose(first, batch)
    plain = keras_script.build_augmentation(5)(tf.constant(batch), training=False)
    np.testing.assert_array_equal(plain.numpy(), batch)
