"""What a first-time user met in their first hour (issue 17), in the generated scripts: each
case here failed before with a traceback or did something silently wrong.

- a spec with no augment section trains in Keras (an empty keras.Sequential cannot be called);
- an image folder whose spec names no classes takes them from its sub-folders, in both scripts;
- a missing folder, a class folder without images, a file that is not an image, an empty
  split, `validation val` without val/ and `--device cuda` without CUDA are one line each;
- --resume carries a PyTorch run on to exactly the weights and history of an uninterrupted
  one, and a Keras run on from its last epoch with the optimizer's state;
- model.keras predicts from the data source's own pixels; metrics.json says what the network
  itself takes; the Keras history has the learning rate; curves show the phases.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("keras")
pytest.importorskip("torch")

from tests.frameworks.scripts import (
    checked_spec,
    load_script,
    run_script,
    tensorflow_noise,
    write_script,
    write_tiny_image_folders,
)

pytestmark = pytest.mark.frameworks

NO_AUGMENT = """\
model plain {
  input 8x8x1
  conv2d(8, padding=same, activation=relu)
  global_avg_pool()
  dense(10, activation=softmax)
}
data { source digits  rescale 1/16  labels sparse  validation 0.1 }
train { epochs 2  batch 64 }
evaluate { curves() }
"""

FOLDERS = """\
model folders {
  input 16x16x3
  conv2d(4, padding=same, activation=relu)
  global_avg_pool()
  dense(3, activation=softmax)
}
data { source directory("imgs", size=16x16)  rescale 1/255  labels sparse  validation val }
train { epochs 1  batch 4 }
evaluate { report(classification) }
"""


def error_line(stderr: str) -> str:
    """The script's one line of error: the last line, and no traceback anywhere."""
    assert "Traceback" not in stderr, stderr[-3000:]
    return stderr.strip().splitlines()[-1]


def test_keras_trains_without_augmentation_and_records_what_it_should(tmp_path: Path) -> None:
    script = write_script(checked_spec(NO_AUGMENT), tmp_path, "keras")
    out = tmp_path / "run"
    result = run_script(script, "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert tensorflow_noise(result.stderr) == []
    metrics = json.loads((out / "metrics.json").read_text())
    # No callback changes the learning rate, and the history still has it.
    assert [round(row["learning_rate"], 6) for row in metrics["history"]] == [0.001, 0.001]
    assert metrics["preprocessing"] == {"rescale": 1 / 16}
    # model.keras takes the digits as they come (0-16): the rescaling is its first layer.
    import keras
    from sklearn.datasets import load_digits

    module = load_script(script)
    network = module.build_model()
    module.load_weights(network, out / "weights.safetensors")
    saved = keras.models.load_model(out / "model.keras")
    pixels = load_digits().images[:8, :, :, np.newaxis].astype("float32")
    expected = np.asarray(network(pixels / 16, training=False))
    assert np.abs(np.asarray(saved(pixels, training=False)) - expected).max() < 1e-6


def test_curves_mark_the_phases_on_whole_epochs(tmp_path: Path) -> None:
    module = load_script(write_script(checked_spec(NO_AUGMENT), tmp_path, "pytorch"))
    history = [
        {"phase": "head", "epoch": 1, "loss": 1.0, "accuracy": 0.5},
        {"phase": "head", "epoch": 2, "loss": 0.8, "accuracy": 0.6},
        {"phase": "tune", "epoch": 3, "loss": 0.6, "accuracy": 0.7},
    ]
    drawn = []
    original = module.Figure.savefig

    def keep(figure, path, **options):  # type: ignore[no-untyped-def]
        drawn.append(figure)
        return original(figure, path, **options)

    module.Figure.savefig = keep
    try:
        module.plot_curves(history, tmp_path / "curves.png", "plain, pytorch: test accuracy 0.7")
    finally:
        module.Figure.savefig = original
    (figure,) = drawn
    assert figure.get_suptitle() == "plain, pytorch: test accuracy 0.7"
    for axis in figure.axes:
        boundaries = [line for line in axis.get_lines() if line.get_linestyle() == ":"]
        assert [line.get_xdata()[0] for line in boundaries] == [2.5]
        assert all(float(tick).is_integer() for tick in axis.get_xticks())
    assert (tmp_path / "curves.png").stat().st_size > 0


@pytest.mark.parametrize("backend_name", ["keras", "pytorch"])
def test_an_image_folder_names_its_classes(backend_name: str, tmp_path: Path) -> None:
    write_tiny_image_folders(tmp_path / "imgs", ("cat", "dog", "emu"), size=16, per_class=3)
    script = write_script(checked_spec(FOLDERS), tmp_path, backend_name)
    out = tmp_path / "run"
    result = run_script(script, "--data-dir", str(tmp_path / "imgs"), "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "metrics.json").read_text())["test"]["report"]
    assert {"cat", "dog", "emu"} <= set(report)


def test_problems_with_the_data_are_one_line(tmp_path: Path) -> None:
    """PyTorch's script (it starts faster); both share the folder checks. The first case runs
    the script as a process; the others call its main() in this one (the same code, without
    loading PyTorch each time)."""
    script = write_script(checked_spec(FOLDERS), tmp_path, "pytorch")
    out = ["--output-dir", str(tmp_path / "run")]
    missing_folder = run_script(script, "--data-dir", str(tmp_path / "nowhere"), *out)
    assert missing_folder.returncode != 0
    missing = error_line(missing_folder.stderr)
    module = load_script(script)

    def fails(folder: Path, *args: str) -> str:
        with pytest.raises(SystemExit) as exited:
            module.main(["--data-dir", str(folder), *out, *args])
        message = str(exited.value.code)
        assert message.startswith("error: ") and "\n" not in message
        return message

    assert fails(tmp_path / "nowhere") == missing
    assert "no data folder" in missing and "working directory" in missing
    assert "--data-dir" in missing
    root = write_tiny_image_folders(tmp_path / "data", ("cat", "dog", "emu"), 16, per_class=2)
    extra = root / "train" / "fox"
    extra.mkdir()
    assert "has 4 class folders (cat, dog, emu, fox), but the model tells 3" in fails(root)
    extra.rmdir()
    for image in (root / "train" / "emu").iterdir():
        image.unlink()
    assert "train/emu holds no image (files ending .bmp, .gif, .jpeg" in fails(root)
    (root / "train" / "emu" / "notes.png").write_text("not an image")
    assert "notes.png cannot be read as an image: cannot identify" in fails(root)
    (root / "train" / "emu" / "notes.png").unlink()
    pixels = (root / "train" / "cat").iterdir().__next__()
    (root / "train" / "emu" / "cut.png").write_bytes(pixels.read_bytes()[:60])
    assert "cut.png cannot be read as an image" in fails(root)
    (root / "train" / "emu" / "cut.png").unlink()
    (root / "train" / "emu" / "0.png").write_bytes(pixels.read_bytes())
    assert fails(root, "--subset", "0").endswith("the train split holds no examples")
    for image in (root / "val").glob("*/*"):
        image.unlink()
    for folder in (root / "val").iterdir():
        folder.rmdir()
    (root / "val").rmdir()
    assert "validation val, but" in fails(root) and "has no val/ folder" in fails(root)


def test_device_cuda_without_cuda_is_one_line(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    script = write_script(checked_spec(NO_AUGMENT), tmp_path, "pytorch")
    result = run_script(script, "--device", "cuda", "--output-dir", str(tmp_path / "run"))
    assert result.returncode != 0
    line = error_line(result.stderr)
    assert line.startswith("error: --device cuda, but this PyTorch") and "--device cpu" in line


def test_pytorch_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    script = write_script(checked_spec(NO_AUGMENT), tmp_path, "pytorch")
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert run_script(script, "--epochs", "2", "--output-dir", str(whole)).returncode == 0
    assert run_script(script, "--epochs", "1", "--output-dir", str(cut)).returncode == 0
    resumed = run_script(script, "--epochs", "2", "--resume", "--output-dir", str(cut))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "train: carrying on after epoch 1" in resumed.stdout
    assert (whole / "weights.safetensors").read_bytes() == (
        cut / "weights.safetensors"
    ).read_bytes()
    history = [json.loads((d / "metrics.json").read_text())["history"] for d in (whole, cut)]
    assert history[0] == history[1] and [row["epoch"] for row in history[0]] == [1, 2]
    nothing = run_script(script, "--resume", "--output-dir", str(tmp_path / "new"))
    assert "--resume: no" in error_line(nothing.stderr)


def test_keras_resume_carries_on_with_the_optimizer_state(tmp_path: Path) -> None:
    script = write_script(checked_spec(NO_AUGMENT), tmp_path, "keras")
    out = tmp_path / "run"
    assert run_script(script, "--epochs", "1", "--output-dir", str(out)).returncode == 0
    first = np.load(out / "resume" / "optimizer.npz")
    steps = int(first["v0"])  # the optimizer's iteration count
    assert steps > 0
    resumed = run_script(script, "--epochs", "2", "--resume", "--output-dir", str(out))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "train: carrying on after epoch 1" in resumed.stdout
    assert int(np.load(out / "resume" / "optimizer.npz")["v0"]) == 2 * steps
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [1, 2]
