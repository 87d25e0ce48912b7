"""`cnnspec predict`: exported models on real PNG files, and clear one-line errors.

The digits model is exported with seeded weights; PNG files are written from scikit-learn's
digits (0-16 scaled to 0-255). `predict --format json` must give, for each file, the same
probabilities as onnxruntime run directly on the input computed independently here from the
PNG's pixels (x / 255 * 16 * rescale), ranked, with the argmax as the prediction. Bad inputs:
a corrupt image, a missing image, a file that is not a model, a model without cnnspec metadata,
and a model whose input does not match its metadata each give one line and exit 1. Folders are
searched recursively for image files in sorted order, every format Pillow reads is classified
whatever its suffix, and a bad image (missing, not an image, empty, truncated) costs one line on
stderr while the others are still classified, with exit 1 at the end. One exported model serves
the whole module: the tests only read it.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("PIL")

import onnx
import onnxruntime
from PIL import Image, features
from sklearn.datasets import load_digits

from tests.conftest import ROOT
from tests.test_cli import no_traceback, run, write

pytestmark = pytest.mark.frameworks


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = tmp_path_factory.mktemp("model") / "digits.onnx"
    result = run("export", str(ROOT / "specs" / "digits.cnn"), "-o", str(model))
    assert result.returncode == 0, result.stderr
    return model


def write_digits(folder: Path, count: int = 4, start: int = 0) -> list[Path]:
    digits = load_digits()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(start, start + count):
        pixels = (digits.images[index] * 255 / 16).round().astype(np.uint8)
        path = folder / f"digit_{index}_{digits.target[index]}.png"
        Image.fromarray(pixels, mode="L").save(path)
        paths.append(path)
    return paths


def test_predict_matches_onnxruntime_on_png_files(digits_model: Path, tmp_path: Path) -> None:
    paths = write_digits(tmp_path)
    result = run("predict", str(digits_model), *map(str, paths), "--top", "10", "-f", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["provider"] == "CPUExecutionProvider"
    session = onnxruntime.InferenceSession(str(digits_model), providers=["CPUExecutionProvider"])
    for path, prediction in zip(paths, report["predictions"], strict=True):
        pixels = np.asarray(Image.open(path), dtype=np.float32)
        x = (pixels / 255 * 16 / 16).reshape(1, 1, 8, 8).astype(np.float32)
        (expected,) = session.run(None, {"image": x})
        got = {t["class"]: t["probability"] for t in prediction["top"]}
        assert len(got) == 10
        for index, probability in enumerate(expected[0]):
            assert got[str(index)] == pytest.approx(float(probability), abs=1e-6)
        assert prediction["prediction"] == str(int(np.argmax(expected[0])))
        ranked = [t["probability"] for t in prediction["top"]]
        assert ranked == sorted(ranked, reverse=True)


def test_text_output_says_which_provider_ran(digits_model: Path, tmp_path: Path) -> None:
    paths = write_digits(tmp_path, 2)
    result = run("predict", str(digits_model), *map(str, paths), "--top", "2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "ran on CPUExecutionProvider"
    assert lines[1].startswith(f"{paths[0]}: ")
    assert "EP Error" not in result.stdout + result.stderr


def error_line(result: object) -> str:
    assert result.returncode == 1  # type: ignore[attr-defined]
    no_traceback(result)  # type: ignore[arg-type]
    lines = result.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1, lines
    return lines[0]


def test_bad_inputs_get_one_line(digits_model: Path, tmp_path: Path) -> None:
    good = write_digits(tmp_path, 1)[0]
    corrupt = write(tmp_path, "corrupt.png", "not a png")
    assert error_line(run("predict", str(digits_model), str(corrupt))) == (
        f"cnnspec: error: {corrupt} is not an image Pillow can read"
    )
    missing = tmp_path / "missing.png"
    assert "no such image" in error_line(run("predict", str(digits_model), str(missing)))
    assert "is not an ONNX model" in error_line(run("predict", str(corrupt), str(good)))

    bare = onnx.load(str(digits_model))
    del bare.metadata_props[:]
    plain = tmp_path / "plain.onnx"
    onnx.save(bare, str(plain))
    assert "has no cnnspec metadata" in error_line(run("predict", str(plain), str(good)))

    wrong = onnx.load(str(digits_model))
    for prop in wrong.metadata_props:
        if prop.key == "cnnspec.input_size":
            prop.value = "[16, 16, 1]"
    mismatched = tmp_path / "mismatched.onnx"
    onnx.save(wrong, str(mismatched))
    line = error_line(run("predict", str(mismatched), str(good)))
    assert "takes input [1, 8, 8], but its metadata says [1, 16, 16]" in line


def onnxruntime_probabilities(model: Path, png: Path) -> list[float]:
    """The digits model's output for a grayscale PNG, computed here without cnnspec."""
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    pixels = np.asarray(Image.open(png), dtype=np.float32)
    (output,) = session.run(None, {"image": (pixels / 255).reshape(1, 1, 8, 8)})
    return [float(p) for p in output[0]]


def truncated_png(path: Path) -> Path:
    """A valid PNG cut to half its bytes: Pillow opens it and fails in load()."""
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def test_bad_files_are_reported_and_the_others_still_classified(
    digits_model: Path, tmp_path: Path
) -> None:
    first = write_digits(tmp_path / "loose", 1)[0]
    last = write_digits(tmp_path / "loose", 1, start=1)[0]
    # 40 images in nested folders, a damaged one among them: more than one onnxruntime batch.
    folder = tmp_path / "images"
    in_folder = write_digits(folder / "a", 20, start=2) + write_digits(folder / "b", 20, start=22)
    damaged = truncated_png(folder / "a" / "digit_5_x.png")
    write(folder, "notes.txt", "not an image, and its name says so")
    text = write(tmp_path, "x.png", "a text file named like a PNG")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.png"
    arguments = [first, text, folder, empty, missing, last]

    result = run("predict", str(digits_model), *map(str, arguments), "--top", "10")
    assert result.returncode == 1
    no_traceback(result)
    good = [first, *sorted(in_folder), last]
    lines = result.stdout.splitlines()
    assert lines[0] == "ran on CPUExecutionProvider"
    assert [line.split(": ")[0] for line in lines[1:]] == list(map(str, good))
    errors = result.stderr.splitlines()
    assert errors[0] == f"cnnspec: error: {text} is not an image Pillow can read"
    assert errors[1].startswith(f"cnnspec: error: {damaged} is a damaged or truncated PNG image (")
    assert errors[2] == f"cnnspec: error: {empty} is empty (0 bytes), not an image"
    assert errors[3] == f"cnnspec: error: no such image: {missing}"
    assert errors[4] == "cnnspec: error: 4 inputs failed, 42 images classified"
    assert len(errors) == 5

    result = run("predict", str(digits_model), *map(str, arguments), "--top", "10", "-f", "json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert [p["image"] for p in report["predictions"]] == list(map(str, good))
    for path, prediction in zip(good, report["predictions"], strict=True):
        got = {int(t["class"]): t["probability"] for t in prediction["top"]}
        expected = onnxruntime_probabilities(digits_model, path)
        assert [got[i] for i in range(10)] == pytest.approx(expected, abs=1e-6), path
    assert len(result.stderr.splitlines()) == 5


def test_every_format_pillow_reads_is_classified(digits_model: Path, tmp_path: Path) -> None:
    png = write_digits(tmp_path, 1, start=3)[0]
    digit = Image.open(png)
    folder = tmp_path / "formats"
    folder.mkdir()
    lossless = {"gif": {}, "bmp": {}, "tif": {}, "tiff": {"compression": "tiff_lzw"}}
    if features.check("webp"):
        lossless["webp"] = {"lossless": True}
    for suffix, options in lossless.items():
        digit.save(folder / f"digit.{suffix}", **options)
    digit.save(folder / "digit.jpg", quality=95)
    write(folder, "labels.csv", "file,label\ndigit.png,3\n")  # no image suffix: skipped
    unusual = tmp_path / "digit.dat"  # named on the command line: tried whatever its suffix
    unusual.write_bytes(png.read_bytes())

    arguments = [str(folder), str(unusual), "--top", "10", "-f", "json"]
    result = run("predict", str(digits_model), *arguments)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    predictions = {Path(p["image"]).name: p for p in json.loads(result.stdout)["predictions"]}
    names = sorted(f"digit.{suffix}" for suffix in [*lossless, "jpg"])
    assert list(predictions) == [*names, "digit.dat"]
    expected = onnxruntime_probabilities(digits_model, png)
    for name, prediction in predictions.items():
        if name != "digit.jpg":  # JPEG is lossy: classified, not bit-for-bit the PNG
            got = {int(t["class"]): t["probability"] for t in prediction["top"]}
            assert [got[i] for i in range(10)] == pytest.approx(expected, abs=1e-6), name


def test_empty_folders_patterns_and_no_good_image(digits_model: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    write(empty, "notes.txt", "nothing to see")
    pngs = write_digits(tmp_path / "pngs", 2)
    pattern, unmatched = str(tmp_path / "pngs" / "*.png"), str(tmp_path / "pngs" / "*.jpeg")
    result = run("predict", str(digits_model), str(empty), pattern, unmatched)
    assert result.returncode == 1
    no_traceback(result)
    assert [line.split(": ")[0] for line in result.stdout.splitlines()[1:]] == list(map(str, pngs))
    assert result.stderr.splitlines() == [
        f"cnnspec: error: {empty} holds no image files",
        f"cnnspec: error: no file matches {unmatched}",
        "cnnspec: error: 2 inputs failed, 2 images classified",
    ]

    text = write(tmp_path, "x.png", "text")
    result = run("predict", str(digits_model), str(text), str(empty))
    assert result.returncode == 1
    no_traceback(result)
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1] == "cnnspec: error: 2 inputs failed, 0 images classified"

    result = run("predict", "--help")
    assert "a folder: every image file under it, recursively, sorted" in " ".join(
        result.stdout.split()
    )


def test_bench_reports_both_batch_sizes(digits_model: Path, tmp_path: Path) -> None:
    result = run("bench", str(digits_model), "--calls", "20")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{digits_model} on CPUExecutionProvider, full graph optimisation"
    for line, batch in zip(lines[1:3], (1, 32), strict=True):
        match = re.fullmatch(
            rf"  batch {batch:>2}: +([\d.]+) ms median \(p90 ([\d.]+)\), ([\d,]+) images/s", line
        )
        assert match, line
        median, p90, rate = float(match[1]), float(match[2]), int(match[3].replace(",", ""))
        assert 0 < median <= p90
        # The median is printed to 0.001 ms and the rate comes from the unrounded median: at
        # tens of microseconds per call that rounding alone moves the rate by a percent or more.
        slowest, fastest = batch / ((median + 0.0005) / 1000), batch / ((median - 0.0005) / 1000)
        assert slowest - 1 <= rate <= fastest + 1, (median, rate)
    assert lines[3] == "  BatchNormalization nodes after optimisation: 0"
    corrupt = write(tmp_path, "corrupt.onnx", "nope")
    assert "is not an ONNX model" in error_line(run("bench", str(corrupt)))
