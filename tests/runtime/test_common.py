"""The framework-neutral code of the generated scripts (cnnspec/runtime/common.py), run as the
scripts run it: which examples a quick run and a validation split take, where a run writes
and what it refuses, weight files checked before loading, images read and checked, the
loaders' refusals, and the plots. The script's constants are patched on the module where a
function reads them. No framework is imported."""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import save_file

from cnnspec.runtime import common


def test_the_backends_read_the_runtime_module_as_text() -> None:
    # Emitting a script imports none of the libraries the copied code uses.
    probe = (
        "import sys, cnnspec.backends.common;"
        "print(sorted(m for m in ('cnnspec.runtime.common', 'matplotlib', 'sklearn', 'PIL',"
        " 'safetensors', 'torch', 'tensorflow', 'keras', 'mlflow') if m in sys.modules))"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert found.strip() == "[]"


def counts(labels: np.ndarray) -> dict[int, int]:
    return dict(sorted(Counter(labels.tolist()).items()))


# --- Which examples a run sees


def test_stratified_takes_each_class_in_proportion() -> None:
    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    chosen = common.stratified(labels, 20, seed=1)
    assert len(chosen) == 20
    assert list(chosen) == sorted(chosen)  # in the examples' order
    assert len(set(chosen.tolist())) == 20
    assert counts(labels[chosen]) == {0: 12, 1: 6, 2: 2}


def test_stratified_is_seeded() -> None:
    labels = np.repeat(np.arange(4), 25)
    first = common.stratified(labels, 10, seed=7)
    assert np.array_equal(first, common.stratified(labels, 10, seed=7))
    assert not np.array_equal(first, common.stratified(labels, 10, seed=8))


def test_a_few_examples_cover_as_many_classes_as_they_can() -> None:
    # Five classes of 20: two examples are two classes, not two of the largest remainder.
    labels = np.repeat(np.arange(5), 20)
    for seed in range(10):
        chosen = common.stratified(labels, 2, seed)
        assert len(set(labels[chosen].tolist())) == 2


def test_subset_keeps_images_and_labels_together() -> None:
    labels = np.array([0] * 50 + [1] * 50)
    images = np.arange(100) * 10  # each image tells its index
    small_images, small_labels = common.subset((images, labels), 10, seed=0)
    assert counts(small_labels) == {0: 5, 1: 5}
    assert np.array_equal(small_images // 10, np.flatnonzero(np.isin(images, small_images)))
    assert np.array_equal(labels[small_images // 10], small_labels)


def test_subset_larger_than_the_split_is_the_split() -> None:
    split = (np.zeros((3, 2, 2, 1)), np.array([0, 1, 1]))
    assert common.subset(split, 3, seed=0) is split
    assert common.subset(split, 100, seed=0) is split


def test_split_validation_holds_out_a_stratified_fraction_rounded_up() -> None:
    labels = np.array([0] * 45 + [1] * 45 + [2] * 10)
    images = np.arange(100)
    test = (np.arange(5), np.zeros(5, dtype=int))
    splits = common.split_validation({"train": (images, labels), "test": test}, 0.105, 3)
    train_images, train_labels = splits["train"]
    val_images, val_labels = splits["val"]
    assert len(val_labels) == 11  # ceil(10.5), as scikit-learn rounds a test size
    assert len(train_labels) == 89
    assert set(train_images.tolist()).isdisjoint(val_images.tolist())
    assert sorted([*train_images.tolist(), *val_images.tolist()]) == list(range(100))
    assert np.array_equal(labels[val_images], val_labels)
    assert counts(val_labels) == {0: 5, 1: 5, 2: 1}  # 4.95, 4.95 and 1.1, largest remainders up
    assert splits["test"] is test
    again = common.split_validation({"train": (images, labels), "test": test}, 0.105, 3)
    assert np.array_equal(again["val"][0], val_images)


def test_split_validation_of_files() -> None:
    files = np.array([f"img{index}.png" for index in range(20)])
    labels = np.array([0, 1] * 10)
    splits = common.split_validation({"train": (files, labels)}, 0.2, 0)
    assert len(splits["val"][0]) == 4
    assert common.is_files(splits["val"][0])
    assert counts(splits["val"][1]) == {0: 2, 1: 2}


def test_balanced_class_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "CLASS_NAMES", ["a", "b", "c"])
    weights = common.balanced_class_weights(np.array([0, 0, 0, 1]))
    assert weights == {0: pytest.approx(4 / 9), 1: pytest.approx(4 / 3)}  # no class 2: none


def test_spec_class_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "CLASS_WEIGHT", {0: 1.0, 1: 3.0})
    assert common.spec_class_weights(np.array([0, 1])) == {0: 1.0, 1: 3.0}


# --- Data


def test_check_not_empty_names_the_empty_split() -> None:
    common.check_not_empty({"train": (np.zeros(2), np.zeros(2))})
    with pytest.raises(common.DataError, match="the val split holds no examples"):
        common.check_not_empty({"train": (np.zeros(2), np.zeros(2)), "val": ([], [])})


def test_is_files() -> None:
    assert common.is_files(np.array(["a.png", "b.png"]))
    assert not common.is_files(np.zeros((2, 4, 4, 3), dtype="uint8"))
    assert not common.is_files(["a.png"])


def test_a_spec_without_a_source_says_so() -> None:
    with pytest.raises(common.DataError, match="no data source"):
        common.load_without_source("data")


def test_digits_are_split_stratified(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "TEST_FRACTION", 0.25)
    splits = common.load_digits_splits()
    (x_train, y_train), y_test = splits["train"], splits["test"][1]
    assert x_train.shape[1:] == (8, 8, 1) and x_train.dtype == np.float32
    assert len(y_test) == int(np.ceil(0.25 * 1797))
    assert len(y_train) + len(y_test) == 1797
    sizes = counts(np.concatenate([y_train, y_test]))
    assert all(abs(counts(y_test)[label] - size / 4) <= 1 for label, size in sizes.items())
    assert np.array_equal(common.load_digits_splits()["test"][1], y_test)


def test_cifar10_refuses_a_folder_without_it(tmp_path: Path) -> None:
    with pytest.raises(common.DataError, match=r"no CIFAR-10 data at .*cifar-10-batches-py"):
        common.load_cifar10(tmp_path)


def test_cifar10_batches_read_as_channels_last(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    pixels = np.arange(2 * 3 * 32 * 32, dtype="int64") % 251  # (N, 3, 32, 32), row-major
    for name in [*(f"data_batch_{index}" for index in range(1, 6)), "test_batch"]:
        batch = {b"data": pixels.reshape(2, -1), b"labels": [3, 7]}
        (folder / name).write_bytes(pickle.dumps(batch))
    splits = common.load_cifar10(tmp_path)
    images, labels = splits["train"]
    assert images.shape == (10, 32, 32, 3) and images.dtype == np.uint8
    assert labels.tolist() == [3, 7] * 5
    planes = pixels.reshape(2, 3, 32, 32)
    assert np.array_equal(images[1, 4, 5], planes[1, :, 4, 5])
    assert splits["test"][0].shape == (2, 32, 32, 3)


# --- A folder of images


@pytest.fixture
def folder_constants(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "CLASS_NAMES", None)
    monkeypatch.setattr(common, "CLASS_COUNT", 2)
    monkeypatch.setattr(common, "IMAGE_SUFFIXES", (".png", ".jpg", ".jpeg"))
    monkeypatch.setattr(common, "COLOR_MODE", "rgb")
    monkeypatch.setattr(common, "INPUT_SHAPE", (8, 8, 3))


def write_png(path: Path, size: tuple[int, int] = (12, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color=(200, 10, 30)).save(path)
    return path


def image_tree(root: Path, layout: dict[str, dict[str, int]]) -> Path:
    for split, classes in layout.items():
        for name, count in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for index in range(count):
                write_png(root / split / name / f"{index}.png")
    return root


@pytest.mark.usefixtures("folder_constants")
def test_folders_name_the_classes_and_list_the_files(tmp_path: Path) -> None:
    root = image_tree(tmp_path, {"train": {"cat": 2, "dog": 3}, "test": {"cat": 1, "dog": 1}})
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    splits = common.load_folders(root)
    assert common.CLASS_NAMES == ["cat", "dog"]  # train/'s folders, sorted
    assert sorted(splits) == ["test", "train"]
    files, labels = splits["train"]
    assert common.is_files(files)
    assert labels.tolist() == [0, 0, 1, 1, 1]
    assert [Path(f).relative_to(root).as_posix() for f in files[:3]] == [
        "train/cat/0.png",
        "train/cat/1.png",
        "train/dog/0.png",
    ]


@pytest.mark.usefixtures("folder_constants")
def test_image_files_by_suffix_in_any_case(tmp_path: Path) -> None:
    write_png(tmp_path / "b.PNG")
    write_png(tmp_path / "a.jpg.png")
    (tmp_path / "c.txt").write_text("")
    (tmp_path / "d.png").mkdir()
    assert [p.name for p in common.image_files(tmp_path)] == ["a.jpg.png", "b.PNG"]


@pytest.mark.usefixtures("folder_constants")
def test_folders_refuse_what_cannot_be_trained_on(tmp_path: Path) -> None:
    with pytest.raises(common.DataError, match=r"no data folder .*pass --data-dir"):
        common.load_folders(tmp_path / "missing")
    root = image_tree(tmp_path / "a", {"train": {"cat": 1, "dog": 1}})
    with pytest.raises(common.DataError, match="needs train/ and test/ folders"):
        common.load_folders(root)
    root = image_tree(tmp_path / "b", {"train": {"cat": 1, "dog": 1, "owl": 1}, "test": {"cat": 1}})
    with pytest.raises(common.DataError, match=r"3 class folders \(cat, dog, owl\).*2 classes"):
        common.load_folders(root)
    root = image_tree(tmp_path / "c", {"train": {"cat": 1, "dog": 0}, "test": {"cat": 1}})
    (root / "test" / "dog").mkdir()
    with pytest.raises(common.DataError, match=r"train[/\\]dog holds no image"):
        common.load_folders(root)


@pytest.mark.usefixtures("folder_constants")
def test_folders_must_hold_the_specs_classes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(common, "CLASS_NAMES", ["NORMAL", "PNEUMONIA"])
    root = image_tree(tmp_path, {"train": {"NORMAL": 1, "OTHER": 1}, "test": {"NORMAL": 1}})
    with pytest.raises(common.DataError, match="but the classes are"):
        common.load_folders(root)


@pytest.mark.usefixtures("folder_constants")
def test_read_image_resizes_and_converts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_png(tmp_path / "wide.png", size=(20, 10))
    pixels = common.read_image(path, (8, 6))
    assert pixels.shape == (8, 6, 3) and pixels.dtype == np.uint8
    assert pixels[0, 0].tolist() == [200, 10, 30]
    monkeypatch.setattr(common, "COLOR_MODE", "grayscale")
    gray = common.read_image(path, (8, 6))  # to RGB again: the model takes 3 channels
    assert gray.shape == (8, 6, 3)
    assert len(set(gray[0, 0].tolist())) == 1
    monkeypatch.setattr(common, "INPUT_SHAPE", (8, 6, 1))
    assert common.read_image(path, (8, 6)).shape == (8, 6, 1)


@pytest.mark.usefixtures("folder_constants")
def test_read_image_of_a_damaged_file_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(common.DataError, match=r"broken\.png cannot be read as an image"):
        common.read_image(path, (8, 8))


@pytest.mark.usefixtures("folder_constants")
def test_check_images_names_a_damaged_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = [str(write_png(tmp_path / f"{index}.png")) for index in range(3)]
    pixels = (np.zeros((2, 8, 8, 3), dtype="uint8"), np.array([0, 1]))
    common.check_images({"train": (np.array(good), np.array([0, 1, 0])), "test": pixels})
    assert "checked 3 images" in capsys.readouterr().out
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype="uint8")
    Image.fromarray(noise).save(tmp_path / "noise.png")
    truncated = tmp_path / "truncated.png"  # cut off halfway through its pixels
    truncated.write_bytes((tmp_path / "noise.png").read_bytes()[:6000])
    files = np.array([*good, str(truncated)])
    with pytest.raises(common.DataError, match=r"truncated\.png cannot be read as an image"):
        common.check_images({"train": (files, np.zeros(4, dtype=int))})
    assert common.image_problem(good[0]) is None
    assert common.image_problem(truncated)


# --- Where a run writes


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    base = tmp_path / "runs" / "spec_keras"
    monkeypatch.setattr(common, "DEFAULT_OUTPUT_DIR", str(base))
    monkeypatch.setattr(common, "RUN_FILES", ["metrics.json", "resume", "tensorboard"])
    monkeypatch.setattr(common, "RESUME", "resume")
    return base


def arguments(**given: object) -> argparse.Namespace:
    values: dict[str, object] = {"output_dir": None, "resume": False, "overwrite": False}
    return argparse.Namespace(**{**values, **given})


def a_run(folder: Path, *, resume: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text("{}")
    if resume:
        (folder / "resume").write_text("")
    return folder


def test_numbered() -> None:
    names = common.numbered(Path("runs/spec"))
    assert [next(names).as_posix() for _ in range(3)] == ["runs/spec", "runs/spec2", "runs/spec3"]


def test_holds_run_and_clear_run(runs: Path) -> None:
    assert not common.holds_run(runs)
    a_run(runs)
    (runs / "tensorboard").mkdir()
    (runs / "mine.txt").write_text("kept")
    assert common.holds_run(runs)
    common.clear_run(runs)
    assert sorted(p.name for p in runs.iterdir()) == ["mine.txt"]
    assert not common.holds_run(runs)


def test_a_new_run_numbers_past_the_earlier_ones(
    runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert common.run_folder(arguments()) == runs
    a_run(runs)
    a_run(runs.with_name("spec_keras2"))
    assert common.run_folder(arguments()) == runs.with_name("spec_keras3")
    assert "holds an earlier run: this one writes to" in capsys.readouterr().out


def test_a_given_or_distributed_folder_holding_a_run_is_refused(runs: Path, tmp_path: Path) -> None:
    given = a_run(tmp_path / "mine")
    with pytest.raises(common.DataError, match="mine holds an earlier run: pass --resume"):
        common.run_folder(arguments(output_dir=str(given)))
    a_run(runs)
    with pytest.raises(common.DataError, match="holds an earlier run"):
        common.run_folder(arguments(), distributed=True)


def test_overwrite_replaces_only_the_run(runs: Path) -> None:
    a_run(runs)
    (runs / "notes.txt").write_text("")
    assert common.run_folder(arguments(overwrite=True)) == runs
    assert [p.name for p in runs.iterdir()] == ["notes.txt"]
    with pytest.raises(common.DataError, match="pick one"):
        common.run_folder(arguments(overwrite=True, resume=True))


def test_resume_carries_on_the_latest_run(runs: Path, tmp_path: Path) -> None:
    assert common.run_folder(arguments(resume=True)) == runs  # nothing to resume yet
    first = a_run(runs)
    second = a_run(runs.with_name("spec_keras2"))
    a_run(runs.with_name("spec_keras3"), resume=False)  # failed before its first epoch
    os.utime(first / "resume", (1_000, 1_000))
    os.utime(second / "resume", (2_000, 2_000))
    assert common.run_folder(arguments(resume=True)) == second
    os.utime(first / "resume", (3_000, 3_000))
    assert common.run_folder(arguments(resume=True)) == first
    mine = tmp_path / "mine"
    assert common.run_folder(arguments(resume=True, output_dir=str(mine))) == mine


def test_discard_unstarted(runs: Path) -> None:
    unstarted = a_run(runs, resume=False)
    common.discard_unstarted(unstarted)
    assert not unstarted.exists()
    started = a_run(runs)
    common.discard_unstarted(started)
    assert started.exists()


def test_interrupted_says_how_to_carry_on(runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    started = a_run(runs)
    with pytest.raises(SystemExit) as exit_:
        common.interrupted(common.Interrupted("head", 3), started, created=True)
    assert exit_.value.code == 130
    assert capsys.readouterr().err == "interrupted in phase head, epoch 3: rerun with --resume\n"
    assert started.exists()
    unstarted = a_run(runs.with_name("spec_keras2"), resume=False)
    with pytest.raises(SystemExit):
        common.interrupted(KeyboardInterrupt(), unstarted, created=True)
    assert "before training started" in capsys.readouterr().err
    assert not unstarted.exists()


# --- Weight files


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "weights.safetensors"
    tensors = {"conv.kernel": np.zeros((3, 3, 1, 4), "float32"), "old_head.bias": np.zeros(5)}
    save_file(tensors, str(path))
    return path


def test_weights_to_load_notes_what_is_new_and_what_is_left_out(
    weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    needed = {"conv.kernel": (3, 3, 1, 4), "head.kernel": (4, 10), "head.bias": (10,)}
    assert common.weights_to_load(weights, needed) == ["conv.kernel"]
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"--init-weights: head.bias and 1 more not in {weights}: initialised afresh",
        f"--init-weights: old_head.bias of {weights} fit no layer: left out",
    ]


def test_weights_to_load_refuses_what_does_not_fit(weights: Path, tmp_path: Path) -> None:
    with pytest.raises(common.DataError, match=r"conv.kernel is \(3, 3, 1, 4\), the model's"):
        common.weights_to_load(weights, {"conv.kernel": (3, 3, 1, 8)})
    with pytest.raises(common.DataError, match="holds none of the model's tensors"):
        common.weights_to_load(weights, {"other": (1,)})
    with pytest.raises(common.DataError, match="--init-weights: no file"):
        common.weights_to_load(tmp_path / "missing.safetensors", {})
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(common.DataError, match="is not a safetensors file"):
        common.weights_to_load(junk, {})


def test_some() -> None:
    assert common.some(["a"]) == "a"
    assert common.some(["a", "b", "c"]) == "a and 2 more"


def test_saved_readable_writes_whole_with_the_umask_mode(tmp_path: Path) -> None:
    target = tmp_path / "weights.safetensors"

    def save(partial: Path) -> None:
        assert partial.name == ".weights.safetensors.partial"
        partial.write_bytes(b"data")
        partial.chmod(0o600)

    mask = os.umask(0o022)
    try:
        common.saved_readable(save, target)
    finally:
        os.umask(mask)
    assert target.read_bytes() == b"data"
    assert target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["weights.safetensors"]


# --- The command line and loading the libraries


def test_parse_args_defaults_are_the_specs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "parser", argparse.ArgumentParser())  # the <PARSER> slot's
    monkeypatch.setattr(common, "BATCH_SIZE", 64)
    monkeypatch.setattr(common, "MLFLOW", "runs/mlflow")
    args = common.parse_args(["--epochs", "2", "--subset", "100"])
    assert (args.epochs, args.subset, args.batch_size, args.seed) == (2, 100, 64, common.SEED)
    assert args.mlflow == "runs/mlflow" and not args.resume and not args.overwrite
    monkeypatch.setattr(common, "parser", argparse.ArgumentParser())
    assert common.parse_args(["--no-mlflow", "--no-deterministic"]).mlflow is None


def test_native_stderr_is_shown_only_if_loading_fails(capfd: pytest.CaptureFixture[str]) -> None:
    with common.native_stderr_held_back():
        os.write(2, b"a note from native code\n")
    assert "a note" not in capfd.readouterr().err
    with pytest.raises(ImportError), common.native_stderr_held_back():
        os.write(2, b"why it failed\n")
        raise ImportError("no library")
    assert "why it failed" in capfd.readouterr().err


# --- MLflow and plots


def test_without_an_mlflow_store_there_is_no_run() -> None:
    with common.mlflow_run(None, "keras", arguments()) as run:
        assert run is None


def test_mlflow_log_records_epochs_and_the_test(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(common, "PHASES", ["head", "finetune"])
    monkeypatch.setattr(common, "ARTIFACTS", ["metrics.json", "curves.png"])
    calls: list[tuple[str, object, object]] = []
    mlflow = SimpleNamespace(
        log_metrics=lambda values, step=None: calls.append(("metrics", values, step)),
        log_artifact=lambda path: calls.append(("artifact", Path(path).name, None)),
    )
    log = common.MLflowLog(mlflow)
    log.epoch({"phase": "finetune", "epoch": 7, "loss": np.float32(0.5)})
    (tmp_path / "metrics.json").write_text("{}")
    log.finish({"accuracy": 0.9, "confusion": [[1]]}, tmp_path)
    assert calls == [
        ("metrics", {"loss": 0.5, "phase": 2}, 7),
        ("metrics", {"test_accuracy": 0.9}, None),
        ("artifact", "metrics.json", None),
    ]


def test_plots_are_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "CLASS_NAMES", ["a", "b"])
    monkeypatch.setattr(common, "THRESHOLD", 0.5)
    history = [
        {"phase": "head", "epoch": 1, "loss": 1.0, "accuracy": 0.5, "val_loss": 1.1},
        {"phase": "tune", "epoch": 2, "loss": 0.5, "accuracy": 0.8, "val_loss": 0.7},
    ]
    common.plot_curves(history, tmp_path / "curves.png", "spec")
    common.plot_confusion_matrix(np.array([[3, 1], [0, 4]]), tmp_path / "confusion.png")
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    common.plot_roc(np.array([0, 0, 1, 1]), scores, tmp_path / "roc.png")
    for name in ("curves.png", "confusion.png", "roc.png"):
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and image.size[0] > 100
