"""What a newcomer met in their first hour, round 2 (issue 23), in the generated scripts: each
case here failed before, with a traceback or by doing something silently wrong.

- a validation fraction of an image folder is a seeded, stratified split, the same files in
  both scripts; `--image-size` resizes image folders in PyTorch too, as Keras does;
- every run gets a folder of its own (the default one numbered), an explicit folder holding a
  run is refused, a run that fails on its data leaves no folder;
- `--subset` is seeded and stratified; `--epochs` caps each phase, resumed or not;
- Ctrl-C saves, says how to carry on and exits 130; a resume across a phase boundary is as
  exact as one inside a phase; Keras restores its optimizer without a warning;
- `--deterministic` makes Keras bitwise reproducible;
- a damaged image is found before training, by name, in both; Keras reads what Pillow reads;
- `--init-weights` starts a run from `cnnspec import`'s weights, and a file that does not fit
  is one line naming the tensor.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

pytest.importorskip("keras")
pytest.importorskip("torch")

from tests.frameworks.scripts import (
    checked_spec,
    load_script,
    run_script,
    write_script,
    write_tiny_image_folders,
)

pytestmark = pytest.mark.frameworks

FOLDERS = """\
model folders {
  input 16x16x3
  conv2d(4, padding=same, activation=relu)
  global_avg_pool()
  dense(3, activation=softmax)
}
data { source directory("imgs")  rescale 1/255  labels sparse  validation 0.25 }
train { epochs 1  batch 4 }
"""

DIGITS = """\
model digits_net {
  input 8x8x1
  conv2d(8, padding=same, activation=relu)
  dropout(0.2)
  global_avg_pool()
  dense(10, activation=softmax)
}
data { source digits  rescale 1/16  labels sparse  validation 0.1 }
augment { shift(0.1) }
train { epochs 2  batch 64  seed 3 }
"""

TWO_PHASES = """\
model staged {
  input 8x8x1
  block body { conv2d(8, padding=same, activation=relu)  dropout(0.3) }
  global_avg_pool()
  dense(10, activation=softmax)
}
data { source digits  rescale 1/16  labels sparse  validation 0.1 }
augment { shift(0.1)  flip(horizontal) }
train {
  batch 64
  phase first { epochs 2  optimizer adam(lr=0.003) }
  phase second { epochs 2  freeze body  optimizer sgd(lr=0.01, momentum=0.9) }
}
"""


def quick(tmp_path: Path, text: str, backend: str) -> ModuleType:
    """A spec's script, written and imported as a module (its main() runs in this process)."""
    return load_script(write_script(checked_spec(text), tmp_path, backend))


def exit_message(module: ModuleType, *args: str) -> str:
    """main()'s one line of error."""
    with pytest.raises(SystemExit) as exited:
        module.main(list(args))
    message = str(exited.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


def history(folder: Path) -> list[tuple[str, int]]:
    rows = json.loads((folder / "metrics.json").read_text())["history"]
    return [(row["phase"], row["epoch"]) for row in rows]


def folders_with_a_webp(root: Path) -> Path:
    """Three classes of grey PNGs at 20x20, and one RGB WebP (Pillow reads it; TensorFlow's
    decoder did not)."""
    from PIL import Image

    write_tiny_image_folders(root, ("cat", "dog", "emu"), size=20, per_class=4)
    pixels = np.random.default_rng(1).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "train" / "cat" / "webp.webp", lossless=True)
    return root


# --------------------------------------------------------------------------------------------
# image folders


def test_a_folders_validation_fraction_is_the_same_stratified_split_in_both(
    tmp_path: Path,
) -> None:
    root = folders_with_a_webp(tmp_path / "imgs")
    scripts = {b: quick(tmp_path, FOLDERS, b) for b in ("keras", "pytorch")}
    splits = {
        name: module.split_validation(
            module.load_data(str(root)), module.VALIDATION_FRACTION, module.SEED
        )
        for name, module in scripts.items()
    }
    keras_val, torch_val = (list(splits[b]["val"][0]) for b in ("keras", "pytorch"))
    assert keras_val == torch_val
    train = list(splits["pytorch"]["train"][0])
    everything = sorted(str(p) for p in (root / "train").glob("*/*"))
    assert sorted(train + torch_val) == everything and not set(train) & set(torch_val)
    # Stratified: a quarter of each class's 5, 4 and 8 files (the WebP among the cats),
    # rounded up to 5 in all, the odd one to the largest remainder.
    classes = [Path(path).parent.name for path in torch_val]
    assert Counter(classes) == {"cat": 2, "dog": 1, "emu": 2}
    for backend in ("keras", "pytorch"):
        out = tmp_path / backend
        result = run_script(
            write_script(checked_spec(FOLDERS), tmp_path, backend),
            *("--data-dir", str(root), "--output-dir", str(out)),
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Traceback" not in result.stderr
        assert "val_loss" in json.loads((out / "metrics.json").read_text())["history"][0]


def test_image_size_resizes_image_folders_and_arrays_alike_in_both(tmp_path: Path) -> None:
    root = folders_with_a_webp(tmp_path / "imgs")
    keras_script, torch_script = (quick(tmp_path, FOLDERS, b) for b in ("keras", "pytorch"))
    import torch

    for size in (12, 24):
        splits = keras_script.load_data(str(root))
        keras_batch = next(iter(keras_script.make_datasets(splits, 64, 0, size)["test"]))[0]
        loaders = torch_script.make_loaders(torch_script.load_data(str(root)), 64, 0, size)
        pixels = next(iter(loaders["test"]))[0]
        torch_batch = torch_script.prepare(pixels, torch.device("cpu")).numpy()
        assert keras_batch.shape == (16, size, size, 3)
        # The same pixels: both read the files with Pillow at the size asked.
        np.testing.assert_array_equal(np.asarray(keras_batch), torch_batch.transpose(0, 2, 3, 1))
    # Arrays (the digits) are resized batch by batch, the same way.
    keras_digits, torch_digits = (quick(tmp_path, DIGITS, b) for b in ("keras", "pytorch"))
    splits = keras_digits.load_data()
    keras_batch = next(iter(keras_digits.make_datasets(splits, 32, 0, 20)["test"]))[0]
    loaders = torch_digits.make_loaders(splits, 32, 0, 20)
    pixels = next(iter(loaders["test"]))[0]
    torch_batch = torch_digits.prepare(pixels, torch.device("cpu")).numpy()
    assert torch_batch.shape == (32, 1, 20, 20)
    np.testing.assert_allclose(
        np.asarray(keras_batch), torch_batch.transpose(0, 2, 3, 1), atol=1e-6
    )


def test_damaged_images_are_named_before_training_in_both(tmp_path: Path) -> None:
    root = write_tiny_image_folders(tmp_path / "imgs", ("cat", "dog", "emu"), 16, per_class=2)
    good = next((root / "test" / "dog").iterdir()).read_bytes()
    (root / "test" / "dog" / "cut.png").write_bytes(good[: len(good) // 2])
    for backend in ("pytorch", "keras"):
        module = quick(tmp_path, FOLDERS, backend)
        out = tmp_path / f"run_{backend}"
        message = exit_message(module, "--data-dir", str(root), "--output-dir", str(out))
        assert message.startswith(f"error: {root / 'test' / 'dog' / 'cut.png'} cannot be read")
        assert not out.exists()  # found before the run wrote anything


# --------------------------------------------------------------------------------------------
# run folders, subsets, epochs


def test_every_run_writes_a_folder_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    module = quick(tmp_path, DIGITS, "pytorch")
    quick_run = ["--epochs", "1", "--subset", "80"]
    default = Path(module.DEFAULT_OUTPUT_DIR)
    module.main(quick_run)
    module.main(quick_run)
    said = capsys.readouterr().out
    second = Path(f"{default}2")
    assert f"{default} holds an earlier run: this one writes to {second}" in said
    assert history(default) == history(second) == [("train", 1)]
    # --resume without --output-dir carries on the latest run.
    module.main(["--resume", "--subset", "80"])
    assert history(second) == [("train", 1), ("train", 2)]
    assert history(default) == [("train", 1)]
    # An explicit folder that holds a run is refused, unless told what to do with it.
    message = exit_message(module, *quick_run, "--output-dir", str(default))
    assert "holds an earlier run: pass --resume to carry it on, --overwrite" in message
    (default / "tensorboard" / "train" / "stale").write_text("")
    (default / "notes.txt").write_text("mine")
    module.main([*quick_run, "--output-dir", str(default), "--overwrite", "--seed", "9"])
    assert not (default / "tensorboard" / "train" / "stale").exists()
    assert (default / "notes.txt").read_text() == "mine"  # not the run's: kept
    # A run that fails on its data leaves no folder behind.
    folders = quick(tmp_path, FOLDERS, "pytorch")
    assert "no data folder" in exit_message(folders, "--data-dir", "nowhere")
    assert "no data folder" in exit_message(folders, "--data-dir", "x", "--output-dir", "new")
    assert not Path(folders.DEFAULT_OUTPUT_DIR).exists() and not Path("new").exists()


def test_a_subset_draws_every_class_alike_in_both(tmp_path: Path) -> None:
    keras_script, torch_script = (quick(tmp_path, DIGITS, b) for b in ("keras", "pytorch"))
    split = torch_script.load_data()["train"]
    chosen = {
        name: module.subset(split, 50, 7)
        for name, module in (("keras", keras_script), ("pytorch", torch_script))
    }
    np.testing.assert_array_equal(chosen["keras"][0], chosen["pytorch"][0])
    labels = chosen["pytorch"][1]
    assert len(labels) == 50
    assert np.bincount(labels, minlength=10).min() >= 4  # every class, in proportion
    assert not np.array_equal(torch_script.subset(split, 50, 8)[0], chosen["pytorch"][0])
    # A few examples still cover as many classes as they can.
    assert len(set(torch_script.subset(split, 7, 0)[1])) == 7


def test_epochs_caps_each_phase_resumed_or_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module = quick(tmp_path, TWO_PHASES, "pytorch")
    out = ["--output-dir", str(tmp_path / "run"), "--subset", "100", "--no-tensorboard"]
    module.main([*out, "--epochs", "1"])
    assert history(tmp_path / "run") == [("first", 1), ("second", 2)]
    # The run stopped in phase second: --resume carries that phase on to 2 epochs.
    module.main([*out, "--epochs", "2", "--resume"])
    assert history(tmp_path / "run") == [("first", 1), ("second", 2), ("second", 3)]
    with pytest.raises(SystemExit):
        module.parse_args(["--help"])
    assert "at most N epochs in each phase" in " ".join(capsys.readouterr().out.split())


# --------------------------------------------------------------------------------------------
# Ctrl-C, resume, determinism


def interrupt_at(module: ModuleType, call: int) -> None:
    """Make the script's `call`-th training epoch raise KeyboardInterrupt, as Ctrl-C does."""
    real = module.run_epoch
    calls = [0]

    def run_epoch(*args, **kwargs):  # type: ignore[no-untyped-def]
        if kwargs.get("optimizer") is not None or len(args) > 4:
            calls[0] += 1
            if calls[0] == call:
                raise KeyboardInterrupt
        return real(*args, **kwargs)

    module.run_epoch = run_epoch


@pytest.mark.parametrize(("cut", "where"), [(2, "first, epoch 2"), (3, "second, epoch 3")])
def test_pytorch_resume_after_ctrl_c_equals_an_uninterrupted_run(
    cut: int, where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Cut inside phase `first`, and at the boundary (phase `second`'s first epoch): the
    resumed run ends with the uninterrupted one's weights and history, to the bit."""
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    common = ["--subset", "300", "--no-tensorboard"]
    quick(tmp_path, TWO_PHASES, "pytorch").main([*common, "--output-dir", str(whole)])
    module = quick(tmp_path, TWO_PHASES, "pytorch")
    interrupt_at(module, cut)
    with pytest.raises(SystemExit) as exited:
        module.main([*common, "--output-dir", str(stopped)])
    assert exited.value.code == 130
    said = capsys.readouterr().err.strip().splitlines()
    assert said == [f"interrupted in phase {where}: rerun with --resume"]
    assert not (stopped / "metrics.json").exists()
    quick(tmp_path, TWO_PHASES, "pytorch").main([*common, "--output-dir", str(stopped), "--resume"])
    assert (whole / "weights.safetensors").read_bytes() == (
        stopped / "weights.safetensors"
    ).read_bytes()
    assert history(whole) == history(stopped)
    rows = [json.loads(line) for line in (stopped / "epochs.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3, 4]  # the cut epoch once


def test_keras_ctrl_c_saves_and_resumes_its_optimizer_without_a_warning(tmp_path: Path) -> None:
    script = write_script(checked_spec(TWO_PHASES), tmp_path, "keras")
    out = tmp_path / "run"
    # Epochs of 81 steps (--batch-size 16): Ctrl-C comes well inside one.
    command = [str(script), "--output-dir", str(out), "--no-tensorboard", "--batch-size", "16"]
    child = subprocess.Popen(
        [sys.executable, *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert child.stdout is not None
    for line in child.stdout:
        if line.startswith("Epoch 2/"):  # phase first's second epoch has begun
            child.send_signal(signal.SIGINT)
            break
    _, stderr = child.communicate(timeout=300)
    assert child.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        "interrupted in phase first, epoch 2: rerun with --resume"
    )
    saved = np.load(out / "resume" / "optimizer.npz")
    steps = int(saved["v0"])  # the optimizer's iterations after epoch 1
    assert steps > 0
    resumed = run_script(
        script, "--output-dir", str(out), "--resume", "--no-tensorboard", "--batch-size", "16"
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Skipping variable loading" not in resumed.stdout + resumed.stderr
    assert "first: carrying on after epoch 1" in resumed.stdout
    assert "phase first: epochs 2 to 2" in resumed.stdout  # the Keras log names the phase
    assert "phase second: epochs 3 to 4" in resumed.stdout
    assert history(out) == [("first", 1), ("first", 2), ("second", 3), ("second", 4)]


def test_keras_deterministic_runs_are_bitwise_equal(
    tmp_path: Path,
) -> None:
    script = write_script(checked_spec(DIGITS), tmp_path, "keras")
    runs = []
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, str(script), "--deterministic", "--no-tensorboard"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        runs.append(result.stdout)
    # The second run took the next default folder.
    first, second = tmp_path / "runs" / "digits_net_keras", tmp_path / "runs" / "digits_net_keras2"
    assert f"this one writes to {second.relative_to(tmp_path)}" in runs[1]
    assert (first / "weights.safetensors").read_bytes() == (
        second / "weights.safetensors"
    ).read_bytes()
    assert (
        json.loads((first / "metrics.json").read_text())["history"]
        == json.loads((second / "metrics.json").read_text())["history"]
    )
    mask = os.umask(0)
    os.umask(mask)
    assert (first / "weights.safetensors").stat().st_mode & 0o777 == 0o666 & ~mask


def test_pytorch_early_stopping_counts_one_epoch_in_the_singular(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module = quick(tmp_path, DIGITS, "pytorch")
    stopping = module.EarlyStopping("val_loss", "min", patience=1)
    assert not stopping.on_epoch_end(None, {"val_loss": 1.0})
    assert stopping.on_epoch_end(None, {"val_loss": 2.0})
    assert capsys.readouterr().out == "early stopping: val_loss stalled for 1 epoch\n"


# --------------------------------------------------------------------------------------------
# import, then fine-tune


def test_import_then_fine_tune_from_the_imported_weights(tmp_path: Path) -> None:
    """The README's walk-through: a Keras model imported, its head swapped for the folders'
    three classes, a phase with its stem frozen, trained on folders in both scripts from the
    imported weights."""
    import keras
    from keras import layers
    from safetensors.numpy import load_file, save_file

    from cnnspec.cli import main as cnnspec

    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.MaxPooling2D(name="stem_pool")(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="block_conv")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(10, activation="softmax", name="classifier")(x)
    keras.Model(inputs, outputs, name="small").save(tmp_path / "small.keras")
    spec_file, weights = tmp_path / "small.cnn", tmp_path / "small.safetensors"
    with pytest.raises(SystemExit) as imported:
        cnnspec(["import", str(tmp_path / "small.keras"), "-o", str(spec_file)])
    assert imported.value.code == 0
    text = spec_file.read_text()
    assert "block stem {" in text
    head = "dense(10, activation=softmax, name=classifier)"
    spec_file.write_text(
        text.replace(head, "dense(3, activation=softmax, name=head)")
        + 'data { source directory("imgs")  rescale 1/255  labels sparse  validation 0.25 }\n'
        + "train { batch 4  phase head { freeze stem  epochs 1 } }\n"
    )
    root = write_tiny_image_folders(tmp_path / "imgs", ("cat", "dog", "emu"), 20, per_class=4)
    start = load_file(weights)
    spec = checked_spec(path=spec_file)
    for backend in ("pytorch", "keras"):
        out = tmp_path / backend
        result = run_script(
            write_script(spec, tmp_path, backend),
            *("--data-dir", str(root), "--output-dir", str(out), "--init-weights", str(weights)),
        )
        assert result.returncode == 0, result.stderr[-3000:]
        said = result.stdout
        assert f"--init-weights: head.bias and 1 more not in {weights}: initialised" in said
        assert f"classifier.bias and 1 more of {weights} fit no layer: left out" in said
        assert f"weights from {weights}" in said
        trained = load_file(out / "weights.safetensors")
        for name in ("stem_conv.weight", "stem_bn.running_mean", "stem_bn.weight"):
            np.testing.assert_array_equal(trained[name], start[name], err_msg=backend)
        assert not np.array_equal(trained["block_conv.weight"], start["block_conv.weight"])
    # A tensor of another shape, or a file of another network, is one line of error.
    module = load_script(write_script(spec, tmp_path, "pytorch"))
    wrong = dict(start)
    wrong["block_conv.weight"] = np.zeros((16, 8, 5, 5), dtype="float32")
    save_file(wrong, tmp_path / "wrong.safetensors")
    save_file({"other.weight": np.zeros(3, "float32")}, tmp_path / "other.safetensors")
    folders = ("--data-dir", str(root), "--output-dir", str(tmp_path / "w"))
    message = exit_message(module, *folders, "--init-weights", str(tmp_path / "wrong.safetensors"))
    assert message == (
        f"error: --init-weights {tmp_path / 'wrong.safetensors'} does not fit: "
        "block_conv.weight is (16, 8, 5, 5), the model's is (16, 8, 3, 3)"
    )
    message = exit_message(module, *folders, "--init-weights", str(tmp_path / "other.safetensors"))
    assert message.endswith("other.safetensors holds none of the model's tensors")
    assert not (tmp_path / "w").exists()


def test_a_resume_point_an_older_script_saved_is_one_line(tmp_path: Path) -> None:
    """Resume points before issue 23 held the Keras weights with the optimizer in one .h5 file
    and the PyTorch generators as a list: a script of today refuses them in one line."""
    import torch

    out = tmp_path / "old"
    (out / "resume").mkdir(parents=True)
    (out / "resume" / "state.json").write_text('{"phase": "train", "history": []}')
    (out / "resume" / "model.weights.h5").write_bytes(b"")
    torch.save({"generators": [None, None], "history": []}, out / "resume.pt")
    for backend in ("keras", "pytorch"):
        module = quick(tmp_path, DIGITS, backend)
        message = exit_message(module, "--output-dir", str(out), "--resume", "--subset", "40")
        assert message.startswith("error: --resume: ") and "was saved by an older script" in message


def test_predict_reads_a_large_jpeg_as_the_scripts_train_on_it(tmp_path: Path) -> None:
    """Both scripts read an image with one function (a large JPEG decoded at a fraction of its
    size, then resized), and `cnnspec predict` reads it the same way: no skew between what a
    model trained on and what it is asked."""
    from PIL import Image

    from cnnspec.predict import Preprocessing

    photo = np.random.default_rng(4).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(photo).resize((400, 300), Image.Resampling.BICUBIC).save(path, quality=90)
    module = quick(tmp_path, FOLDERS, "pytorch")
    trained_on = module.read_image(str(path), (16, 16))
    reading = Preprocessing(
        *(16, 16, 3, "nhwc", 255.0, 1.0, None, None, "rgb", ["a", "b", "c"], False, 0.5)
    )
    np.testing.assert_array_equal(reading.load(path), trained_on.astype(np.float32))
    # A fraction of the photo was decoded: not the full decode, resized (which is slower).
    with Image.open(path) as image:
        full = np.asarray(image.convert("RGB").resize((16, 16), Image.Resampling.BILINEAR))
    assert not np.array_equal(full, trained_on)
